"""What a step-up request gets: the decision, independent of the transport.

The daemon plugs in three things:

* a :class:`SessionView`: who is signed in on the terminal, and when that user
  last verified (sign-in or an earlier step-up) in this session;
* ``verify_now``, a :class:`VerifyNow`: run face + a liveness challenge for the
  session's user *now* and say granted or denied (with a reason a person can
  act on, never a score). It is called on a worker thread, one at a time, and
  should give up by itself after ``timeout_s``. When it grants, the daemon
  records the verification, so that its :class:`SessionView` reports it to the
  next request;
* ``audit(event)``: store an audit event. It is called on the server's event
  loop thread and must be quick (hand the event to the audit writer). If it
  raises, no assertion is handed out (the request gets 503).

Every request is audited as an Authentication event with factor ``step-up``,
whether it is granted, refused, malformed, rate-limited or not let in.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kiosk.auth import events
from kiosk.auth.clock import Clock
from kiosk.auth.events import AuditEvent, DeviceInfo, UserRef
from kiosk.stepup.assertion import ACTION_RE, NONCE_RE, AssertionSigner
from kiosk.stepup.settings import MAX_AGE_CEILING_S, StepUpSettings

log = logging.getLogger(__name__)

FACTOR = "step-up"
RATE_WINDOW_S = 60.0
DEFAULT_FRESH_AMR: tuple[str, ...] = ("face", "liveness")


# --- what the daemon implements -------------------------------------------------------------


@dataclass(frozen=True)
class SessionUser:
    """The user signed in on the terminal."""

    uid: str  # stable id, the JWT ``sub``
    name: str
    staff_no: str = ""

    def ref(self) -> UserRef:
        return UserRef(uid=self.uid, name=self.name, staff_no=self.staff_no)


@dataclass(frozen=True)
class Verification:
    """A successful verification of a session's user."""

    uid: str
    wall: float  # epoch seconds: the assertion's ``auth_time``
    since_boot: float  # the same instant on the CLOCK_BOOTTIME clock: the age is measured on it
    amr: tuple[str, ...] = ("pin", "face", "liveness")


class SessionView(Protocol):
    """The daemon's view of the terminal's session (called on the server thread)."""

    def current_user(self) -> SessionUser | None:
        """The signed-in user, or None when the terminal is idle or locked."""
        ...

    def last_verified_at(self, uid: str) -> Verification | None:
        """The latest verification of ``uid`` in the current session, or None.

        None when ``uid`` is not the session's user any more: the answer is tied to
        the user asked about, so a session that changes between two calls cannot
        lend one user's verification to another.
        """
        ...


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of a fresh face check."""

    granted: bool
    reason: str  # for the person and the audit trail; never a score
    user: SessionUser | None = None  # who was verified (must be the session's user)
    amr: tuple[str, ...] = DEFAULT_FRESH_AMR
    wall: float | None = None  # when it succeeded; None: when verify_now returned

    @classmethod
    def grant(
        cls, user: SessionUser, reason: str = "face matched, liveness passed", **kw: Any
    ) -> VerifyResult:
        return cls(True, reason, user, **kw)

    @classmethod
    def deny(cls, reason: str, user: SessionUser | None = None) -> VerifyResult:
        return cls(False, reason, user)


class VerifyNow(Protocol):
    """Run face + a challenge for ``user`` now; give up after ``timeout_s``."""

    def __call__(self, action: str, user: SessionUser, timeout_s: float) -> VerifyResult: ...


Audit = Callable[[AuditEvent], None]


# --- requests and replies -------------------------------------------------------------------


class StepUpRequest(BaseModel):
    """The body of ``POST /v1/assertion``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    action: str = Field(
        pattern=f"^{ACTION_RE.pattern}$",  # anchored: pydantic searches, it does not match
        title="Action",
        description="What the user is about to do: 1–64 of a-z 0-9 _ . -",
    )
    max_age_s: int = Field(
        ge=0,
        le=MAX_AGE_CEILING_S,
        title="Maximum age",
        description="Accept a verification at most this many seconds old (0: always a new one).",
    )
    nonce: str | None = Field(
        None,
        pattern=f"^{NONCE_RE.pattern}$",
        title="Nonce",
        description="Copied into the assertion's 'nonce' claim (1–128 URL-safe characters).",
    )


@dataclass(frozen=True)
class Peer:
    """Who connected: a uid on the Unix socket, or a loopback TCP client."""

    transport: Literal["unix", "tcp"]
    uid: int | None = None
    pid: int | None = None
    address: str = ""

    @property
    def label(self) -> str:
        if self.transport == "unix":
            return f"unix uid {self.uid} pid {self.pid}"
        return f"tcp {self.address}"

    @property
    def rate_key(self) -> str:
        # Every loopback client shares the one token, hence one budget.
        return f"uid:{self.uid}" if self.transport == "unix" else "loopback-token"


@dataclass(frozen=True)
class Reply:
    """A JSON answer and its HTTP status."""

    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def granted(self) -> bool:
        return self.status == 200


def refusal(
    status: int, error: str, reason: str, headers: Mapping[str, str] | None = None
) -> Reply:
    return Reply(status, {"error": error, "reason": reason}, dict(headers or {}))


class RateLimiter:
    """At most ``limit`` requests per ``window_s`` per key (a sliding window)."""

    def __init__(self, limit: int, clock: Clock, window_s: float = RATE_WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._hits: dict[str, collections.deque[float]] = {}

    def admit(self, key: str) -> float:
        """0 when admitted (and counted); else the seconds until the next would be."""
        now = self.clock.since_boot()
        hits = self._hits.setdefault(key, collections.deque())
        while hits and now - hits[0] >= self.window_s:
            hits.popleft()
        if len(hits) >= self.limit:
            return max(0.001, hits[0] + self.window_s - now)
        hits.append(now)
        return 0.0


UNKNOWN = UserRef(uid="unknown", name="unknown")


class StepUpService:
    """Decides step-up requests: a recent verification, else a fresh one, else a refusal."""

    def __init__(
        self,
        *,
        signer: AssertionSigner,
        session: SessionView,
        verify_now: VerifyNow,
        audit: Audit,
        device: DeviceInfo,
        clock: Clock,
        settings: StepUpSettings,
    ) -> None:
        self.signer = signer
        self.session = session
        self.verify_now = verify_now
        self.audit = audit
        self.device = device
        self.clock = clock
        self.settings = settings
        self.limiter = RateLimiter(settings.rate_limit_per_minute, clock)
        self._verifying: asyncio.Future[VerifyResult] | None = None
        # One worker: the camera runs one check at a time, and closing does not wait for it.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="stepup-verify"
        )

    def close(self) -> None:
        """Stop taking face checks (one under way finishes on its own; its answer is dropped)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- transport-level checks (the server calls these) -----------------------------------

    def admit(self, peer: Peer) -> Reply | None:
        """The rate limit: None when the peer may go on, else the (audited) 429 reply."""
        wait = self.limiter.admit(peer.rate_key)
        if wait <= 0:
            return None
        seconds = math.ceil(wait)
        return self.reject(
            peer,
            refusal(
                429,
                "rate_limited",
                f"too many requests: try again in {seconds} s",
                {"Retry-After": str(seconds)},
            ),
        )

    def reject(self, peer: Peer, reply: Reply, *, action: str = "") -> Reply:
        """Audit a request refused before any verification, and return ``reply``."""
        reason = str(reply.body.get("reason", reply.body.get("error", "")))
        self._audit_quietly(
            self._event(UNKNOWN, False, f"request refused: {reason}", peer, reply.status, action)
        )
        return reply

    # --- the request ---------------------------------------------------------------------

    async def handle(self, peer: Peer, body: bytes) -> Reply:
        """Answer one request body from an admitted peer (always audited)."""
        try:
            request = StepUpRequest.model_validate_json(body)
        except ValidationError as exc:
            return self.reject(peer, refusal(400, "bad_request", _validation_reason(exc)))
        if request.max_age_s > self.settings.max_age_limit_s:
            return self.reject(
                peer,
                refusal(
                    400,
                    "bad_request",
                    f"max_age_s must be at most {self.settings.max_age_limit_s} on this device",
                ),
                action=request.action,
            )
        user = self.session.current_user()
        if user is None:
            return self._refuse(
                peer, request, UNKNOWN, 403, "no_session", "nobody is signed in on this terminal"
            )
        recent = self._recent(user, request.max_age_s)
        if recent is not None:
            return self._issue(peer, request, user, recent.wall, recent.amr, path="recent")
        return await self._verify(peer, request, user)

    def _recent(self, user: SessionUser, max_age_s: int) -> Verification | None:
        verification = self.session.last_verified_at(user.uid)
        if verification is None or verification.uid != user.uid or not verification.amr:
            return None
        age = self.clock.since_boot() - verification.since_boot
        return verification if 0 <= age <= max_age_s else None

    async def _verify(self, peer: Peer, request: StepUpRequest, user: SessionUser) -> Reply:
        if self._verifying is not None and not self._verifying.done():
            return self._refuse(
                peer,
                request,
                user.ref(),
                409,
                "busy",
                "another verification is in progress: try again when it has finished",
            )
        loop = asyncio.get_running_loop()
        timeout = self.settings.verify_timeout_s
        future = loop.run_in_executor(
            self._executor, self.verify_now, request.action, user, timeout
        )
        # The camera is busy until verify_now returns, even when this request gives up on it.
        self._verifying = future
        future.add_done_callback(_consume)
        try:
            result = await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return self._refuse(
                peer, request, user.ref(), 403, "timeout", "the face check took too long"
            )
        except Exception:
            log.exception("step-up verification for %s failed", user.uid)
            return self._refuse(
                peer, request, user.ref(), 503, "unavailable", "the face check is unavailable"
            )
        if not result.granted:
            reason = result.reason or "face not verified"
            return self._refuse(peer, request, user.ref(), 403, "denied", reason)
        if result.user is None or result.user.uid != user.uid:
            return self._refuse(
                peer, request, user.ref(), 403, "denied", "the face checked was not the session's"
            )
        still = self.session.current_user()
        if still is None or still.uid != user.uid:
            return self._refuse(
                peer, request, user.ref(), 403, "denied", "the session changed during the check"
            )
        when = result.wall if result.wall is not None else self.clock.wall()
        return self._issue(peer, request, user, when, result.amr, path="fresh")

    def _issue(
        self,
        peer: Peer,
        request: StepUpRequest,
        user: SessionUser,
        auth_time: float,
        amr: tuple[str, ...],
        *,
        path: str,
    ) -> Reply:
        assertion = self.signer.sign(
            subject=user.uid,
            name=user.name,
            action=request.action,
            auth_time=auth_time,
            amr=amr,
            nonce=request.nonce,
        )
        event = self._event(
            user.ref(),
            True,
            f"assertion issued ({path} verification)",
            peer,
            200,
            request.action,
            {"jti": assertion.jti, "max_age_s": request.max_age_s, "verification": path},
        )
        try:
            self.audit(event)
        except Exception:
            log.exception("cannot audit a step-up grant; no assertion handed out")
            return refusal(503, "unavailable", "the audit trail cannot be written: try again")
        return Reply(
            200,
            {
                "assertion": assertion.token,
                "token_type": "JWT",
                "expires_in": assertion.expires_at - assertion.issued_at,
                "verification": path,
            },
        )

    def _refuse(
        self,
        peer: Peer,
        request: StepUpRequest,
        user: UserRef,
        status: int,
        error: str,
        reason: str,
    ) -> Reply:
        self._audit_quietly(
            self._event(
                user,
                False,
                reason,
                peer,
                status,
                request.action,
                {"max_age_s": request.max_age_s},
            )
        )
        return refusal(status, error, reason)

    def _event(
        self,
        user: UserRef,
        success: bool,
        reason: str,
        peer: Peer,
        status: int,
        action: str,
        extra: dict[str, Any] | None = None,
    ) -> AuditEvent:
        details: dict[str, Any] = {
            "client": peer.label,
            "http_status": status,
            "audience": self.signer.audience,
        }
        if action:
            details["action"] = action
        details.update(extra or {})
        return events.authentication(
            wall=self.clock.wall(),
            device=self.device,
            user=user,
            success=success,
            factor=FACTOR,
            reason=reason,
            extra=details,
        )

    def _audit_quietly(self, event: AuditEvent) -> None:
        try:
            self.audit(event)
        except Exception:
            log.exception("cannot audit a refused step-up request: %s", event.summary)


def _consume(future: asyncio.Future[VerifyResult]) -> None:
    """Retrieve the outcome of a check nobody waits for any more (no 'never retrieved' noise)."""
    if not future.cancelled() and future.exception() is not None:
        log.debug("an abandoned step-up check failed: %s", future.exception())


def _validation_reason(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "body"
        problems.append(f"{where}: {err['msg']}")
    return "malformed request: " + "; ".join(problems[:5])
