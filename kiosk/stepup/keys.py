"""The device's Ed25519 signing key for step-up assertions, and its public forms.

The key is a random Ed25519 key made once per device (``kiosk stepup init``)
and kept as a PKCS#8 PEM file of mode 0600 — not derived from the device
secret. A derived key could never be rotated on its own: replacing the device
secret makes every PIN and face template unreadable. A separate file can be
replaced (the fleet then registers the new public key) and can be handed to a
separate process later without giving it the secret that keys the PINs.

Loading fails closed: a missing, unreadable, group/world-readable, malformed
or non-Ed25519 key file is a :class:`StepUpKeyError` saying what to do.
The fleet learns the public key from ``kiosk stepup pubkey`` (PEM and JWK);
the JWK's ``kid`` (its RFC 7638 thumbprint) is also in every assertion's
header, so a server holding many devices' keys picks the right one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kiosk.stepup.errors import StepUpKeyError


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def create_signing_key(path: Path) -> Ed25519PrivateKey:
    """Write a new Ed25519 key to ``path`` (0600). Refuses to replace an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise StepUpKeyError(
            f"{path} already exists; replacing it invalidates the public key the fleet trusts "
            "(delete it first if that is what you want, then register the new public key)"
        ) from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    return key


def _check_private_file(path: Path, what: str, *, group_ok: bool, missing: str) -> None:
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise StepUpKeyError(f"the {what} {path} is missing: {missing}") from exc
    except PermissionError as exc:
        raise StepUpKeyError(
            f"cannot read the {what} {path}: permission denied (run as the kiosk user)"
        ) from exc
    if not stat.S_ISREG(info.st_mode):
        raise StepUpKeyError(f"the {what} {path} is not a regular file")
    loose = stat.S_IRWXO if group_ok else stat.S_IRWXG | stat.S_IRWXO
    if info.st_mode & loose:
        wanted = "0640" if group_ok else "0600"
        raise StepUpKeyError(
            f"the {what} {path} has mode {stat.S_IMODE(info.st_mode):04o}: others could read it; "
            f"refusing to use it (chmod {wanted} {path}, and consider it leaked if it was shared)"
        )


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """Read the signing key; fail closed with what to do."""
    _check_private_file(
        path,
        "step-up signing key",
        group_ok=False,
        missing="on a new device run `kiosk stepup init` and register the public key it prints "
        "with the servers; on a provisioned device restore the key from its backup",
    )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StepUpKeyError(
            f"cannot read the step-up signing key {path}: {exc.strerror or exc}"
        ) from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise StepUpKeyError(
            f"the step-up signing key {path} is not an unencrypted PEM private key: it is "
            "damaged; restore it from its backup or make a new one and register its public key"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise StepUpKeyError(
            f"the step-up signing key {path} is a {type(key).__name__}, not an Ed25519 key"
        )
    return key


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as SubjectPublicKeyInfo PEM."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def key_id(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url) of the public key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    canonical = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}, separators=(",", ":"), sort_keys=True
    )
    return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())


def public_jwk(key: Ed25519PrivateKey | Ed25519PublicKey) -> dict[str, Any]:
    """The public key as a JWK (RFC 8037 OKP), with ``kid``, ``alg`` and ``use``."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64url(raw),
        "kid": key_id(public),
        "alg": "EdDSA",
        "use": "sig",
    }


MIN_TOKEN_CHARS = 32


def create_token_file(path: Path) -> None:
    """Write a new random bearer token (0640: the kiosk user and its group). Never replaces."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    except FileExistsError as exc:
        raise StepUpKeyError(
            f"{path} already exists; delete it first to issue a new token"
        ) from exc
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secrets.token_urlsafe(32) + "\n")


def load_token(path: Path) -> str:
    """The loopback bearer token; fails closed when missing, world-readable or too short."""
    _check_private_file(
        path,
        "step-up token file",
        group_ok=True,
        missing="run `kiosk stepup init --token` and give the token to the loopback clients",
    )
    try:
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise StepUpKeyError(f"cannot read the step-up token file {path}: {exc}") from exc
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise StepUpKeyError(
            f"the step-up token in {path} must be one word of at least {MIN_TOKEN_CHARS} "
            "characters (delete the file and run `kiosk stepup init` to make one)"
        )
    return token
