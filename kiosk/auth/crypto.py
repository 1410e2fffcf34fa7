"""PIN hashing and at-rest encryption: pure functions over keys and bytes.

PINs: argon2id over HMAC-SHA256(pepper, PIN) with a per-user random salt; the
pepper comes from the device secret, so the database alone does not allow an
offline guess. Comparison is constant-time (:func:`hmac.compare_digest`).

Templates and TOTP secrets: AES-256-GCM with a random 96-bit nonce; the
associated data binds a ciphertext to its row (user and purpose), so a blob
copied to another user's row does not decrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass

import numpy as np
from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kiosk.errors import KioskError
from kiosk.vision.types import FloatArray

NONCE_BYTES = 12
SALT_BYTES = 16


class CorruptRecordError(KioskError, ValueError):
    """An encrypted record does not decrypt: damaged, moved, or under another device secret."""

    exit_code = 65


@dataclass(frozen=True)
class KdfParams:
    """argon2id cost. Defaults follow RFC 9106's second recommendation, one lane for a Pi."""

    memory_kib: int = 65536
    time_cost: int = 3
    parallelism: int = 1

    def encode(self) -> str:
        return json.dumps(
            {"alg": "argon2id", "m": self.memory_kib, "t": self.time_cost, "p": self.parallelism}
        )

    @classmethod
    def decode(cls, text: str) -> KdfParams:
        data = json.loads(text)
        if data.get("alg") != "argon2id":
            raise CorruptRecordError(f"unknown PIN hash algorithm {data.get('alg')!r}")
        return cls(memory_kib=int(data["m"]), time_cost=int(data["t"]), parallelism=int(data["p"]))


@dataclass(frozen=True)
class PinHash:
    """What is stored for a PIN: salt, digest and the parameters that made it."""

    salt: bytes
    digest: bytes
    params: KdfParams


class PinHasher:
    """Hashes and verifies PINs with the device pepper."""

    def __init__(self, pepper: bytes, params: KdfParams | None = None) -> None:
        self._pepper = pepper
        self.params = params or KdfParams()

    def _digest(self, pin: str, salt: bytes, params: KdfParams) -> bytes:
        keyed = hmac.new(self._pepper, pin.encode("utf-8"), hashlib.sha256).digest()
        return hash_secret_raw(
            keyed,
            salt,
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            hash_len=32,
            type=Type.ID,
        )

    def hash(self, pin: str) -> PinHash:
        salt = os.urandom(SALT_BYTES)
        return PinHash(salt=salt, digest=self._digest(pin, salt, self.params), params=self.params)

    def verify(self, pin: str, stored: PinHash) -> bool:
        """Constant-time check of ``pin`` against ``stored`` (its own parameters)."""
        return hmac.compare_digest(self._digest(pin, stored.salt, stored.params), stored.digest)

    def burn(self, pin: str) -> None:
        """Spend the time a verification takes, for a user that does not exist (no timing leak)."""
        self._digest(pin, b"\0" * SALT_BYTES, self.params)


class RecordCipher:
    """AES-256-GCM for small records, bound to their row by associated data."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, context: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, blob: bytes, context: str) -> bytes:
        if len(blob) <= NONCE_BYTES:
            raise CorruptRecordError(f"encrypted record for {context} is truncated")
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context.encode())
        except InvalidTag as exc:
            raise CorruptRecordError(
                f"encrypted record for {context} does not decrypt: it is damaged, or was made "
                "under another device secret"
            ) from exc


def embedding_to_bytes(vector: FloatArray) -> bytes:
    """float32 little-endian bytes of an embedding."""
    return np.asarray(vector, dtype="<f4").tobytes()


def embedding_from_bytes(data: bytes) -> FloatArray:
    """The embedding back from :func:`embedding_to_bytes`; a wrong length is corruption."""
    if len(data) == 0 or len(data) % 4:
        raise CorruptRecordError(f"a template of {len(data)} bytes is not a float32 vector")
    vector = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(vector)):
        raise CorruptRecordError("a template holds non-finite values")
    return vector
