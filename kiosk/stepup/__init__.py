"""Step-up verification: signed, short-lived assertions that the session's user just verified.

An application on the terminal asks (Unix socket, or loopback with a bearer
token) for a fresh verification of the signed-in user before a high-risk
action; the kiosk answers with an EdDSA JWT signed by the device's Ed25519 key
that any server can check with the device's public key
(:func:`verify_assertion`). See :mod:`kiosk.stepup.server` for the API and
:mod:`kiosk.stepup.service` for what the daemon plugs in.
"""

from __future__ import annotations

from kiosk.stepup.assertion import (
    ACTION_CLAIM,
    TOKEN_TYPE,
    Assertion,
    AssertionSigner,
    InvalidAssertion,
    load_public_key,
    verify_assertion,
)
from kiosk.stepup.errors import StepUpError, StepUpKeyError
from kiosk.stepup.keys import (
    create_signing_key,
    create_token_file,
    key_id,
    load_signing_key,
    load_token,
    public_jwk,
    public_pem,
)
from kiosk.stepup.server import StepUpServer, StepUpThread, build_server
from kiosk.stepup.service import (
    Audit,
    Peer,
    Reply,
    SessionUser,
    SessionView,
    StepUpRequest,
    StepUpService,
    Verification,
    VerifyNow,
    VerifyResult,
)
from kiosk.stepup.settings import StepUpSettings, key_path, token_path

__all__ = [
    "ACTION_CLAIM",
    "TOKEN_TYPE",
    "Assertion",
    "AssertionSigner",
    "Audit",
    "InvalidAssertion",
    "Peer",
    "Reply",
    "SessionUser",
    "SessionView",
    "StepUpError",
    "StepUpKeyError",
    "StepUpRequest",
    "StepUpServer",
    "StepUpService",
    "StepUpSettings",
    "StepUpThread",
    "Verification",
    "VerifyNow",
    "VerifyResult",
    "build_server",
    "create_signing_key",
    "create_token_file",
    "key_id",
    "key_path",
    "load_public_key",
    "load_signing_key",
    "load_token",
    "public_jwk",
    "public_pem",
    "token_path",
    "verify_assertion",
]
