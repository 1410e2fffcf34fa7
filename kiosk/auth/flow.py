"""The sign-in flow as a state machine: PIN first, then the face, never either alone.

::

    idle ──staff no + PIN──▶ face ──liveness passed + 1:1 match──▶ granted
      ▲                        │  └─ TOTP code / supervisor override ─▶ granted
      └── denied / locked ◀────┘  (no match, liveness failed, timed out)

* The lockout is checked before anything else: a locked user's PIN is not even
  verified, and no capture starts.
* An unknown staff number costs the same time as a known one (a dummy hash)
  and gets the same answer as a wrong PIN, so the keypad does not reveal who
  exists. It is audited, but no user's counter moves.
* Wrong PINs, unmatched faces, failed liveness, wrong fallback codes and
  attempts that time out all count as failures of the claimed user; a grant
  resets the count. Malformed input (letters, too long) is refused and not
  counted.
* Every attempt has a hard timeout from the moment the PIN is accepted.
* What the person sees is an :class:`Outcome`: a phase, a message they can
  act on, a prompt and a progress — never a score. The score goes only into
  the audit event.

The flow performs no I/O: it reads through the repository, keeps time with the
injected clock, and hands each decision's writes to ``repository.commit`` as
one :class:`~kiosk.auth.model.Change`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np
import pyotp

from kiosk.auth import events, lockout
from kiosk.auth.clock import Clock
from kiosk.auth.crypto import CorruptRecordError, PinHasher
from kiosk.auth.events import DeviceInfo, UserRef
from kiosk.auth.liveness import LivenessChecker, LivenessSession, LivenessStatus
from kiosk.auth.model import (
    TOTP_RE,
    AuthRepository,
    Change,
    InvalidInputError,
    Role,
    User,
    check_pin_format,
    check_staff_no_format,
)
from kiosk.vision.embedding import best_match
from kiosk.vision.types import DepthFrame, FaceObservation, FloatArray

log = logging.getLogger(__name__)

TOTP_STEP_S = 30


class Phase(Enum):
    IDLE = "idle"
    FACE = "face"
    GRANTED = "granted"
    DENIED = "denied"
    LOCKED = "locked"


@dataclass(frozen=True)
class FlowPolicy:
    """Tunables of the flow (from the ``auth`` settings)."""

    threshold: float = 0.55
    attempt_timeout_s: float = 20.0
    #: Usable frames below the threshold after which the face is refused early.
    max_unmatched_frames: int = 8
    lockout: lockout.LockoutPolicy = field(default_factory=lockout.LockoutPolicy)


@dataclass(frozen=True)
class Outcome:
    """What the screen shows after an input. Never carries a score."""

    phase: Phase
    message: str
    user: str | None = None
    prompt: str = ""
    progress: float = 0.0
    locked_for_s: float = 0.0
    fallback: bool = False  # the TOTP / supervisor entry may be offered


@dataclass(frozen=True)
class Grant:
    """Who was just granted and how: what the daemon opens a session with (never shown)."""

    user: User
    factor: str  # "pin+face", "pin+totp", "pin+supervisor"
    wall: float
    since_boot: float
    templates: tuple[FloatArray, ...] = ()  # the user's templates when the face was matched

    @property
    def face_verified(self) -> bool:
        """True when the face and liveness were checked (not a fallback)."""
        return self.factor == "pin+face"


MSG_NOT_RECOGNISED = "Staff number or PIN not recognised. Try again."
MSG_FACE = "Face not recognised. Try again, or use your code."
MSG_LIVENESS = "Could not confirm a live person. Try again and follow the prompt."
MSG_TIMEOUT = "Timed out. Enter your PIN to try again."
MSG_NO_FACE_ENROLLED = "No face enrolled for you: enter your code or ask a supervisor."
MSG_FACE_UNAVAILABLE = "Face check unavailable: enter your code or ask a supervisor."
MSG_CODE = "Code not accepted."
MSG_ABANDONED = "The camera stopped. Enter your PIN to try again."
MSG_OVERRIDE = "Supervisor override refused."
MSG_CANCELLED = "Cancelled. It counts as a failed attempt: the face check had begun."


def locked_message(seconds: float) -> str:
    minutes = max(1, int(np.ceil(seconds / 60.0)))
    unit = "minute" if minutes == 1 else "minutes"
    return f"Too many failed attempts. Try again in {minutes} {unit}, or ask a supervisor."


@dataclass
class _Attempt:
    user: User
    deadline: float
    liveness: LivenessSession
    templates: list[FloatArray]
    track: int | None = None
    unmatched: int = 0
    face_usable: bool = True
    faces_seen: int = 0


class AuthFlow:
    """One kiosk's sign-in state machine."""

    def __init__(
        self,
        repository: AuthRepository,
        hasher: PinHasher,
        clock: Clock,
        *,
        device: DeviceInfo,
        liveness: LivenessChecker,
        policy: FlowPolicy | None = None,
        totp_factory: Callable[[str], pyotp.TOTP] = pyotp.TOTP,
    ) -> None:
        self.repo = repository
        self.hasher = hasher
        self.clock = clock
        self.device = device
        self.liveness = liveness
        self.policy = policy or FlowPolicy()
        self._totp_factory = totp_factory
        self.phase = Phase.IDLE
        self._attempt: _Attempt | None = None
        self._grant_record: Grant | None = None

    # --- queries ----------------------------------------------------------------------------

    @property
    def wants_embedding(self) -> bool:
        """True while the flow matches faces: the caller should embed observations."""
        return self.phase is Phase.FACE and self._attempt is not None and self._attempt.face_usable

    @property
    def claimed_user(self) -> str | None:
        return self._attempt.user.name if self._attempt else None

    def take_grant(self) -> Grant | None:
        """The grant the last decision made, once (None when it was not a grant)."""
        grant, self._grant_record = self._grant_record, None
        return grant

    # --- inputs -----------------------------------------------------------------------------

    def enter_pin(self, staff_no: str, pin: str) -> Outcome:
        """The claim: staff number and PIN. Starts the face step when both are right."""
        check_staff_no_format(staff_no)
        check_pin_format(pin)
        if self._attempt is not None:
            self._close_undecided("a new PIN was entered before a decision")
        user = self.repo.user_by_staff_no(staff_no)
        if user is None or user.pin is None:
            self.hasher.burn(pin)
            anon = UserRef(uid="unknown", name="unknown", staff_no=staff_no)
            self._commit(
                Change(events=[self._auth_event(anon, False, "pin", "unknown staff number")])
            )
            return self._end(Phase.DENIED, MSG_NOT_RECOGNISED)
        locked = self._locked_for(user)
        if locked is not None:
            return locked
        if self.repo.lockout(user.id).open_attempt:
            interrupted = self._fail(
                user, "face", "previous attempt interrupted before a decision", MSG_NOT_RECOGNISED
            )
            if interrupted.phase is Phase.LOCKED:
                return interrupted
        if not self.hasher.verify(pin, user.pin):
            return self._fail(user, "pin", "wrong PIN", MSG_NOT_RECOGNISED)
        opened = replace(self.repo.lockout(user.id), open_attempt=True)
        self._commit(Change(lockouts={user.id: opened}))
        now = self.clock.since_boot()
        attempt = _Attempt(
            user=user,
            deadline=now + self.policy.attempt_timeout_s,
            liveness=self.liveness.start(now),
            templates=[],
        )
        try:
            attempt.templates = self.repo.templates(user)
        except CorruptRecordError as exc:
            log.error("templates of user %s cannot be read: %s", user.ref().uid, exc)
            attempt.face_usable = False
            self._commit(
                Change(
                    events=[
                        self._auth_event(
                            user.ref(),
                            False,
                            "face",
                            "face templates unreadable; fallback offered",
                        )
                    ]
                )
            )
            self._attempt, self.phase = attempt, Phase.FACE
            return Outcome(Phase.FACE, MSG_FACE_UNAVAILABLE, user=user.name, fallback=True)
        self._attempt, self.phase = attempt, Phase.FACE
        if not attempt.templates:
            attempt.face_usable = False
            return Outcome(Phase.FACE, MSG_NO_FACE_ENROLLED, user=user.name, fallback=True)
        return Outcome(
            Phase.FACE,
            "Look at the camera.",
            user=user.name,
            prompt="Look at the camera",
            fallback=user.has_totp,
        )

    def on_frame(self, obs: FaceObservation | None, depth: DepthFrame | None = None) -> Outcome:
        """One frame's observation of the tracked face (embedded while :attr:`wants_embedding`),
        with the aligned depth map when a depth sensor is fitted."""
        timed_out = self._check_timeout()
        if timed_out is not None:
            return timed_out
        attempt = self._attempt
        if self.phase is not Phase.FACE or attempt is None:
            return Outcome(Phase.IDLE, "")  # a decision is reported once, never repeated
        if obs is not None:
            attempt.faces_seen += 1
        if not attempt.face_usable:
            return Outcome(Phase.FACE, "", user=attempt.user.name, fallback=True)
        now = self.clock.since_boot()
        update = attempt.liveness.update(obs, now, depth)
        if update.status is LivenessStatus.FAILED:
            return self._fail(
                attempt.user, "face", f"liveness failed: {update.reason}", MSG_LIVENESS
            )
        if obs is None:
            return self._progress(attempt, "Look at the camera", update.progress)
        if not obs.quality.ok:
            return self._progress(attempt, obs.quality.issues[0].value, update.progress)
        if attempt.track is None:
            attempt.track = obs.track_id
        elif obs.track_id != attempt.track:
            return self._fail(attempt.user, "face", "the face changed during the attempt", MSG_FACE)
        if obs.embedding is None:
            return self._progress(attempt, update.prompt, update.progress)
        score = best_match(obs.embedding, attempt.templates)
        matched = score >= self.policy.threshold
        if not matched:
            attempt.unmatched += 1
            if attempt.unmatched >= self.policy.max_unmatched_frames:
                return self._fail(attempt.user, "face", "face did not match", MSG_FACE, score=score)
        if update.status is LivenessStatus.PASSED:
            if matched:
                return self._grant(attempt.user, "pin+face", "face matched, liveness passed", score)
            return self._fail(attempt.user, "face", "face did not match", MSG_FACE, score=score)
        return self._progress(attempt, update.prompt, update.progress)

    def tick(self) -> Outcome:
        """Let time pass without a frame (ends an attempt past its deadline)."""
        timed_out = self._check_timeout()
        if timed_out is not None:
            return timed_out
        if self.phase is not Phase.FACE:
            return Outcome(Phase.IDLE, "")
        return Outcome(self.phase, "", user=self.claimed_user)

    def enter_totp(self, code: str) -> Outcome:
        """Fallback: the user's TOTP code instead of the face (after their PIN)."""
        timed_out = self._check_timeout()
        if timed_out is not None:
            return timed_out
        attempt = self._require_attempt()
        if not isinstance(code, str) or not TOTP_RE.fullmatch(code):
            raise InvalidInputError("a code is 6 digits")
        user = attempt.user
        record = self.repo.totp(user)
        if record is None:
            return Outcome(
                Phase.FACE,
                "No code is set up for you: ask a supervisor.",
                user=user.name,
                fallback=True,
            )
        totp = self._totp_factory(record.secret)
        wall = self.clock.wall()
        step = int(wall // TOTP_STEP_S)
        for candidate in (step, step - 1, step + 1):
            if record.last_step is not None and candidate <= record.last_step:
                continue  # a code is good once
            if totp.verify(code, for_time=candidate * TOTP_STEP_S, valid_window=0):
                return self._grant(
                    user, "pin+totp", "fallback code accepted", None, totp_step=candidate
                )
        return self._fail(user, "totp", "fallback code not accepted", MSG_CODE)

    def supervisor_override(self, staff_no: str, pin: str) -> Outcome:
        """Fallback: a supervisor vouches with their own staff number and PIN."""
        timed_out = self._check_timeout()
        if timed_out is not None:
            return timed_out
        attempt = self._require_attempt()
        check_staff_no_format(staff_no)
        check_pin_format(pin)
        user = attempt.user
        supervisor = self.repo.user_by_staff_no(staff_no)
        # Every refusal looks the same, so the keypad does not reveal who is a supervisor,
        # and every refusal costs the requester a failure, so overrides cannot be guessed.
        if (
            supervisor is None
            or supervisor.pin is None
            or supervisor.role is not Role.SUPERVISOR
            or supervisor.id == user.id
        ):
            self.hasher.burn(pin)
            return self._fail(
                user,
                "pin+supervisor",
                f"override by staff number {staff_no}, not a supervisor",
                MSG_OVERRIDE,
            )
        sup_state = lockout.checkpoint(self.repo.lockout(supervisor.id), self.clock)
        if sup_state.remaining_s > 0:
            self.hasher.burn(pin)
            self._commit(Change(lockouts={supervisor.id: sup_state}))
            return self._fail(
                user,
                "pin+supervisor",
                f"override by {supervisor.ref().uid}, who is locked out",
                MSG_OVERRIDE,
            )
        if not self.hasher.verify(pin, supervisor.pin):
            state, locked_now = lockout.register_failure(sup_state, self.clock, self.policy.lockout)
            # the supervisor's own sign-in, if one is open elsewhere, still counts when undecided
            state = replace(state, open_attempt=sup_state.open_attempt)
            change = Change(
                lockouts={supervisor.id: state},
                events=[
                    self._auth_event(
                        supervisor.ref(),
                        False,
                        "pin",
                        f"wrong supervisor PIN overriding for {user.ref().uid}",
                    )
                ],
            )
            if locked_now:
                change.events.extend(self._lock_events(supervisor, state))
            self._commit(change)
            return self._fail(
                user,
                "pin+supervisor",
                f"wrong PIN of supervisor {supervisor.ref().uid}",
                MSG_OVERRIDE,
            )
        return self._grant(
            user,
            "pin+supervisor",
            f"supervisor override by {supervisor.ref().uid}",
            None,
            extra={"supervisor": supervisor.ref().uid},
            also_reset=supervisor.id,
        )

    def abandon(self, reason: str) -> Outcome:
        """End the attempt because the device failed (the camera stopped): audited, not counted.

        A hardware fault is not the person's failed attempt, so it does not move
        their lockout counter; they must start again with their PIN.
        """
        attempt = self._attempt
        if self.phase is not Phase.FACE or attempt is None:
            return Outcome(self.phase, "")
        closed = replace(self.repo.lockout(attempt.user.id), open_attempt=False)
        self._commit(
            Change(
                lockouts={attempt.user.id: closed},
                events=[self._auth_event(attempt.user.ref(), False, "face", reason)],
            )
        )
        return self._end(Phase.DENIED, MSG_ABANDONED)

    def cancel(self) -> Outcome:
        """The person pressed cancel. Free before the camera saw a face; after, it counts
        as a failure — otherwise cancelling just before a denial would give endless tries."""
        if self._attempt is not None:
            outcome = self._close_undecided("cancelled after the face check began")
            if outcome is not None:
                return outcome
        self._attempt = None
        self.phase = Phase.IDLE
        return Outcome(Phase.IDLE, "")

    def checkpoint(self) -> None:
        """Re-record every lockout's remainder now; the daemon calls this each minute.

        A reboot then carries over what was left at the last checkpoint instead
        of the remainder recorded when the lock began.
        """
        for user_id in self.repo.locked_user_ids():
            state = self.repo.lockout(user_id)
            updated = lockout.checkpoint(state, self.clock)
            if updated != state:
                self._commit(Change(lockouts={user_id: updated}))

    def reset(self) -> None:
        """Back to idle after a result was shown."""
        self._attempt = None
        self.phase = Phase.IDLE

    # --- internals --------------------------------------------------------------------------

    def _require_attempt(self) -> _Attempt:
        if self.phase is not Phase.FACE or self._attempt is None:
            raise InvalidInputError("enter your staff number and PIN first")
        return self._attempt

    def _check_timeout(self) -> Outcome | None:
        attempt = self._attempt
        if self.phase is Phase.FACE and attempt and self.clock.since_boot() > attempt.deadline:
            return self._fail(attempt.user, "face", "attempt timed out", MSG_TIMEOUT)
        return None

    def _progress(self, attempt: _Attempt, prompt: str, progress: float) -> Outcome:
        return Outcome(
            Phase.FACE,
            prompt,
            user=attempt.user.name,
            prompt=prompt,
            progress=progress,
            fallback=attempt.user.has_totp,
        )

    def _locked_for(self, user: User) -> Outcome | None:
        state = self.repo.lockout(user.id)
        anchored = lockout.checkpoint(state, self.clock)
        left = anchored.remaining_s
        change = Change()
        if anchored != state:
            change.lockouts[user.id] = anchored
        if left > 0:
            change.events.append(
                self._auth_event(
                    user.ref(),
                    False,
                    "pin",
                    "attempt while locked out (not checked)",
                )
            )
            self._commit(change)
            return self._end(Phase.LOCKED, locked_message(left), locked_for=left)
        if change.lockouts:
            self._commit(change)
        return None

    def _fail(
        self, user: User, factor: str, reason: str, message: str, *, score: float | None = None
    ) -> Outcome:
        state = self.repo.lockout(user.id)
        _, state = lockout.remaining(state, self.clock)
        state, locked_now = lockout.register_failure(state, self.clock, self.policy.lockout)
        change = Change(
            lockouts={user.id: state},
            events=[self._auth_event(user.ref(), False, factor, reason, score=score)],
        )
        if locked_now:
            change.events.extend(self._lock_events(user, state))
        self._commit(change)
        if locked_now:
            return self._end(
                Phase.LOCKED, locked_message(state.remaining_s), locked_for=state.remaining_s
            )
        return self._end(Phase.DENIED, message)

    def _lock_events(self, user: User, state: lockout.LockoutState) -> list[events.AuditEvent]:
        wall = self.clock.wall()
        return [
            events.account_change(
                wall=wall,
                device=self.device,
                user=user.ref(),
                activity_id=events.LOCK,
                reason=f"locked out after {state.failures} failed attempts",
                extra={"lockout_s": state.remaining_s},
            ),
            events.lockout_alert(
                wall=wall,
                device=self.device,
                user=user.ref(),
                failures=state.failures,
                lockout_s=state.remaining_s,
            ),
        ]

    def _grant(
        self,
        user: User,
        factor: str,
        reason: str,
        score: float | None,
        *,
        totp_step: int | None = None,
        extra: dict[str, str] | None = None,
        also_reset: int | None = None,
    ) -> Outcome:
        change = Change(
            lockouts={user.id: lockout.register_success(self.repo.lockout(user.id))},
            events=[self._auth_event(user.ref(), True, factor, reason, score=score, extra=extra)],
        )
        if totp_step is not None:
            change.totp_steps[user.id] = totp_step
        if also_reset is not None:
            still_open = self.repo.lockout(also_reset).open_attempt
            change.lockouts[also_reset] = lockout.LockoutState(open_attempt=still_open)
        self._commit(change)
        attempt = self._attempt
        self._grant_record = Grant(
            user=user,
            factor=factor,
            wall=self.clock.wall(),
            since_boot=self.clock.since_boot(),
            templates=tuple(attempt.templates) if attempt and factor == "pin+face" else (),
        )
        return self._end(Phase.GRANTED, f"Welcome, {user.name}.", user=user.name)

    def _end(
        self, phase: Phase, message: str, *, user: str | None = None, locked_for: float = 0.0
    ) -> Outcome:
        self._attempt = None
        self.phase = Phase.IDLE  # the decision is returned once; the flow waits for a PIN
        return Outcome(phase, message, user=user, locked_for_s=locked_for)

    def _close_undecided(self, reason: str) -> Outcome | None:
        """End an open attempt without a decision: a failure if it saw a face or timed out."""
        attempt = self._attempt
        if attempt is None:
            return None
        timed_out = self.clock.since_boot() > attempt.deadline
        if attempt.faces_seen > 0 or timed_out:
            why = "attempt timed out" if timed_out else reason
            return self._fail(
                attempt.user, "face", why, MSG_TIMEOUT if timed_out else MSG_CANCELLED
            )
        closed = replace(self.repo.lockout(attempt.user.id), open_attempt=False)
        self._commit(Change(lockouts={attempt.user.id: closed}))
        self._attempt = None
        self.phase = Phase.IDLE
        return None

    def _auth_event(
        self,
        user: UserRef,
        success: bool,
        factor: str,
        reason: str,
        *,
        score: float | None = None,
        extra: dict[str, str] | None = None,
    ) -> events.AuditEvent:
        return events.authentication(
            wall=self.clock.wall(),
            device=self.device,
            user=user,
            success=success,
            factor=factor,
            reason=reason,
            score=score,
            extra=extra,
        )

    def _commit(self, change: Change) -> None:
        self.repo.commit(change)
