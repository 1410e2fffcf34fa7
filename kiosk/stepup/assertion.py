"""Step-up assertions: short-lived EdDSA JWTs saying who verified, for what, and when.

Header: ``{"alg": "EdDSA", "typ": "kiosk-stepup+jwt", "kid": <JWK thumbprint>}``
(explicit typing, RFC 8725 §3.11, so an assertion is never mistaken for
another kind of JWT). Claims:

=============  ============================================================
``iss``        the device id
``sub``        the user's stable uid; ``name`` their display name
``act``        the action the application asked about (``[a-z0-9_.-]{1,64}``)
``aud``        the configured audience
``iat``/``nbf`` issue time; ``exp`` = ``iat`` + the lifetime (60 s default)
``auth_time``  when the face (or sign-in) verification happened
``amr``        methods of that verification, e.g. ``["face", "liveness"]``
``jti``        128 random bits; a server remembers it until ``exp`` to refuse replays
``nonce``      the requesting application's nonce, when it sent one
=============  ============================================================

A server checks one with :func:`verify_assertion` (or PyJWT alone, see the README).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kiosk.auth.clock import Clock
from kiosk.stepup.keys import key_id

ALGORITHM = "EdDSA"
TOKEN_TYPE = "kiosk-stepup+jwt"  # noqa: S105 - the JWT "typ", not a secret
#: The claim carrying the action name.
ACTION_CLAIM = "act"
ACTION_RE = re.compile(r"[a-z0-9_.-]{1,64}")
NONCE_RE = re.compile(r"[A-Za-z0-9._~+/=-]{1,128}")
REQUIRED_CLAIMS = ("iss", "sub", "aud", "iat", "nbf", "exp", "jti", "auth_time", "amr")


class InvalidAssertion(jwt.InvalidTokenError):
    """A well-signed token that is not an acceptable step-up assertion."""


@dataclass(frozen=True)
class Assertion:
    """A signed assertion and the claims in it."""

    token: str
    issuer: str
    subject: str
    name: str
    action: str
    audience: str
    issued_at: int
    expires_at: int
    auth_time: int
    jti: str
    amr: tuple[str, ...]
    nonce: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_claims(cls, token: str, claims: Mapping[str, Any]) -> Assertion:
        aud = claims["aud"]
        return cls(
            token=token,
            issuer=str(claims["iss"]),
            subject=str(claims["sub"]),
            name=str(claims.get("name", "")),
            action=str(claims[ACTION_CLAIM]),
            audience=aud if isinstance(aud, str) else str(aud[0]),
            issued_at=int(claims["iat"]),
            expires_at=int(claims["exp"]),
            auth_time=int(claims["auth_time"]),
            jti=str(claims["jti"]),
            amr=tuple(str(m) for m in claims["amr"]),
            nonce=str(claims["nonce"]) if "nonce" in claims else None,
            claims=dict(claims),
        )


class AssertionSigner:
    """Signs assertions with the device key; the clock gives ``iat``."""

    def __init__(
        self,
        key: Ed25519PrivateKey,
        *,
        issuer: str,
        audience: str,
        lifetime_s: int,
        clock: Clock,
    ) -> None:
        if lifetime_s <= 0:
            raise ValueError("an assertion's lifetime must be positive")
        self._key = key
        self.issuer = issuer
        self.audience = audience
        self.lifetime_s = lifetime_s
        self.clock = clock
        self.key_id = key_id(key)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def sign(
        self,
        *,
        subject: str,
        name: str,
        action: str,
        auth_time: float,
        amr: Sequence[str],
        nonce: str | None = None,
    ) -> Assertion:
        """A new assertion for ``subject``, verified at ``auth_time`` by the methods ``amr``."""
        if not ACTION_RE.fullmatch(action):
            raise ValueError(f"invalid action name {action!r}")
        if nonce is not None and not NONCE_RE.fullmatch(nonce):
            raise ValueError("invalid nonce")
        if not amr:
            raise ValueError("amr must name at least one method")
        iat = int(self.clock.wall())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "name": name,
            ACTION_CLAIM: action,
            "aud": self.audience,
            "iat": iat,
            "nbf": iat,
            "exp": iat + self.lifetime_s,
            "auth_time": int(auth_time),
            "amr": list(amr),
            "jti": secrets.token_urlsafe(16),  # 128 bits
        }
        if nonce is not None:
            claims["nonce"] = nonce
        token = jwt.encode(
            claims,
            self._key,
            algorithm=ALGORITHM,
            headers={"typ": TOKEN_TYPE, "kid": self.key_id},
        )
        return Assertion.from_claims(token, claims)

    def __repr__(self) -> str:  # never print key material
        return f"AssertionSigner(issuer={self.issuer!r}, kid={self.key_id!r})"


PublicKeyLike = Ed25519PublicKey | str | bytes | Mapping[str, Any]


def load_public_key(key: PublicKeyLike) -> Ed25519PublicKey:
    """An Ed25519 public key from a key object, PEM text/bytes or an OKP JWK mapping."""
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, Mapping):
        loaded: Any = jwt.PyJWK(dict(key), algorithm=ALGORITHM).key
    else:
        data = key.encode("ascii") if isinstance(key, str) else key
        loaded = serialization.load_pem_public_key(data)
    if not isinstance(loaded, Ed25519PublicKey):
        raise ValueError(f"not an Ed25519 public key: {type(loaded).__name__}")
    return loaded


def verify_assertion(
    token: str,
    public_key: PublicKeyLike,
    audience: str,
    max_age: float,
    *,
    issuer: str | None = None,
    action: str | None = None,
    nonce: str | None = None,
    leeway: float = 5.0,
    max_lifetime_s: int = 600,
    now: float | None = None,
) -> Assertion:
    """Check a step-up assertion as a server should, and return its claims.

    Checks the EdDSA signature with the device's ``public_key``, the explicit type,
    ``aud`` = ``audience``, ``exp``/``nbf``/``iat`` (with ``leeway`` seconds of clock
    skew), that the lifetime is at most ``max_lifetime_s``, and that the verification
    (``auth_time``) is at most ``max_age`` seconds old; with ``issuer``, ``action`` or
    ``nonce`` given, that those claims equal them. Raises :class:`jwt.InvalidTokenError`
    (a subclass of it) on any failure. Replays are the caller's to refuse: remember
    ``jti`` until ``expires_at``.
    """
    key = load_public_key(public_key)
    header = jwt.get_unverified_header(token)
    if header.get("typ") != TOKEN_TYPE:
        raise InvalidAssertion(f"not a step-up assertion (typ {header.get('typ')!r})")
    claims = jwt.decode(
        token,
        key,
        algorithms=[ALGORITHM],
        audience=audience,
        issuer=issuer,
        leeway=leeway,
        options={"require": list(REQUIRED_CLAIMS), "strict_aud": True},
    )
    current = time.time() if now is None else now
    try:
        assertion = Assertion.from_claims(token, claims)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InvalidAssertion(f"malformed claims: {exc}") from exc
    if not ACTION_RE.fullmatch(assertion.action):
        raise InvalidAssertion("malformed action claim")
    if not isinstance(claims["amr"], list) or not assertion.amr:
        raise InvalidAssertion("amr must be a non-empty list")
    if assertion.expires_at - assertion.issued_at > max_lifetime_s:
        raise InvalidAssertion("the assertion lives longer than allowed")
    if assertion.auth_time > current + leeway:
        raise InvalidAssertion("auth_time is in the future")
    if current - assertion.auth_time > max_age + leeway:
        raise InvalidAssertion("the verification is older than max_age")
    if action is not None and assertion.action != action:
        raise InvalidAssertion(f"the assertion is for action {assertion.action!r}")
    if nonce is not None and assertion.nonce != nonce:
        raise InvalidAssertion("the nonce does not match")
    return assertion
