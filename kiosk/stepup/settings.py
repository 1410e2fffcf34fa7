"""Settings of step-up verification (``[stepup]`` in the TOML file, ``KIOSK_STEPUP__*``)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_SOCKET = Path("/run/kiosk/stepup.sock")
KEY_FILE_NAME = "stepup-ed25519.pem"
TOKEN_FILE_NAME = "stepup-token"  # noqa: S105 - a file name
#: The largest ``max_age_s`` a request may carry, whatever the settings say.
MAX_AGE_CEILING_S = 3600


class StepUpSettings(BaseModel):
    """The step-up API: applications on the terminal ask for a fresh verification."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        False,
        title="Step-up enabled",
        description="Serve the step-up API from the kiosk daemon.",
    )
    socket_path: Path | None = Field(
        DEFAULT_SOCKET,
        title="Socket path",
        description=(
            "Unix socket the API listens on (systemd RuntimeDirectory=kiosk creates /run/kiosk). "
            "A client is let in by its uid (SO_PEERCRED), see allowed_uids. Unset: no socket."
        ),
    )
    socket_mode: int = Field(
        0o666,
        ge=0,
        le=0o777,
        title="Socket mode",
        description=(
            "File mode of the socket. Access is decided by the peer's uid, which the kernel "
            "reports and a client cannot forge; narrow this (e.g. 0o660 with the clients in the "
            "kiosk group) for defence in depth."
        ),
    )
    allowed_uids: list[int] = Field(
        default_factory=list,
        title="Allowed uids",
        description="Uids of the applications that may ask for a step-up on the socket.",
    )
    host: str = Field(
        "127.0.0.1",
        title="Loopback host",
        description="Loopback address of the token-protected TCP listener (never another host).",
    )
    port: int | None = Field(
        None,
        ge=0,
        le=65535,
        title="Loopback port",
        description=(
            "TCP port of the loopback listener; clients send 'Authorization: Bearer <token>' "
            "with the token of token_file. Unset: no TCP listener. 0: any free port (tests)."
        ),
    )
    token_file: Path | None = Field(
        None,
        title="Token file",
        description=(
            "Bearer token of loopback clients (one line, at least 32 characters, not "
            "world-readable); defaults to <state_dir>/stepup-token."
        ),
    )
    key_file: Path | None = Field(
        None,
        title="Signing key file",
        description=(
            "The device's Ed25519 signing key (PKCS#8 PEM, mode 0600, made by "
            "`kiosk stepup init`); defaults to <state_dir>/stepup-ed25519.pem."
        ),
    )
    audience: str = Field(
        "kiosk-stepup",
        min_length=1,
        max_length=256,
        title="Audience",
        description="The 'aud' claim: the identifier of the servers that accept the assertions.",
    )
    lifetime_s: int = Field(
        60,
        ge=5,
        le=600,
        title="Assertion lifetime",
        description="Seconds from issue to expiry of an assertion (keep it short).",
    )
    max_age_limit_s: int = Field(
        MAX_AGE_CEILING_S,
        ge=0,
        le=MAX_AGE_CEILING_S,
        title="Largest accepted max_age",
        description=(
            "Requests asking to accept a verification older than this are refused as malformed "
            "(0 = every request needs a fresh face check)."
        ),
    )
    verify_timeout_s: float = Field(
        30.0,
        ge=3,
        le=300,
        title="Verification timeout",
        description="Seconds the face check may take before the request is refused.",
    )
    rate_limit_per_minute: int = Field(
        5,
        ge=1,
        le=600,
        title="Rate limit",
        description="Requests one client (a uid, or the loopback token) may make per minute.",
    )
    max_request_bytes: int = Field(
        4096,
        ge=256,
        le=65536,
        title="Request size limit",
        description="Largest request body in bytes; larger requests get 413.",
    )

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            if value != "localhost":
                raise ValueError(f"{value!r} is not a loopback address") from None
            return "127.0.0.1"
        if not address.is_loopback:
            raise ValueError(f"{value} is not a loopback address; the API is local only")
        return value

    @model_validator(mode="after")
    def _reachable(self) -> StepUpSettings:
        if self.enabled and self.socket_path is None and self.port is None:
            raise ValueError("step-up is enabled but neither socket_path nor port is set")
        return self


def key_path(settings: StepUpSettings, state_dir: Path) -> Path:
    """The signing key file: ``key_file``, else ``<state_dir>/stepup-ed25519.pem``."""
    return settings.key_file or state_dir / KEY_FILE_NAME


def token_path(settings: StepUpSettings, state_dir: Path) -> Path:
    """The loopback token file: ``token_file``, else ``<state_dir>/stepup-token``."""
    return settings.token_file or state_dir / TOKEN_FILE_NAME
