"""Settings of the kiosk, one pydantic model per concern.

Values come, highest priority first, from: keyword arguments (tests), the
environment (``KIOSK_*``; nested fields with ``__``, e.g.
``KIOSK_VISION__THREADS=4``), secrets files in ``$CREDENTIALS_DIRECTORY``
(systemd ``LoadCredential=``), a TOML file (``$KIOSK_CONFIG``, else
``/etc/kiosk/kiosk.toml`` when it exists), and the defaults below.

Paths: the state directory is ``$KIOSK_STATE_DIR``, else systemd's
``$STATE_DIRECTORY``, else ``/var/lib/kiosk`` when it exists (a provisioned
device), else ``$XDG_STATE_HOME/kiosk`` (``~/.local/state/kiosk``) for a
developer. Models live in ``<state>/models`` unless ``KIOSK_MODELS_DIR`` says
otherwise; downloaded registry archives are cached in ``$XDG_CACHE_HOME/kiosk``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from kiosk.devices.settings import DeviceIOSettings
from kiosk.errors import ConfigError
from kiosk.stepup.settings import StepUpSettings

DEVICE_STATE_DIR = Path("/var/lib/kiosk")
DEFAULT_CONFIG_FILE = Path("/etc/kiosk/kiosk.toml")


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def default_state_dir() -> Path:
    """Where the kiosk keeps its state when nothing else is configured."""
    systemd_dir = os.environ.get("STATE_DIRECTORY")
    if systemd_dir:
        return Path(systemd_dir.split(":")[0])
    if DEVICE_STATE_DIR.is_dir():
        return DEVICE_STATE_DIR
    return _xdg("XDG_STATE_HOME", ".local/state") / "kiosk"


def default_cache_dir() -> Path:
    """Where downloaded registry archives are cached."""
    return _xdg("XDG_CACHE_HOME", ".cache") / "kiosk"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VisionSettings(_Section):
    """How models run and how their outputs are read."""

    threads: int = Field(
        2,
        ge=1,
        le=16,
        title="Inference threads",
        description="Threads LiteRT (XNNPACK) may use per interpreter; a Pi 4/5 has 4 cores.",
    )
    detection_min_score: float = Field(
        0.6,
        gt=0.0,
        lt=1.0,
        title="Detection score",
        description="BlazeFace score below which a candidate is not a face.",
    )
    detection_iou: float = Field(
        0.3,
        gt=0.0,
        lt=1.0,
        title="NMS overlap",
        description="Boxes overlapping more than this are blended into one face (weighted NMS).",
    )
    detection_grid: int = Field(
        0,
        ge=0,
        le=6,
        title="Detection tiles",
        description=(
            "Besides the whole frame, look for faces in grid×grid overlapping tiles, so faces "
            "far from the camera are found too. 0 = by frame size (one tile row per 480 px of "
            "the long side, at most 4: a 640×480 camera gets 2); 1 = whole frame only."
        ),
    )
    mesh_min_presence: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        title="Face presence",
        description="Face Mesh presence score below which a tracked face counts as lost.",
    )
    flip_embedding: bool = Field(
        True,
        title="Mirror averaging",
        description=(
            "Embed the aligned face and its mirror image in one batch and average them; the "
            "MobileFaceNet file runs a batch of two anyway, so this costs nothing extra."
        ),
    )


class QualitySettings(_Section):
    """Gates a face must pass before it is used for enrolment or verification."""

    min_face_px: int = Field(
        64,
        ge=16,
        le=1024,
        title="Minimum face size",
        description="Smallest face box side in pixels; smaller faces are too far from the camera.",
    )
    min_brightness: float = Field(
        40.0,
        ge=0,
        le=255,
        title="Minimum brightness",
        description="Mean grey level (0–255) of the face below which the frame is too dark.",
    )
    max_dark_fraction: float = Field(
        0.6,
        gt=0,
        le=1,
        title="Dark-frame fraction",
        description="Fraction of very dark pixels in the face above which the frame is rejected.",
    )
    min_sharpness: float = Field(
        12.0,
        ge=0,
        title="Minimum sharpness",
        description="Laplacian variance of the aligned 112×112 face below which it is blurred.",
    )
    max_yaw_deg: float = Field(
        30.0,
        gt=0,
        le=90,
        title="Maximum yaw",
        description="Head turn (degrees) beyond which the face is not frontal enough.",
    )
    max_pitch_deg: float = Field(
        25.0,
        gt=0,
        le=90,
        title="Maximum pitch",
        description="Head tilt up/down (degrees) beyond which the face is not frontal enough.",
    )


class VerificationSettings(_Section):
    """1:1 comparison of a live face with enrolled templates."""

    threshold: float = Field(
        0.55,
        gt=-1.0,
        lt=1.0,
        title="Match threshold",
        description=(
            "Cosine similarity at or above which two faces are the same person. The default is "
            "set from the evaluation in the README; change it only with a new evaluation."
        ),
    )


class AuthSettings(_Section):
    """PINs, lockout, fallback and enrolment."""

    max_failures: int = Field(
        3,
        ge=1,
        le=100,
        title="Failures before lockout",
        description="Consecutive failures that lock a user out (NIST SP 800-63B: at most 100).",
    )
    lockout_minutes: float = Field(
        30.0,
        ge=1,
        le=24 * 60,
        title="Lockout duration",
        description="Minutes a locked-out user must wait (an administrator can unlock sooner).",
    )
    attempt_timeout_s: float = Field(
        20.0,
        ge=3,
        le=300,
        title="Attempt timeout",
        description="Seconds from an accepted PIN to a face decision before the attempt fails.",
    )
    pin_kdf_memory_kib: int = Field(
        65536,
        ge=1024,
        le=1 << 21,
        title="PIN hash memory",
        description="argon2id memory cost in KiB for new PIN hashes (64 MiB: ~0.3 s on a Pi 4).",
    )
    pin_kdf_time_cost: int = Field(
        3, ge=1, le=20, title="PIN hash passes", description="argon2id passes over the memory."
    )
    reenrol_days: int = Field(
        180,
        ge=1,
        le=3650,
        title="Re-enrolment age",
        description="Enrolments older than this are flagged for re-enrolment (faces change).",
    )
    secret_file: Path | None = Field(
        None,
        title="Device secret file",
        description=(
            "Defaults to $CREDENTIALS_DIRECTORY/device-secret under systemd, else "
            "<state_dir>/device-secret."
        ),
    )


class DeviceSettings(_Section):
    """Who this device is in the audit trail."""

    device_id: str = Field(
        default_factory=lambda: socket.gethostname() or "kiosk",
        title="Device id",
        description="Stable id of this device in audit events (defaults to the hostname).",
    )
    site: str = Field("default", title="Site", description="Site name in audit events.")


ChallengeName = Literal["blink", "turn_left", "turn_right", "look_up", "open_mouth"]
# Open mouth is available but not drawn by default: no real clip in the evaluation data
# shows a mouth opening, so it is not proven on a real face yet.
DEFAULT_CHALLENGES: tuple[ChallengeName, ...] = ("blink", "turn_left", "turn_right", "look_up")


class LivenessSettings(_Section):
    """The liveness step after the PIN."""

    mode: Literal["challenge", "continuity"] = Field(
        "challenge",
        title="Liveness mode",
        description=(
            "'challenge': random blink / turn / look-up / mouth challenges with photo and "
            "replay defences; 'continuity': the same tracked face only (no attack defence; "
            "for bench tests of the flow, never for a site)."
        ),
    )
    challenges: int = Field(
        2,
        ge=1,
        le=3,
        title="Challenges per attempt",
        description="How many different challenges each attempt draws.",
    )
    kinds: list[ChallengeName] = Field(
        default_factory=lambda: list(DEFAULT_CHALLENGES),
        min_length=2,
        title="Challenge kinds",
        description="The kinds to draw from.",
    )
    window_s: float = Field(
        6.0, ge=2, le=20, title="Challenge window", description="Seconds to answer one challenge."
    )
    turn_deg: float = Field(
        18.0, ge=10, le=40, title="Turn angle", description="Head turn (yaw) a turn needs."
    )
    pitch_deg: float = Field(
        12.0, ge=8, le=40, title="Look-up angle", description="Head pitch a look-up needs."
    )
    depth_required: bool = Field(
        False,
        title="Depth required",
        description="Fail attempts that bring no depth frame (set when a depth sensor is fitted).",
    )
    passive_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        title="Passive model threshold",
        description=(
            "Fail attempts whose mean FaceAntiSpoofing score exceeds this; unset (off) by "
            "default — see `kiosk eval liveness` for how it scores here."
        ),
    )


class SyncSettings(_Section):
    """The device's MQTT link to the centre (audit outbox → broker)."""

    enabled: bool = Field(
        False,
        title="Sync enabled",
        description="Publish the audit outbox to the broker from the kiosk daemon.",
    )
    host: str = Field("localhost", title="Broker host", description="MQTT broker host name.")
    port: int = Field(1883, ge=1, le=65535, title="Broker port", description="8883 with TLS.")
    topic_prefix: str = Field(
        "kiosk",
        title="Topic prefix",
        description="Events go to <prefix>/<site>/<device>/audit, availability to …/status.",
    )
    ca_file: Path | None = Field(None, title="CA file", description="CA bundle; enables TLS.")
    cert_file: Path | None = Field(
        None, title="Client certificate", description="PEM client certificate for mutual TLS."
    )
    key_file: Path | None = Field(
        None, title="Client key", description="PEM private key of the client certificate."
    )
    username: str | None = Field(None, title="User name", description="MQTT user name, if any.")
    password_file: Path | None = Field(
        None,
        title="Password file",
        description="File holding the MQTT password (never put the password in the config).",
    )
    keepalive_s: int = Field(30, ge=5, le=3600, title="Keep-alive", description="Seconds.")
    session_expiry_s: int = Field(
        7 * 86400,
        ge=0,
        title="Session expiry",
        description="How long the broker keeps the persistent session while the device is away.",
    )
    max_inflight: int = Field(
        100,
        ge=1,
        le=65535,
        title="In-flight window",
        description="Unacknowledged QoS 1 messages at most at once.",
    )
    health_interval_s: float = Field(
        60.0, gt=0, title="Health interval", description="Seconds between health reports."
    )
    reconnect_min_s: int = Field(
        1,
        ge=1,
        le=300,
        title="First reconnect delay",
        description="Seconds before the first reconnect attempt; doubles on each failure.",
    )
    reconnect_max_s: int = Field(
        60,
        ge=1,
        le=3600,
        title="Longest reconnect delay",
        description="The reconnect delay stops doubling here.",
    )
    poll_interval_s: float = Field(
        1.0,
        gt=0,
        le=60,
        title="Outbox poll interval",
        description=(
            "Seconds between looks at the outbox when it is empty (the daemon also wakes the "
            "publisher when it writes events)."
        ),
    )
    confirm_grace_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        title="Receipt grace",
        description=(
            "The centre confirms stored events on <prefix>/<site>/<device>/receipt. An event the "
            "broker acknowledged but the centre never confirmed is sent again once a later event "
            "has been confirmed this many seconds ago (a broker that crashed after its PUBACK "
            "lost it). 0 trusts the PUBACK alone."
        ),
    )
    require_subscriber: bool = Field(
        True,
        title="Require a subscriber",
        description=(
            "Treat the broker's 'no matching subscribers' PUBACK (0x10) as not delivered: keep "
            "the event and retry later, so nothing is dropped while no ingest has subscribed. "
            "Turn off only for a broker that consumes audit messages without a subscription."
        ),
    )


class CentreSettings(_Section):
    """The central ingest service (broker → database)."""

    database_url: str | None = Field(
        None,
        title="Database URL",
        description=(
            "sqlite:///path or postgresql://…; defaults to SQLite at <state_dir>/centre.db."
        ),
    )
    share_group: str = Field(
        "ingest",
        title="Shared-subscription group",
        description="Workers in one group split the load ($share/<group>/…).",
    )
    alert_command: str | None = Field(
        None,
        title="Alert command",
        description="Run for each lockout alert with the event JSON on stdin.",
    )
    alert_topic: str | None = Field(
        None, title="Alert topic", description="Also publish each lockout alert to this topic."
    )
    client_id: str | None = Field(
        None,
        title="Ingest client id",
        description=(
            "MQTT client id of this ingest worker; stable across restarts, because the broker "
            "keeps the worker's queued messages under it. Defaults to kiosk-ingest-<hostname>; "
            "give each worker on one host its own."
        ),
    )
    batch_size: int = Field(
        500,
        ge=1,
        le=10000,
        title="Batch size",
        description="Events written (and then acknowledged to the broker) per transaction.",
    )
    batch_wait_s: float = Field(
        0.05,
        gt=0,
        le=10,
        title="Batch wait",
        description="Longest wait for a batch to fill before what has arrived is written.",
    )
    max_payload_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        title="Payload limit",
        description="Larger payloads are dead-lettered (a kiosk event is about 1 KiB).",
    )
    dead_letter_max_bytes: int = Field(
        64 * 1024,
        ge=0,
        le=16 * 1024 * 1024,
        title="Dead-letter bytes kept",
        description="At most this many bytes of a rejected payload are kept with its reason.",
    )
    alert_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        title="Alert command timeout",
        description="Seconds the alert command may run before it is killed.",
    )


class CameraSettings(_Section):
    """Where frames come from."""

    source: str = Field(
        "auto",
        title="Frame source",
        description=(
            "'auto' (picamera2, then /dev/video0, then the replayed demo), 'picamera2', "
            "'v4l2:/dev/videoN', or a path to an image, a folder of images or a video file."
        ),
    )
    width: int = Field(640, ge=64, le=4096, title="Width", description="Requested frame width.")
    height: int = Field(480, ge=64, le=4096, title="Height", description="Requested frame height.")
    fps: float = Field(15.0, gt=0, le=120, title="Frame rate", description="Frames per second.")
    loop: bool = Field(
        True, title="Loop replay", description="Start a replayed source again at its end."
    )


LockActionName = Literal["relay", "loginctl", "publish"]


def _default_lock_actions() -> list[LockActionName]:
    return ["relay"]


class ScreenSettings(_Section):
    """The kiosk screen: a page served on loopback, shown by Chromium in kiosk mode."""

    enabled: bool = Field(
        True, title="Screen enabled", description="Serve the screen page from the daemon."
    )
    host: str = Field(
        "127.0.0.1",
        title="Host",
        description="Loopback address the page is served on (never another interface).",
    )
    port: int = Field(
        8321, ge=0, le=65535, title="Port", description="TCP port of the page (0: any, tests)."
    )
    preview_fps: float = Field(
        2.0,
        ge=0,
        le=10,
        title="Preview rate",
        description="Camera preview frames per second on the screen (0: no preview).",
    )
    preview_width: int = Field(
        320, ge=80, le=1280, title="Preview width", description="Preview width in pixels."
    )
    result_hold_s: float = Field(
        4.0,
        gt=0,
        le=60,
        title="Result hold",
        description="Seconds a result stays on the screen before it returns to the PIN pad.",
    )
    lockout_hold_s: float = Field(
        20.0,
        gt=0,
        le=600,
        title="Lockout hold",
        description="Seconds the lockout countdown stays up (the terminal stays usable by others).",
    )

    @model_validator(mode="after")
    def _loopback_only(self) -> ScreenSettings:
        try:
            loopback = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            loopback = self.host == "localhost"
        if not loopback:
            raise ValueError(f"screen.host must be a loopback address, not {self.host!r}")
        return self


class PresenceSettings(_Section):
    """Continuous presence after a grant (see kiosk.auth.session)."""

    enabled: bool = Field(
        True, title="Presence checks", description="Keep checking the signed-in user is there."
    )
    interval_s: float = Field(
        0.5, ge=0.05, le=60, title="Check interval", description="Seconds between checks."
    )
    absent_s: float = Field(
        10.0,
        ge=1,
        le=3600,
        title="Absence limit",
        description="Lock when no face of the user has been seen for this long.",
    )
    mismatch_checks: int = Field(
        3,
        ge=1,
        le=100,
        title="Mismatch checks",
        description="Lock after this many checks in a row showing only someone else.",
    )
    lock_on_onlooker: bool = Field(
        False,
        title="Lock on onlooker",
        description="Lock when a second face looks on (policy; off by default).",
    )
    onlooker_checks: int = Field(
        4, ge=1, le=100, title="Onlooker checks", description="Checks in a row before it locks."
    )
    max_session_h: float = Field(
        8.0, gt=0, le=24, title="Session limit", description="Hours before a session locks."
    )
    lock_actions: list[LockActionName] = Field(
        default_factory=_default_lock_actions,
        title="Lock actions",
        description=(
            "What a lock does besides ending the screen's session (always) and auditing it "
            "(always): 'relay' releases a relay held for the session, 'loginctl' locks the "
            "desktop session (workstations), 'publish' sends the audit event to the centre at once."
        ),
    )


class DaemonSettings(_Section):
    """The daemon's own housekeeping."""

    frame_stale_s: float = Field(
        5.0,
        gt=0,
        le=300,
        title="Frame staleness",
        description="No new frame for this long: unhealthy (the systemd watchdog is not fed).",
    )
    checkpoint_s: float = Field(
        60.0,
        ge=1,
        le=3600,
        title="Lockout checkpoint",
        description="Seconds between re-recordings of running lockouts' remainders.",
    )
    camera_retry_s: float = Field(
        2.0, gt=0, le=60, title="Camera retry", description="Seconds between reopen attempts."
    )


class Settings(BaseSettings):
    """All settings of one kiosk process."""

    model_config = SettingsConfigDict(
        env_prefix="KIOSK_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    state_dir: Path = Field(
        default_factory=default_state_dir,
        title="State directory",
        description="Database, models and keys live here (/var/lib/kiosk on a device).",
    )
    models_dir: Path | None = Field(
        None,
        title="Models directory",
        description="Where verified model files are installed; defaults to <state_dir>/models.",
    )
    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        title="Download cache",
        description="Registry archives downloaded by 'kiosk models fetch' are kept here.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", title="Log level", description="Logging threshold of the kiosk process."
    )
    vision: VisionSettings = Field(default_factory=VisionSettings, title="Vision")
    quality: QualitySettings = Field(default_factory=QualitySettings, title="Quality")
    verification: VerificationSettings = Field(
        default_factory=VerificationSettings, title="Verification"
    )
    camera: CameraSettings = Field(default_factory=CameraSettings, title="Camera")
    auth: AuthSettings = Field(default_factory=AuthSettings, title="Authentication")
    liveness: LivenessSettings = Field(default_factory=LivenessSettings, title="Liveness")
    device: DeviceSettings = Field(default_factory=DeviceSettings, title="Device")
    sync: SyncSettings = Field(default_factory=SyncSettings, title="Sync")
    centre: CentreSettings = Field(default_factory=CentreSettings, title="Centre")
    stepup: StepUpSettings = Field(default_factory=StepUpSettings, title="Step-up")
    screen: ScreenSettings = Field(default_factory=ScreenSettings, title="Screen")
    presence: PresenceSettings = Field(default_factory=PresenceSettings, title="Presence")
    daemon: DaemonSettings = Field(default_factory=DaemonSettings, title="Daemon")
    devices: DeviceIOSettings = Field(
        default_factory=DeviceIOSettings,
        title="Devices",
        description="GPIO relay, status LEDs, buzzer and keypad (all off by default).",
    )

    @model_validator(mode="after")
    def _resolve_models_dir(self) -> Settings:
        if self.models_dir is None:
            object.__setattr__(self, "models_dir", self.state_dir / "models")
        return self

    @property
    def database_path(self) -> Path:
        """The kiosk database."""
        return self.state_dir / "kiosk.db"

    @property
    def models_path(self) -> Path:
        """The resolved models directory."""
        assert self.models_dir is not None  # set by the validator  # noqa: S101
        return self.models_dir

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if os.environ.get("CREDENTIALS_DIRECTORY"):
            sources.append(file_secret_settings)
        toml_file = config_file_path()
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def config_file_path() -> Path | None:
    """The TOML file in use: ``$KIOSK_CONFIG``, else /etc/kiosk/kiosk.toml if present."""
    explicit = os.environ.get("KIOSK_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"KIOSK_CONFIG names {path}, which is not a readable file")
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning validation failures into one clear :class:`ConfigError`."""
    try:
        if os.environ.get("CREDENTIALS_DIRECTORY"):
            overrides.setdefault("_secrets_dir", os.environ["CREDENTIALS_DIRECTORY"])
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        where = config_file_path()
        source = (
            f" (config file {where}, environment KIOSK_*)" if where else " (environment KIOSK_*)"
        )
        raise ConfigError(f"invalid configuration{source}: {problems}") from exc
    except Exception as exc:  # malformed TOML and the like
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"cannot read the configuration: {exc}") from exc
