"""Composition root: the only module that wires camera → vision → auth → store.

The CLI and the daemon build their pieces here, so the rest of the package
stays testable in isolation: ``auth`` decides without I/O, ``store`` is the
only SQL, ``vision`` is pure compute on frames.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from kiosk import supply
from kiosk.auth import events
from kiosk.auth.clock import Clock, SystemClock
from kiosk.auth.crypto import KdfParams, PinHasher
from kiosk.auth.enrolment import EnrolmentCollector, FrameResult
from kiosk.auth.events import DeviceInfo
from kiosk.auth.flow import AuthFlow, FlowPolicy, Outcome, Phase
from kiosk.auth.liveness import LivenessChecker, TrackContinuity
from kiosk.auth.lockout import LockoutPolicy
from kiosk.auth.model import User
from kiosk.camera import FrameSource
from kiosk.config import Settings
from kiosk.errors import KioskError
from kiosk.secrets import default_secret_path, load_secret
from kiosk.store.db import Database
from kiosk.store.repository import ConsentRecord, SqliteRepository
from kiosk.vision import FacePipeline

log = logging.getLogger(__name__)

CONSENT_VERSION = "v1"


def consent_text() -> str:
    """The consent text a person agrees to before enrolment."""
    return resources.files("kiosk").joinpath(f"data/consent-{CONSENT_VERSION}.txt").read_text()


def secret_path(settings: Settings) -> Path:
    return settings.auth.secret_file or default_secret_path(settings.state_dir)


def model_versions() -> dict[str, str]:
    """Model identities for audit events: role → file@sha256-prefix."""
    try:
        artifacts = supply.load_manifest(supply.default_manifest_path())
    except KioskError:
        return {}
    return {a.role: f"{a.file}@{a.sha256[:12]}" for a in artifacts if a.required}


def embedding_model_id() -> str:
    return model_versions().get("embedding", "unknown")


def operator_name() -> str:
    """Who is running an administrative command (recorded in audit and consent)."""
    for var in ("SUDO_USER", "USER", "LOGNAME"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


@dataclass
class Services:
    """The opened database and what works on it."""

    settings: Settings
    database: Database
    repo: SqliteRepository
    hasher: PinHasher
    clock: Clock
    device: DeviceInfo

    def close(self) -> None:
        self.database.close()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_services(settings: Settings, *, clock: Clock | None = None) -> Services:
    """Load the device secret (failing closed), open and migrate the database."""
    keys = load_secret(secret_path(settings))
    database = Database(settings.database_path)
    params = KdfParams(
        memory_kib=settings.auth.pin_kdf_memory_kib, time_cost=settings.auth.pin_kdf_time_cost
    )
    device = DeviceInfo(
        device_id=settings.device.device_id,
        site=settings.device.site,
        model_versions=model_versions(),
    )
    return Services(
        settings=settings,
        database=database,
        repo=SqliteRepository(database, keys),
        hasher=PinHasher(keys.pin_pepper, params),
        clock=clock or SystemClock(),
        device=device,
    )


def build_liveness(settings: Settings, *, challenges: int | None = None) -> LivenessChecker:
    """The configured liveness checker (random challenges unless configured otherwise).

    ``challenges`` overrides how many are drawn (a step-up asks for one).
    """
    from kiosk.liveness.challenge import ChallengeLiveness, Kind, LivenessPolicy

    live = settings.liveness
    if live.mode == "continuity":
        log.warning("liveness mode 'continuity': no presentation-attack defence is active")
        return TrackContinuity()
    policy = LivenessPolicy(
        challenges=live.challenges if challenges is None else challenges,
        kinds=tuple(Kind(k) for k in live.kinds),
        window_s=live.window_s,
        turn_deg=live.turn_deg,
        pitch_deg=live.pitch_deg,
        depth_required=live.depth_required,
        passive_threshold=live.passive_threshold,
    )
    return ChallengeLiveness(policy)


def build_flow(services: Services, *, liveness: LivenessChecker | None = None) -> AuthFlow:
    auth = services.settings.auth
    policy = FlowPolicy(
        threshold=services.settings.verification.threshold,
        attempt_timeout_s=auth.attempt_timeout_s,
        lockout=LockoutPolicy(max_failures=auth.max_failures, lockout_s=auth.lockout_minutes * 60),
    )
    return AuthFlow(
        services.repo,
        services.hasher,
        services.clock,
        device=services.device,
        liveness=liveness or build_liveness(services.settings),
        policy=policy,
    )


def run_attempt(
    flow: AuthFlow,
    pipeline: FacePipeline,
    source: FrameSource,
    *,
    staff_no: str,
    pin: str,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> Outcome:
    """One sign-in: the PIN, then frames from ``source`` until the flow decides.

    A source that ends before a decision abandons the attempt (audited, not counted).
    """
    outcome = flow.enter_pin(staff_no, pin)
    if on_outcome:
        on_outcome(outcome)
    if outcome.phase is not Phase.FACE or not flow.wants_embedding:
        return outcome
    pipeline.reset()
    with source:
        for frame in source:
            obs = pipeline.track(frame.image, embed=flow.wants_embedding)
            outcome = flow.on_frame(obs)
            if on_outcome:
                on_outcome(outcome)
            if outcome.phase is not Phase.FACE:
                return outcome
    outcome = flow.tick()
    if outcome.phase is Phase.FACE:
        outcome = flow.abandon("the camera stopped before a decision")
    return outcome


@dataclass(frozen=True)
class EnrolResult:
    templates: int
    frames_seen: int


def enrol(
    services: Services,
    pipeline: FacePipeline,
    user: User,
    source: FrameSource,
    *,
    recorded_by: str,
    max_frames: int = 600,
    on_frame: Callable[[FrameResult], None] | None = None,
) -> EnrolResult:
    """Collect 3–5 templates of ``user`` from ``source`` and store them with the consent record.

    Raises :class:`KioskError` (nothing stored) when fewer than 3 usable frames came.
    """
    collector = EnrolmentCollector(threshold=services.settings.verification.threshold)
    seen = 0
    with source:
        for frame in source:
            seen += 1
            faces = pipeline.observe(frame.image)
            faces = [pipeline.embed(f) for f in faces] if len(faces) == 1 else faces
            result = collector.offer(faces)
            if on_frame:
                on_frame(result)
            if collector.done or seen >= max_frames:
                break
    if not collector.enough:
        raise KioskError(
            f"only {len(collector.templates)} usable frame(s) of {seen}: enrolment needs 3. "
            "Face the camera in good light, one person in view, and try again. Nothing was stored."
        )
    wall = services.clock.wall()
    text = consent_text()
    consent = ConsentRecord(
        text_version=CONSENT_VERSION,
        text_sha256=hashlib.sha256(text.encode()).hexdigest(),
        given_ms=int(wall * 1000),
        recorded_by=recorded_by,
    )
    event = events.account_change(
        wall=wall,
        device=services.device,
        user=user.ref(),
        activity_id=events.MFA_ENABLE,
        reason=f"face enrolled ({len(collector.templates)} templates, consent {CONSENT_VERSION})",
        actor=recorded_by,
        extra={"templates": len(collector.templates), "model": embedding_model_id()},
    )
    services.repo.replace_templates(
        user,
        collector.templates,
        model=embedding_model_id(),
        now_ms=int(wall * 1000),
        consent=consent,
        event=event,
    )
    return EnrolResult(templates=len(collector.templates), frames_seen=seen)
