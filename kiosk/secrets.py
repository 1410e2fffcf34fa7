"""The device secret: 32 random bytes kept outside the database.

Every key the kiosk uses is derived from it with HKDF-SHA256 under its own
label: the PIN pepper, the template and TOTP encryption keys, the audit
pseudonym key. Stealing the database alone therefore yields neither PINs (a
4–8 digit PIN hashed without the pepper is trivial to brute-force; with it, the
attacker needs the secret too) nor biometric templates.

Where it lives: on a device, systemd passes it with
``LoadCredential=device-secret:/etc/kiosk/credentials/device-secret`` and the
kiosk reads ``$CREDENTIALS_DIRECTORY/device-secret``; otherwise
``<state_dir>/device-secret`` (mode 0600). ``kiosk secret init`` creates it,
and refuses to replace one that a database already depends on.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kiosk.errors import KioskError

SECRET_BYTES = 32
CREDENTIAL_NAME = "device-secret"


class SecretError(KioskError, RuntimeError):
    """The device secret is missing, unreadable or malformed."""

    exit_code = 77  # EX_NOPERM


def default_secret_path(state_dir: Path) -> Path:
    """``$CREDENTIALS_DIRECTORY/device-secret`` under systemd, else in the state directory."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        return Path(creds) / CREDENTIAL_NAME
    return state_dir / CREDENTIAL_NAME


@dataclass(frozen=True)
class DeviceKeys:
    """Keys derived from the device secret, one per purpose."""

    pin_pepper: bytes
    template_key: bytes
    totp_key: bytes
    pseudonym_key: bytes

    @classmethod
    def derive(cls, secret: bytes) -> DeviceKeys:
        def hkdf(label: str) -> bytes:
            return HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None, info=f"kiosk {label} v1".encode()
            ).derive(secret)

        return cls(
            pin_pepper=hkdf("pin pepper"),
            template_key=hkdf("template key"),
            totp_key=hkdf("totp key"),
            pseudonym_key=hkdf("audit pseudonym"),
        )

    def __repr__(self) -> str:  # never print key material
        return "DeviceKeys(<redacted>)"


def load_secret(path: Path) -> DeviceKeys:
    """Read the secret at ``path`` and derive the keys; fail closed with what to do."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise SecretError(
            f"the device secret {path} is missing: on a new device run `kiosk secret init`; "
            "on a device with enrolled users restore the secret from its backup "
            "(without it no PIN or face template can be checked)"
        ) from exc
    except PermissionError as exc:
        raise SecretError(
            f"cannot read the device secret {path}: permission denied "
            "(run as the kiosk user, or pass it with systemd LoadCredential=)"
        ) from exc
    if len(data) != SECRET_BYTES:
        raise SecretError(
            f"the device secret {path} is {len(data)} bytes, expected {SECRET_BYTES}: "
            "it is damaged; restore it from its backup"
        )
    return DeviceKeys.derive(data)


def create_secret(path: Path) -> None:
    """Write a new random secret to ``path`` (0600). Refuses to overwrite an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise SecretError(
            f"{path} already exists; replacing it would make every PIN and template unreadable"
        ) from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_bytes(SECRET_BYTES))
        fh.flush()
        os.fsync(fh.fileno())
