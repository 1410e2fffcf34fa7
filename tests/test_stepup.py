"""Step-up verification: a real server on a real Unix socket (and loopback TCP with a token).

The daemon's side — the session and the face + challenge check — is played by
:class:`ScriptedSession` and :class:`ScriptedVerifier`, plain classes returning
scripted answers. They stand in for the camera path, which has its own tests
(flow, liveness, end-to-end); here what matters is what the step-up API does with
their answers: assertions a server accepts, refusals without a token, access
control, input limits, the rate limit and the audit trail.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from pydantic import ValidationError

from kiosk.auth.events import AUTHENTICATION, AuditEvent, DeviceInfo
from kiosk.stepup import (
    TOKEN_TYPE,
    AssertionSigner,
    InvalidAssertion,
    SessionUser,
    StepUpError,
    StepUpKeyError,
    StepUpServer,
    StepUpService,
    StepUpSettings,
    StepUpThread,
    Verification,
    VerifyResult,
    build_server,
    create_signing_key,
    create_token_file,
    key_id,
    load_signing_key,
    load_token,
    public_jwk,
    public_pem,
    verify_assertion,
)

AUDIENCE = "https://payments.example.internal"
DEVICE = DeviceInfo(device_id="kiosk-07", site="ward-3")
ALICE = SessionUser(uid="17", name="Alice Example", staff_no="1042")
BOB = SessionUser(uid="18", name="Bob Example", staff_no="1043")

def _readme_verifier_source() -> str:
    """The README's ten-line verifier, read from the README itself (PyJWT only)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("import time, jwt")
    return readme[start : readme.index("```", start)]


README_VERIFIER = _readme_verifier_source()


def readme_verifier() -> Callable[..., dict[str, Any]]:
    namespace: dict[str, Any] = {}
    exec(README_VERIFIER, namespace)  # noqa: S102 - our own constant
    verifier: Callable[..., dict[str, Any]] = namespace["verify_stepup"]
    return verifier


# --- the daemon's side, scripted ------------------------------------------------------------


class TestClock:
    """Real wall time (PyJWT checks against it), shifted on demand; a hand-moved boot clock."""

    __test__ = False

    def __init__(self) -> None:
        self.shift = 0.0
        self.boot = 1000.0

    def wall(self) -> float:
        return time.time() + self.shift

    def since_boot(self) -> float:
        return self.boot

    def boot_id(self) -> str:
        return "boot-test"


class ScriptedSession:
    """Who is signed in, and their last verification, as the test sets them."""

    def __init__(self, user: SessionUser | None = ALICE) -> None:
        self.user = user
        self.verification: Verification | None = None

    def current_user(self) -> SessionUser | None:
        return self.user

    def last_verified_at(self, uid: str) -> Verification | None:
        v = self.verification
        return v if v is not None and self.user is not None and self.user.uid == uid else None


class ScriptedVerifier:
    """Returns scripted results; can be held (``gate``) to keep a check under way."""

    def __init__(self, *results: VerifyResult) -> None:
        self.results = list(results)
        self.calls: list[tuple[str, str, float]] = []
        self.gate: threading.Event | None = None

    def __call__(self, action: str, user: SessionUser, timeout_s: float) -> VerifyResult:
        self.calls.append((action, user.uid, timeout_s))
        if self.gate is not None:
            self.gate.wait(10)
        return self.results.pop(0) if self.results else VerifyResult.grant(user)


class AuditLog:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.fail = False

    def __call__(self, event: AuditEvent) -> None:
        if self.fail:
            raise OSError("audit writer down")
        self.events.append(event)


# --- a minimal HTTP client over a Unix socket or loopback TCP -------------------------------


def exchange(target: Path | tuple[str, int], raw: bytes) -> tuple[int, dict[str, str], Any]:
    family = socket.AF_UNIX if isinstance(target, Path) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(target) if isinstance(target, Path) else target)
        sock.sendall(raw)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    assert int(headers["content-length"]) == len(body)
    return status, headers, json.loads(body)


def request(
    target: Path | tuple[str, int],
    payload: Any = None,
    *,
    body: bytes | None = None,
    method: str = "POST",
    path: str = "/v1/assertion",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    if body is None:
        body = json.dumps(payload).encode() if payload is not None else b""
    lines = [f"{method} {path} HTTP/1.1", "Host: kiosk", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return exchange(target, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)


# --- fixtures -------------------------------------------------------------------------------


class Kiosk:
    """A running step-up server and the scripted daemon behind it."""

    def __init__(self, root: Path, **overrides: Any) -> None:
        self.root = root
        self.clock = TestClock()
        self.session = ScriptedSession()
        self.verifier = ScriptedVerifier()
        self.audit = AuditLog()
        key_file = root / "stepup-ed25519.pem"
        if not key_file.exists():
            create_signing_key(key_file)
        self.key = load_signing_key(key_file)
        fields: dict[str, Any] = {
            "enabled": True,
            "socket_path": root / "s.sock",
            "allowed_uids": [os.getuid()],
            "audience": AUDIENCE,
            "rate_limit_per_minute": 100,
        }
        fields.update(overrides)
        timeout = fields.pop("verify_timeout_s", None)
        settings = StepUpSettings(**fields)
        if timeout is not None:  # below the settings' floor of 3 s, to keep the test quick
            settings = settings.model_copy(update={"verify_timeout_s": timeout})
        self.settings = settings
        token = None
        if settings.port is not None:
            create_token_file(root / "stepup-token")
            token = load_token(root / "stepup-token")
        self.token = token
        signer = AssertionSigner(
            self.key,
            issuer=DEVICE.device_id,
            audience=settings.audience,
            lifetime_s=settings.lifetime_s,
            clock=self.clock,
        )
        service = StepUpService(
            signer=signer,
            session=self.session,
            verify_now=self.verifier,
            audit=self.audit,
            device=DEVICE,
            clock=self.clock,
            settings=settings,
        )
        self.server = StepUpServer(service, settings, token=token)
        self.runner = StepUpThread(self.server)

    @property
    def sock(self) -> Path:
        assert self.server.unix_path is not None
        return self.server.unix_path

    @property
    def tcp(self) -> tuple[str, int]:
        assert self.server.tcp_address is not None
        return self.server.tcp_address

    def ask(self, payload: Any, **kw: Any) -> tuple[int, dict[str, str], Any]:
        return request(self.sock, payload, **kw)


@pytest.fixture
def make_kiosk(tmp_path: Path) -> Iterator[Callable[..., Kiosk]]:
    started: list[Kiosk] = []

    def make(**overrides: Any) -> Kiosk:
        root = tmp_path / f"k{len(started)}"
        root.mkdir()
        kiosk = Kiosk(root, **overrides)
        kiosk.runner.start()
        started.append(kiosk)
        return kiosk

    yield make
    for kiosk in started:
        if kiosk.verifier.gate is not None:
            kiosk.verifier.gate.set()
        kiosk.runner.stop()


@pytest.fixture
def kiosk(make_kiosk: Callable[..., Kiosk]) -> Kiosk:
    return make_kiosk()


def fresh_token(kiosk: Kiosk, action: str = "refund.approve") -> str:
    status, _, body = kiosk.ask({"action": action, "max_age_s": 0})
    assert status == 200, body
    token: str = body["assertion"]
    return token


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- assertions -----------------------------------------------------------------------------


def test_fresh_verification_yields_an_assertion_servers_accept(kiosk: Kiosk) -> None:
    status, headers, body = kiosk.ask(
        {"action": "refund.approve", "max_age_s": 0, "nonce": "n-0f3a9c"}
    )
    assert status == 200, body
    assert body["verification"] == "fresh"
    assert body["expires_in"] == 60
    assert headers["cache-control"] == "no-store"
    assert kiosk.verifier.calls == [("refund.approve", ALICE.uid, 30.0)]

    token = body["assertion"]
    pem = public_pem(kiosk.key)
    got = verify_assertion(
        token,
        pem,
        AUDIENCE,
        max_age=30,
        issuer="kiosk-07",
        action="refund.approve",
        nonce="n-0f3a9c",
    )
    assert (got.subject, got.name, got.action) == (ALICE.uid, ALICE.name, "refund.approve")
    assert (got.audience, got.issuer) == (AUDIENCE, "kiosk-07")
    assert got.amr == ("face", "liveness")
    assert got.nonce == "n-0f3a9c"
    assert got.expires_at - got.issued_at == 60
    assert got.claims["nbf"] == got.issued_at
    assert abs(got.issued_at - time.time()) < 5
    assert abs(got.auth_time - time.time()) < 5
    assert len(base64.urlsafe_b64decode(got.jti + "==")) == 16  # 128-bit nonce

    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "typ": TOKEN_TYPE, "kid": key_id(kiosk.key)}
    assert public_jwk(kiosk.key)["kid"] == header["kid"]
    # The same with the JWK the fleet registers, and with the README's ten lines.
    assert verify_assertion(token, public_jwk(kiosk.key), AUDIENCE, 30).jti == got.jti
    claims = readme_verifier()(token, pem, AUDIENCE, "refund.approve")
    assert claims["sub"] == ALICE.uid and claims["jti"] == got.jti

    # Each request gets its own jti.
    assert verify_assertion(fresh_token(kiosk), pem, AUDIENCE, 30).jti != got.jti

    [event, _] = kiosk.audit.events
    assert event.class_uid == AUTHENTICATION and event.status == "success"
    assert event.user_uid == ALICE.uid
    unmapped = event.payload["unmapped"]
    assert unmapped["factor"] == "step-up"
    assert unmapped["action"] == "refund.approve"
    assert unmapped["jti"] == got.jti
    assert unmapped["verification"] == "fresh"
    assert unmapped["client"].startswith(f"unix uid {os.getuid()} pid ")
    assert "score" not in unmapped
    assert token not in json.dumps(event.payload)


def test_pyjwt_rejects_expired_other_audience_tampered_and_foreign(kiosk: Kiosk) -> None:
    pem = public_pem(kiosk.key)
    token = fresh_token(kiosk)
    jwt.decode(token, pem, algorithms=["EdDSA"], audience=AUDIENCE)  # the control

    # Expired: issued 90 s ago with the 60 s lifetime (time travel on the signer's clock).
    past = TestClock()
    past.shift = -90
    old = AssertionSigner(
        kiosk.key, issuer="kiosk-07", audience=AUDIENCE, lifetime_s=60, clock=past
    ).sign(
        subject=ALICE.uid,
        name=ALICE.name,
        action="refund.approve",
        auth_time=past.wall(),
        amr=["face", "liveness"],
    )
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(old.token, pem, algorithms=["EdDSA"], audience=AUDIENCE)
    with pytest.raises(jwt.ExpiredSignatureError):
        verify_assertion(old.token, pem, AUDIENCE, max_age=3600)
    with pytest.raises(jwt.ExpiredSignatureError):
        readme_verifier()(old.token, pem, AUDIENCE, "refund.approve")

    # Another audience.
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, pem, algorithms=["EdDSA"], audience="https://other.example")
    with pytest.raises(jwt.InvalidAudienceError):
        verify_assertion(token, pem, "https://other.example", max_age=60)

    # Tampered: another subject with the original signature.
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = BOB.uid
    forged = ".".join([head, b64url(json.dumps(claims).encode()), sig])
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, pem, algorithms=["EdDSA"], audience=AUDIENCE)
    with pytest.raises(jwt.InvalidSignatureError):
        verify_assertion(forged, pem, AUDIENCE, max_age=60)

    # Signed by another key.
    other = Ed25519PrivateKey.generate()
    foreign = AssertionSigner(
        other, issuer="kiosk-07", audience=AUDIENCE, lifetime_s=60, clock=TestClock()
    ).sign(
        subject=ALICE.uid,
        name=ALICE.name,
        action="refund.approve",
        auth_time=time.time(),
        amr=["x"],
    )
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(foreign.token, pem, algorithms=["EdDSA"], audience=AUDIENCE)
    with pytest.raises(jwt.InvalidSignatureError):
        verify_assertion(foreign.token, pem, AUDIENCE, max_age=60)

    # Unsigned ("alg": "none") is never accepted.
    unsigned = jwt.encode(claims, "", algorithm="none", headers={"typ": TOKEN_TYPE})
    with pytest.raises(jwt.InvalidTokenError):
        verify_assertion(unsigned, pem, AUDIENCE, max_age=60)


def test_verify_assertion_checks_freshness_type_action_and_nonce(kiosk: Kiosk) -> None:
    pem = public_pem(kiosk.key)
    kiosk.session.verification = Verification(
        ALICE.uid, wall=time.time() - 600, since_boot=kiosk.clock.boot - 600
    )
    status, _, body = kiosk.ask({"action": "door.open", "max_age_s": 900, "nonce": "abc"})
    assert status == 200 and body["verification"] == "recent"
    token = body["assertion"]
    assert verify_assertion(token, pem, AUDIENCE, max_age=900).amr == ("pin", "face", "liveness")
    with pytest.raises(InvalidAssertion, match="older than max_age"):
        verify_assertion(token, pem, AUDIENCE, max_age=300)
    with pytest.raises(InvalidAssertion, match="action"):
        verify_assertion(token, pem, AUDIENCE, max_age=900, action="refund.approve")
    with pytest.raises(InvalidAssertion, match="nonce"):
        verify_assertion(token, pem, AUDIENCE, max_age=900, nonce="xyz")
    with pytest.raises(jwt.InvalidIssuerError):
        verify_assertion(token, pem, AUDIENCE, max_age=900, issuer="kiosk-99")
    with pytest.raises(jwt.InvalidTokenError):
        readme_verifier()(token, pem, AUDIENCE, "door.open", max_age=300)
    # A JWT of another type, though signed by the same key, is not an assertion.
    claims = jwt.decode(token, pem, algorithms=["EdDSA"], audience=AUDIENCE)
    other_type = jwt.encode(claims, kiosk.key, algorithm="EdDSA", headers={"typ": "JWT"})
    with pytest.raises(InvalidAssertion, match="typ"):
        verify_assertion(other_type, pem, AUDIENCE, max_age=900)


# --- the API --------------------------------------------------------------------------------


def test_recent_verification_answers_without_a_face_check(kiosk: Kiosk) -> None:
    signed_in = time.time() - 20
    kiosk.session.verification = Verification(
        ALICE.uid, wall=signed_in, since_boot=kiosk.clock.boot - 20
    )
    status, _, body = kiosk.ask({"action": "chart.view", "max_age_s": 60})
    assert status == 200 and body["verification"] == "recent"
    assert kiosk.verifier.calls == []
    got = verify_assertion(body["assertion"], public_pem(kiosk.key), AUDIENCE, max_age=60)
    assert got.auth_time == int(signed_in)
    assert got.amr == ("pin", "face", "liveness")

    # Older than the request allows (measured on the boot clock): a fresh check runs.
    status, _, body = kiosk.ask({"action": "chart.view", "max_age_s": 10})
    assert status == 200 and body["verification"] == "fresh"
    assert kiosk.verifier.calls == [("chart.view", ALICE.uid, 30.0)]

    # Setting the wall clock back does not make an old verification recent.
    kiosk.clock.boot += 100
    kiosk.clock.shift = -100
    status, _, body = kiosk.ask({"action": "chart.view", "max_age_s": 60})
    assert body["verification"] == "fresh"
    assert [e.payload["unmapped"]["verification"] for e in kiosk.audit.events] == [
        "recent",
        "fresh",
        "fresh",
    ]


def test_refusals_carry_a_reason_and_no_token(kiosk: Kiosk) -> None:
    reason = "Face not recognised. Try again, or use your code."
    kiosk.verifier.results = [VerifyResult.deny(reason, ALICE)]
    status, _, body = kiosk.ask({"action": "refund.approve", "max_age_s": 0})
    assert status == 403
    assert body == {"error": "denied", "reason": reason}

    # The check verified somebody else: refused, whatever the daemon said.
    kiosk.verifier.results = [VerifyResult.grant(BOB)]
    status, _, body = kiosk.ask({"action": "refund.approve", "max_age_s": 0})
    assert status == 403 and body["error"] == "denied" and "assertion" not in body

    # Nobody signed in: refused without a face check.
    kiosk.session.user = None
    status, _, body = kiosk.ask({"action": "refund.approve", "max_age_s": 0})
    assert status == 403 and body["error"] == "no_session"
    assert len(kiosk.verifier.calls) == 2

    failures = [e for e in kiosk.audit.events if e.status == "failure"]
    assert len(failures) == 3 == len(kiosk.audit.events)
    assert failures[0].payload["status_detail"] == reason
    assert failures[0].user_uid == ALICE.uid
    assert all("score" not in e.payload["unmapped"] for e in failures)


def test_slow_check_times_out_and_the_camera_stays_busy(make_kiosk: Callable[..., Kiosk]) -> None:
    kiosk = make_kiosk(verify_timeout_s=0.3)
    kiosk.verifier.gate = threading.Event()
    status, _, body = kiosk.ask({"action": "refund.approve", "max_age_s": 0})
    assert status == 403 and body["error"] == "timeout"
    # The abandoned check still holds the camera: a second request is told so.
    status, _, body = kiosk.ask({"action": "refund.approve", "max_age_s": 0})
    assert status == 409 and body["error"] == "busy"
    kiosk.verifier.gate.set()
    for _ in range(100):
        status, _, body = kiosk.ask({"action": "refund.approve", "max_age_s": 0})
        if status != 409:
            break
        time.sleep(0.02)
    assert status == 200


def test_a_failing_face_check_is_a_refusal(kiosk: Kiosk) -> None:
    def broken(action: str, user: SessionUser, timeout_s: float) -> VerifyResult:
        raise RuntimeError("camera gone")

    kiosk.server.service.verify_now = broken
    status, _, body = kiosk.ask({"action": "refund.approve", "max_age_s": 0})
    assert status == 503 and body["error"] == "unavailable" and "assertion" not in body
    assert kiosk.audit.events[-1].status == "failure"
    assert kiosk.ask({"action": "refund.approve", "max_age_s": 0})[0] == 503  # still serving


def test_a_grant_that_cannot_be_audited_hands_out_no_token(kiosk: Kiosk) -> None:
    kiosk.audit.fail = True
    status, _, body = kiosk.ask({"action": "refund.approve", "max_age_s": 0})
    assert status == 503 and "assertion" not in body
    assert "audit" in body["reason"]


def test_disallowed_uid_is_rejected(make_kiosk: Callable[..., Kiosk]) -> None:
    kiosk = make_kiosk(allowed_uids=[os.getuid() + 1])
    status, _, body = kiosk.ask({"action": "refund.approve", "max_age_s": 0})
    assert status == 403 and body["error"] == "not_allowed"
    assert "assertion" not in body and kiosk.verifier.calls == []
    [event] = kiosk.audit.events
    assert event.status == "failure" and event.user_uid == "unknown"
    assert f"uid {os.getuid()}" in event.payload["unmapped"]["client"]


def test_loopback_needs_the_bearer_token(make_kiosk: Callable[..., Kiosk]) -> None:
    kiosk = make_kiosk(socket_path=None, port=0)
    payload = {"action": "refund.approve", "max_age_s": 0}
    status, headers, body = request(kiosk.tcp, payload)
    assert status == 401 and body["error"] == "unauthorized"
    assert headers["www-authenticate"].startswith("Bearer")
    status, _, body = request(kiosk.tcp, payload, headers={"Authorization": "Bearer " + "x" * 43})
    assert status == 401
    status, _, body = request(kiosk.tcp, payload, headers={"Authorization": f"Basic {kiosk.token}"})
    assert status == 401
    assert kiosk.verifier.calls == []
    status, _, body = request(
        kiosk.tcp, payload, headers={"Authorization": f"Bearer {kiosk.token}"}
    )
    assert status == 200
    got = verify_assertion(body["assertion"], public_pem(kiosk.key), AUDIENCE, 60)
    assert got.subject == ALICE.uid
    assert len(kiosk.audit.events) == 4
    assert kiosk.audit.events[-1].payload["unmapped"]["client"].startswith("tcp 127.0.0.1:")


def test_malformed_and_oversized_requests_get_clear_errors(kiosk: Kiosk) -> None:
    ok = {"action": "refund.approve", "max_age_s": 0}
    cases: list[tuple[int, str, tuple[int, dict[str, str], Any]]] = [
        (413, "too_large", kiosk.ask(None, body=b"{" + b" " * 5000 + b"}")),
        (400, "bad_request", kiosk.ask(None, body=b"{not json")),
        (400, "bad_request", kiosk.ask(None, body=b"[1, 2]")),
        (400, "bad_request", kiosk.ask({"action": "Refund!", "max_age_s": 0})),
        (400, "bad_request", kiosk.ask({"action": "a" * 65, "max_age_s": 0})),
        (400, "bad_request", kiosk.ask({"action": "refund\n", "max_age_s": 0})),
        (400, "bad_request", kiosk.ask({"action": "refund", "max_age_s": 3601})),
        (400, "bad_request", kiosk.ask({"action": "refund", "max_age_s": -1})),
        (400, "bad_request", kiosk.ask({"action": "refund", "max_age_s": "60"})),
        (400, "bad_request", kiosk.ask({"action": "refund", "max_age_s": True})),
        (400, "bad_request", kiosk.ask({"action": "refund"})),
        (400, "bad_request", kiosk.ask({**ok, "nonce": "has space"})),
        (400, "bad_request", kiosk.ask({**ok, "nonce": "x" * 129})),
        (400, "bad_request", kiosk.ask({**ok, "user": "someone-else"})),
        (404, "not_found", kiosk.ask(ok, path="/v1/other")),
        (405, "method_not_allowed", kiosk.ask(ok, method="GET")),
        (400, "bad_request", exchange(kiosk.sock, b"HELLO\r\n\r\n")),
        (411, "length_required", exchange(kiosk.sock, b"POST /v1/assertion HTTP/1.1\r\n\r\n")),
        (
            411,
            "length_required",
            exchange(
                kiosk.sock,
                b"POST /v1/assertion HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
        ),
        (
            431,
            "headers_too_large",
            exchange(kiosk.sock, b"POST /v1/assertion HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n"),
        ),
    ]
    for expected, error, (status, _, body) in cases:
        assert (status, body["error"]) == (expected, error), body
        assert body["reason"] and "assertion" not in body
    assert "action" in cases[3][2][2]["reason"]
    assert "max_age_s" in cases[6][2][2]["reason"]

    # A client that connects and says nothing is dropped without an answer.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as quiet:
        quiet.connect(str(kiosk.sock))
    # And the server keeps serving.
    status, _, body = kiosk.ask(ok)
    assert status == 200
    assert kiosk.verifier.calls == [("refund.approve", ALICE.uid, 30.0)]
    # Every request was audited, the refused ones as failures.
    assert len(kiosk.audit.events) == len(cases) + 1
    assert [e.status for e in kiosk.audit.events] == ["failure"] * len(cases) + ["success"]


def test_expect_100_continue_is_answered(kiosk: Kiosk) -> None:
    body = json.dumps({"action": "refund", "max_age_s": 0, "nonce": "n" * 128}).encode()
    head = (
        "POST /v1/assertion HTTP/1.1\r\nHost: kiosk\r\nExpect: 100-continue\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(kiosk.sock))
        sock.sendall(head)
        assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert sock.recv(64).startswith(b"HTTP/1.1 200 OK\r\n")


def test_the_device_may_narrow_max_age(make_kiosk: Callable[..., Kiosk]) -> None:
    kiosk = make_kiosk(max_age_limit_s=120)
    status, _, body = kiosk.ask({"action": "refund", "max_age_s": 300})
    assert status == 400 and "at most 120" in body["reason"]


def test_rate_limit_per_peer(make_kiosk: Callable[..., Kiosk]) -> None:
    kiosk = make_kiosk(rate_limit_per_minute=5)
    kiosk.session.verification = Verification(
        ALICE.uid, wall=time.time(), since_boot=kiosk.clock.boot
    )
    ok = {"action": "chart.view", "max_age_s": 60}
    statuses = [kiosk.ask(ok)[0] for _ in range(5)]
    assert statuses == [200] * 5
    status, headers, body = kiosk.ask(ok)
    assert status == 429 and body["error"] == "rate_limited"
    assert 1 <= int(headers["retry-after"]) <= 60
    # Malformed requests count too.
    assert kiosk.ask(None, body=b"junk")[0] == 429
    kiosk.clock.boot += 30
    kiosk.session.verification = Verification(
        ALICE.uid, wall=time.time(), since_boot=kiosk.clock.boot
    )
    assert kiosk.ask(ok)[0] == 429
    kiosk.clock.boot += 31  # the window has moved past the first five
    assert kiosk.ask(ok)[0] == 200
    assert len(kiosk.audit.events) == 9
    assert [e.payload["unmapped"]["http_status"] for e in kiosk.audit.events[5:]] == [
        429,
        429,
        429,
        200,
    ]


# --- the server's lifecycle -----------------------------------------------------------------


def test_socket_lifecycle(tmp_path: Path, make_kiosk: Callable[..., Kiosk]) -> None:
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(stale))  # bound, never listening: what a crashed daemon leaves
    kiosk = make_kiosk(socket_path=stale)
    assert stat.S_IMODE(stale.stat().st_mode) == 0o666
    assert kiosk.ask({"action": "x", "max_age_s": 0})[0] == 200

    # A second server on the same socket is refused; the first keeps it.
    second = Kiosk(tmp_path / "k0", socket_path=stale)
    with pytest.raises(StepUpError, match="already serving"):
        second.runner.start()
    assert kiosk.ask({"action": "x", "max_age_s": 0})[0] == 200

    # Not a socket: never replaced.
    plain = tmp_path / "plain"
    plain.write_text("keep me")
    third = Kiosk(tmp_path / "k0", socket_path=plain)
    with pytest.raises(StepUpError, match="not a socket"):
        third.runner.start()
    assert plain.read_text() == "keep me"

    kiosk.runner.stop()
    assert not stale.exists()


def test_asyncio_embedding_in_a_loop(tmp_path: Path) -> None:
    import asyncio

    kiosk = Kiosk(tmp_path)

    async def main() -> tuple[int, Any]:
        async with kiosk.server:
            loop = asyncio.get_running_loop()
            status, _, body = await loop.run_in_executor(
                None, lambda: kiosk.ask({"action": "x", "max_age_s": 0})
            )
        return status, body

    status, _ = asyncio.run(main())
    assert status == 200
    assert not (tmp_path / "s.sock").exists()


# --- keys, tokens, settings, CLI ------------------------------------------------------------


def test_signing_key_is_made_once_and_loading_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "stepup-ed25519.pem"
    with pytest.raises(StepUpKeyError, match="kiosk stepup init"):
        load_signing_key(path)
    key = create_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public_pem(load_signing_key(path)) == public_pem(key)
    with pytest.raises(StepUpKeyError, match="already exists"):
        create_signing_key(path)

    path.chmod(0o644)
    with pytest.raises(StepUpKeyError, match="0644"):
        load_signing_key(path)
    path.chmod(0o600)

    damaged = tmp_path / "damaged.pem"
    damaged.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    damaged.chmod(0o600)
    with pytest.raises(StepUpKeyError, match="damaged"):
        load_signing_key(damaged)

    rsa = tmp_path / "rsa.pem"
    rsa.write_bytes(
        generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    rsa.chmod(0o600)
    with pytest.raises(StepUpKeyError, match="not an Ed25519"):
        load_signing_key(rsa)

    jwk = public_jwk(key)
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and jwk["alg"] == "EdDSA"
    assert len(base64.urlsafe_b64decode(jwk["x"] + "=")) == 32


def test_token_file_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "stepup-token"
    with pytest.raises(StepUpKeyError, match="missing"):
        load_token(path)
    create_token_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert len(load_token(path)) >= 32
    path.chmod(0o644)
    with pytest.raises(StepUpKeyError, match="0644"):
        load_token(path)
    path.write_text("short\n")
    path.chmod(0o600)
    with pytest.raises(StepUpKeyError, match="at least 32"):
        load_token(path)


def test_build_server_loads_the_key_or_refuses(tmp_path: Path) -> None:
    settings = StepUpSettings(enabled=True, socket_path=tmp_path / "s.sock", audience=AUDIENCE)
    parts: dict[str, Any] = {
        "device": DEVICE,
        "session": ScriptedSession(),
        "verify_now": ScriptedVerifier(),
        "audit": AuditLog(),
    }
    with pytest.raises(StepUpKeyError, match="missing"):
        build_server(settings, tmp_path, **parts)
    create_signing_key(tmp_path / "stepup-ed25519.pem")
    server = build_server(settings, tmp_path, **parts)
    assert server.service.signer.issuer == "kiosk-07"
    loopback = settings.model_copy(update={"port": 0})
    with pytest.raises(StepUpKeyError, match="stepup-token"):
        build_server(loopback, tmp_path, **parts)


def test_settings() -> None:
    default = StepUpSettings()
    assert default.socket_path == Path("/run/kiosk/stepup.sock")
    assert (default.lifetime_s, default.rate_limit_per_minute, default.enabled) == (60, 5, False)
    for name, info in StepUpSettings.model_fields.items():
        assert info.title and info.description, name
    with pytest.raises(ValidationError, match="loopback"):
        StepUpSettings(host="0.0.0.0")  # noqa: S104 - the point of the test
    with pytest.raises(ValidationError):
        StepUpSettings(unknown=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="neither"):
        StepUpSettings(enabled=True, socket_path=None, port=None)
    with pytest.raises(ValidationError):
        StepUpSettings(lifetime_s=3600)
    assert StepUpSettings(host="::1").host == "::1"


def test_cli_init_and_pubkey(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kiosk.cli import main

    monkeypatch.setenv("KIOSK_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("KIOSK_CONFIG", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert main(["stepup", "pubkey"]) == 77  # no key yet: fails closed
    assert main(["stepup", "init", "--token"]) == 0
    assert (tmp_path / "stepup-ed25519.pem").exists() and (tmp_path / "stepup-token").exists()
    assert main(["stepup", "init"]) == 77  # never replaced
    capsys.readouterr()
    assert main(["stepup", "pubkey"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "-----BEGIN PUBLIC KEY-----" and lines[-2] == "-----END PUBLIC KEY-----"
    key = load_signing_key(tmp_path / "stepup-ed25519.pem")
    assert json.loads(lines[-1]) == public_jwk(key)
    assert main(["stepup", "pubkey", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["kid"] == key_id(key) and shown["pem"] == public_pem(key)
