"""No sequence of PINs, faces, clock jumps and restarts grants while locked out, or on one factor.

A Hypothesis state machine drives the real :class:`AuthFlow` over a real SQLite
file (real :class:`SqliteRepository`, real PIN hashing with cheap parameters, a
:class:`ManualClock`) and keeps a small model of its own next to it. Per user it
holds the consecutive failures, the lockout as :mod:`kiosk.auth.lockout`
documents it, and the store's ``open_attempt`` marker:

* A lockout is measured on the boot clock (wall-clock jumps do nothing). Every
  check of it (a PIN entry, an override by that supervisor, ``flow.checkpoint()``)
  re-records the remainder; after a reboot the last recorded remainder is carried
  over and counting resumes at the first check of the new boot.
* A decision is an event: it is returned once and the flow is idle again.
* An accepted PIN marks the attempt open in the store; a decision closes it.
  An attempt left open (restart, new flow object) counts as one failure at that
  user's next PIN entry; in the same flow, a new PIN or cancel closes it, counted
  when it saw a face or timed out; the camera stopping closes it uncounted.
* Every refused supervisor override costs the requester a failure; a wrong
  supervisor PIN costs the supervisor one as well.

Every input's :class:`Outcome` must be the one the model predicts, and after every
step the audit trail (in order), the persisted lockouts and the flow's own state
must agree with the model.

Faces are synthetic :class:`FaceObservation` objects whose embedding is an
enrolled template plus a little noise (a matching face) or someone else's /
a random vector; the real camera-to-embedding pipeline is tested elsewhere.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyotp
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from kiosk.auth import events
from kiosk.auth.admin import UserAdmin
from kiosk.auth.clock import ManualClock
from kiosk.auth.crypto import KdfParams, PinHasher
from kiosk.auth.events import DeviceInfo
from kiosk.auth.flow import (
    MSG_ABANDONED,
    MSG_CANCELLED,
    MSG_CODE,
    MSG_FACE,
    MSG_LIVENESS,
    MSG_NO_FACE_ENROLLED,
    MSG_NOT_RECOGNISED,
    MSG_OVERRIDE,
    MSG_TIMEOUT,
    TOTP_STEP_S,
    AuthFlow,
    FlowPolicy,
    Outcome,
    Phase,
)
from kiosk.auth.liveness import TrackContinuity
from kiosk.auth.lockout import LockoutPolicy, LockoutState
from kiosk.auth.model import InvalidInputError, Role
from kiosk.secrets import SECRET_BYTES, DeviceKeys
from kiosk.store.db import Database
from kiosk.store.repository import AuditRow, ConsentRecord, SqliteRepository
from kiosk.vision.types import (
    EyeMouth,
    FaceObservation,
    FloatArray,
    Pose,
    Quality,
    QualityIssue,
    Roi,
)

MAX_FAILURES = 3
LOCKOUT_S = 30 * 60.0
TIMEOUT_S = 20.0
MAX_UNMATCHED = 8
LIVENESS_FRAMES = 2
POLICY = FlowPolicy(
    attempt_timeout_s=TIMEOUT_S,
    max_unmatched_frames=MAX_UNMATCHED,
    lockout=LockoutPolicy(max_failures=MAX_FAILURES, lockout_s=LOCKOUT_S),
)
KDF = KdfParams(memory_kib=1024, time_cost=1)
DEVICE = DeviceInfo(device_id="kiosk-stateful", site="test bench")
MODEL = "embedding-test"
DIM = 192
ADMIN = "test-admin"
SCORE_RE = re.compile(r"0\.\d")  # what a similarity score would look like on screen
PIN_RE = re.compile(r"[0-9]{4,8}")
STAFF_NO_RE = re.compile(r"[0-9]{1,12}")
TOTP_RE = re.compile(r"[0-9]{6}")

MSG_NO_CODE = "No code is set up for you: ask a supervisor."
IDLE = Outcome(Phase.IDLE, "")

# Reasons of 3002 events the model spells out; any other reason (which face check failed,
# which code, which override) it records as OTHER.
INTERRUPTED = "previous attempt interrupted before a decision"
CANCELLED = "cancelled after the face check began"
NEW_PIN = "a new PIN was entered before a decision"
TIMED_OUT = "attempt timed out"
WHILE_LOCKED = "attempt while locked out (not checked)"
UNKNOWN = "unknown staff number"
WRONG_PIN = "wrong PIN"
CAMERA_STOPPED = "the camera stopped before a decision"
EXACT_REASONS = frozenset(
    {INTERRUPTED, CANCELLED, NEW_PIN, TIMED_OUT, WHILE_LOCKED, UNKNOWN, WRONG_PIN, CAMERA_STOPPED}
)
OTHER = "*"

#: One audit row as the model sees it: (kind, user uid, status, factor, reason).
TrailRow = tuple[str, str, str, str, str]


@dataclass(frozen=True)
class Person:
    name: str
    staff_no: str
    pin: str
    role: Role = Role.STAFF
    totp: bool = False
    templates: int = 3


PEOPLE = (
    Person("alice", "1001", "2468", totp=True),
    Person("bob", "1002", "135790"),
    Person("carol", "1003", "86420", role=Role.SUPERVISOR),
    Person("dave", "1004", "11112222", templates=0),  # no face enrolled: fallbacks only
)
BY_NAME = {p.name: p for p in PEOPLE}
BY_STAFF_NO = {p.staff_no: p for p in PEOPLE}
ENROLLED = tuple(p.name for p in PEOPLE if p.templates)
SUPERVISOR = BY_NAME["carol"]
ALICE, BOB, CAROL, DAVE = PEOPLE


def _unit(vectors: np.ndarray) -> FloatArray:
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    unit: FloatArray = (vectors / norms).astype(np.float32)
    return unit


_RNG = np.random.default_rng(20_240_601)
TEMPLATES: dict[str, FloatArray] = {
    p.name: _unit(_RNG.normal(size=(p.templates, DIM))) for p in PEOPLE if p.templates
}


def _best_scores(vector: FloatArray) -> dict[str, float]:
    return {name: float(np.max(t @ vector)) for name, t in TEMPLATES.items()}


def face_of(name: str, seed: int) -> FloatArray:
    """An embedding of ``name``: one of their templates plus a little noise."""
    rng = np.random.default_rng(seed)
    templates = TEMPLATES[name]
    vector = _unit(templates[seed % len(templates)] + rng.normal(0.0, 0.02, DIM))
    scores = _best_scores(vector)
    assert scores[name] >= 0.8  # well above the 0.55 threshold
    assert all(s <= 0.4 for n, s in scores.items() if n != name)
    return vector


def stranger(seed: int) -> FloatArray:
    """An embedding of nobody enrolled."""
    vector = _unit(np.random.default_rng(seed).normal(size=DIM))
    assert all(s <= 0.4 for s in _best_scores(vector).values())
    return vector


def observation(
    embedding: FloatArray | None, track_id: int, *, usable: bool = True
) -> FaceObservation:
    """One frame's synthetic observation of a face."""
    issues = () if usable else (QualityIssue.TOO_DARK,)
    return FaceObservation(
        box=(200.0, 120.0, 440.0, 360.0),
        score=0.97,
        keypoints=np.zeros((6, 2), np.float32),
        landmarks=np.zeros((468, 3), np.float32),
        presence=0.99,
        pose=Pose(yaw=0.0, pitch=0.0, roll=0.0),
        eyes=EyeMouth(ear_right=0.3, ear_left=0.3, mouth=0.05),
        quality=Quality(
            face_px=240.0, brightness=120.0, dark_fraction=0.0, sharpness=150.0, issues=issues
        ),
        track_id=track_id,
        roi=Roi(cx=320.0, cy=240.0, size=300.0, angle=0.0),
        aligned=np.zeros((112, 112, 3), np.uint8),
        embedding=embedding,
    )


def locked_text(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60.0))
    unit = "minute" if minutes == 1 else "minutes"
    return f"Too many failed attempts. Try again in {minutes} {unit}, or ask a supervisor."


#: What a failure that has just locked the user shows.
LOCKED_NOW = Outcome(Phase.LOCKED, locked_text(LOCKOUT_S), locked_for_s=LOCKOUT_S)


def assert_no_score(outcome: Outcome) -> None:
    assert not SCORE_RE.search(outcome.message), outcome.message
    assert not SCORE_RE.search(outcome.prompt), outcome.prompt


class Kiosk:
    """The kiosk's pieces over one database file; :meth:`restart` is a new process."""

    def __init__(self, directory: Path, clock: ManualClock) -> None:
        self.path = directory / "kiosk.db"
        self.keys = DeviceKeys.derive(os.urandom(SECRET_BYTES))
        self.clock = clock
        self._open()
        self.ids: dict[str, int] = {}
        for person in PEOPLE:
            user = self.admin.add(
                person.name, person.pin, staff_no=person.staff_no, role=person.role
            )
            self.ids[person.name] = user.id
            if person.templates:
                wall = clock.wall()
                self.repo.replace_templates(
                    user,
                    list(TEMPLATES[person.name]),
                    model=MODEL,
                    now_ms=int(wall * 1000),
                    consent=ConsentRecord(
                        text_version="v1",
                        text_sha256=hashlib.sha256(b"consent").hexdigest(),
                        given_ms=int(wall * 1000),
                        recorded_by=ADMIN,
                    ),
                    event=events.account_change(
                        wall=wall,
                        device=DEVICE,
                        user=user.ref(),
                        activity_id=events.MFA_ENABLE,
                        reason="face enrolled",
                        actor=ADMIN,
                    ),
                )
        self.admin.enable_totp(ALICE.name)
        record = self.repo.totp(self.repo.require_user(ALICE.name))
        assert record is not None
        self.totp = pyotp.TOTP(record.secret)

    def _open(self) -> None:
        self.database = Database(self.path)
        self.repo = SqliteRepository(self.database, self.keys)
        self.hasher = PinHasher(self.keys.pin_pepper, KDF)
        self.admin = UserAdmin(self.repo, self.hasher, self.clock, DEVICE, ADMIN)
        self.flow = self.new_flow()

    def new_flow(self) -> AuthFlow:
        """A flow object over the same store (what a restarted process builds)."""
        return AuthFlow(
            self.repo,
            self.hasher,
            self.clock,
            device=DEVICE,
            liveness=TrackContinuity(frames=LIVENESS_FRAMES),
            policy=POLICY,
        )

    def restart(self) -> None:
        """A new process: the open attempt is lost, the database stays."""
        self.database.close()
        self._open()

    def close(self) -> None:
        self.database.close()

    def uid(self, name: str) -> str:
        return f"user:{self.ids[name]}"

    def audit(self) -> list[AuditRow]:
        return self.repo.audit(limit=1_000_000)

    def trail(self) -> list[TrailRow]:
        return [trail_row(r) for r in self.audit()]

    def failure_reasons(self, name: str) -> list[str]:
        """The reasons of ``name``'s failed 3002 events, in order."""
        return [
            r.payload["status_detail"]
            for r in self.audit()
            if r.class_uid == events.AUTHENTICATION
            and r.user_uid == self.uid(name)
            and r.status == "failure"
        ]

    def code(self, step: int) -> str:
        return self.totp.at(step * TOTP_STEP_S)


def trail_row(row: AuditRow) -> TrailRow:
    """An audit row as the model records it."""
    if row.class_uid == events.AUTHENTICATION:
        reason = row.payload["status_detail"]
        factor = row.payload["unmapped"]["factor"]
        return (
            "auth",
            row.user_uid,
            row.status,
            factor,
            reason if reason in EXACT_REASONS else OTHER,
        )
    if row.class_uid == events.DETECTION_FINDING:
        return ("alert", row.user_uid, "", "", "")
    activity = row.payload.get("activity_id")
    if row.class_uid == events.ACCOUNT_CHANGE and activity == events.LOCK:
        return ("lock", row.user_uid, "", "", "")
    if row.class_uid == events.ACCOUNT_CHANGE and activity == events.UNLOCK:
        return ("unlock", row.user_uid, "", "", "")
    return ("other", row.user_uid, str(row.class_uid), str(activity), "")


def auth_row(uid: str, status: str, factor: str, reason: str = OTHER) -> TrailRow:
    return ("auth", uid, status, factor, reason)


# --- the model ------------------------------------------------------------------------------


@dataclass
class LockModel:
    """One user's failures, lockout and open-attempt marker, as the flow's rules have them."""

    failures: int = 0
    recorded_s: float = 0.0  # lockout left at the anchor (0: not locked)
    boot: str = ""  # the boot the anchor belongs to
    anchor_s: float = 0.0  # boot-clock time of the anchor (the last check)
    #: The documented guarantee on its own: boot seconds the lock must still last (a reboot
    #: pauses it, wall jumps do nothing). The exact model may lock longer, never shorter.
    floor_s: float = 0.0
    #: An attempt of this user was opened (PIN accepted) and not closed yet.
    open: bool = False


@dataclass
class AttemptModel:
    person: Person
    deadline: float
    face_usable: bool
    track: int | None = None
    frames: int = 0  # usable frames of the tracked face (what the liveness check counts)
    unmatched: int = 0
    faces: int = 0  # frames with a face at all (obs not None): after one, closing counts


any_pin = st.from_regex(PIN_RE, fullmatch=True)
FACE_KINDS = ["claimant", "claimant", "enrolled", "stranger", "none", "poor", "unembedded"]
face_args = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(FACE_KINDS),
        "who": st.sampled_from(ENROLLED),
        "new_track": st.booleans(),
        "cut": st.sampled_from([False, False, False, True]),  # every frame another face
        "frames": st.integers(1, 3),
        "dt": st.sampled_from([0.0, 0.125, 0.5, 3.0, 12.0]),
        "seed": st.integers(0, 2**32 - 1),
    }
)
totp_args = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["current", "previous", "next", "stale", "replay", "random"]),
        "random_code": st.from_regex(TOTP_RE, fullmatch=True),
    }
)
override_args = st.fixed_dictionaries(
    {
        "staff_no": st.one_of(
            st.just(SUPERVISOR.staff_no),
            st.sampled_from([p.staff_no for p in PEOPLE]),
            st.from_regex(STAFF_NO_RE, fullmatch=True),
        ),
        "right": st.booleans(),
        "other": any_pin,
    }
)
INTERRUPTIONS = ["restart", "reboot", "new flow", "cancel", "reset", "camera stopped", "new PIN"]


class AuthFlowMachine(RuleBasedStateMachine):
    """PINs (right, wrong, unknown staff number, malformed), faces, codes, supervisors, time,
    wall-clock jumps, checkpoints, cancels, restarts and reboots, in any order, against a
    model of what must happen.

    Every outcome is compared with the model's, so a grant the model does not predict fails
    at once; the model grants only (a) on an attempt that this user's right PIN opened while
    they were not locked out, and then only (b) on liveness passed with their own face, their
    fresh code, or another supervisor's right PIN.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="kiosk-flow-"))
        self.clock = ManualClock()
        self.kiosk = Kiosk(self.tmp, self.clock)
        self.locks = {p.name: LockModel() for p in PEOPLE}
        self.attempt: AttemptModel | None = None
        self.track = 1
        self.totp_last_step: int | None = None
        self.accepted_codes: list[str] = []
        # The audit trail the model expects, in order (enrolment rows first, as written).
        self.trail: list[TrailRow] = self.kiosk.trail()

    def teardown(self) -> None:
        self.kiosk.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- model of the lockout ----------------------------------------------------------------

    def _remaining(self, name: str, *, save: bool) -> float:
        """Lockout left now (lockout.remaining); with ``save``, what the flow then records:
        on a new boot the remainder is anchored at this check, a served lock is cleared."""
        m = self.locks[name]
        if m.recorded_s <= 0:
            return 0.0
        now, boot = self.clock.since_boot(), self.clock.boot_id()
        if m.boot != boot:  # first check of a new boot: the recorded remainder, from now on
            if save:
                m.boot, m.anchor_s = boot, now
            return m.recorded_s
        left = m.recorded_s - max(0.0, now - m.anchor_s)
        if left > 0:
            return left
        if save:  # served: the lock ends and the count starts again (the marker stays)
            m.failures, m.recorded_s, m.floor_s = 0, 0.0, 0.0
        return 0.0

    def _check(self, name: str) -> float:
        """A lock check that saves (lockout.checkpoint): the remainder is re-recorded now, so
        a reboot after it carries over what was left at this moment."""
        left = self._remaining(name, save=True)
        if left > 0:
            m = self.locks[name]
            m.recorded_s, m.boot, m.anchor_s = left, self.clock.boot_id(), self.clock.since_boot()
        return left

    def _register_failure(
        self, name: str, factor: str, reason: str = OTHER, *, keep_open: bool = False
    ) -> bool:
        """One more failure of ``name``, audited; whether it has just locked them.

        A counted failure closes the user's own open attempt, except when it is a
        supervisor's failed override for someone else (``keep_open``): their own
        interrupted sign-in must still count at their next PIN.
        """
        self._remaining(name, save=True)
        m = self.locks[name]
        m.failures += 1
        if not keep_open:
            m.open = False
        uid = self.kiosk.uid(name)
        self.trail.append(auth_row(uid, "failure", factor, reason))
        if m.failures < MAX_FAILURES:
            return False
        m.recorded_s = m.floor_s = LOCKOUT_S
        m.boot, m.anchor_s = self.clock.boot_id(), self.clock.since_boot()
        self.trail.append(("lock", uid, "", "", ""))
        self.trail.append(("alert", uid, "", "", ""))
        event("lockout")
        return True

    def _clear(self, name: str) -> None:
        """A grant (or an administrator's unlock): count, lockout and marker cleared."""
        self.locks[name] = LockModel()

    # --- expectations -------------------------------------------------------------------------

    def _expect(self, outcome: Outcome, expected: Outcome) -> None:
        assert_no_score(outcome)
        if outcome.phase is Phase.GRANTED and expected.phase is not Phase.GRANTED:
            raise AssertionError(f"granted when the model expected {expected}: {outcome}")
        assert outcome == expected

    def _expect_failure(
        self,
        outcome: Outcome,
        message: str,
        *,
        factor: str = "face",
        reason: str = OTHER,
        name: str | None = None,
    ) -> None:
        """The claim fails: counted against ``name`` (the open attempt's user); it ends."""
        if name is None:
            assert self.attempt is not None
            name = self.attempt.person.name
        self.attempt = None
        event(f"failure: {message}")
        locked = self._register_failure(name, factor, reason)
        self._expect(outcome, LOCKED_NOW if locked else Outcome(Phase.DENIED, message))

    def _expect_timeout(self, outcome: Outcome) -> None:
        self._expect_failure(outcome, MSG_TIMEOUT, reason=TIMED_OUT)

    def _expect_grant(self, outcome: Outcome, factor: str, supervisor: str | None = None) -> None:
        # Both factors: an attempt exists only after this user's right PIN, while not locked.
        attempt = self.attempt
        assert attempt is not None
        name = attempt.person.name
        assert self.locks[name].floor_s == 0
        self.attempt = None
        self._clear(name)
        if supervisor is not None:  # a vouching supervisor's count is cleared, not their sign-in
            still_open = self.locks[supervisor].open
            self._clear(supervisor)
            self.locks[supervisor].open = still_open
        self.trail.append(auth_row(self.kiosk.uid(name), "success", factor))
        event(f"grant {factor}")
        self._expect(outcome, Outcome(Phase.GRANTED, f"Welcome, {name}.", user=name))

    def _expect_progress(self, outcome: Outcome, prompt: str, progress: float) -> None:
        assert self.attempt is not None
        person = self.attempt.person
        self._expect(
            outcome,
            Outcome(
                Phase.FACE,
                prompt,
                user=person.name,
                prompt=prompt,
                progress=progress,
                fallback=person.totp,
            ),
        )

    def _timed_out(self) -> bool:
        return self.attempt is not None and self.clock.since_boot() > self.attempt.deadline

    def _close_undecided(self, reason: str) -> Outcome | None:
        """This flow's open attempt ends without a decision (a new PIN, cancel): counted,
        with the outcome it shows, if it saw a face or its deadline passed; else free."""
        attempt = self.attempt
        assert attempt is not None
        self.attempt = None
        name = attempt.person.name
        timed_out = self.clock.since_boot() > attempt.deadline
        if attempt.faces or timed_out:
            event("undecided attempt counted")
            if self._register_failure(name, "face", TIMED_OUT if timed_out else reason):
                return LOCKED_NOW
            return Outcome(Phase.DENIED, MSG_TIMEOUT if timed_out else MSG_CANCELLED)
        event("undecided attempt free")
        self.locks[name].open = False
        return None

    def _snapshot(self) -> tuple[Any, ...]:
        flow = self.kiosk.flow
        repo = self.kiosk.repo
        return (
            flow.phase,
            flow.claimed_user,
            flow.wants_embedding,
            len(self.kiosk.audit()),
            tuple(repo.lockout(i) for i in self.kiosk.ids.values()),
            self.kiosk.repo.totp(self.kiosk.repo.require_user(ALICE.name)),
        )

    def _refused(self, call: Callable[[], Outcome]) -> None:
        """Malformed input: refused with InvalidInputError, nothing changed or counted."""
        before = self._snapshot()
        with pytest.raises(InvalidInputError):
            call()
        assert self._snapshot() == before

    # --- the claim -----------------------------------------------------------------------------

    def _enter_pin(self, staff_no: str, pin: str) -> None:
        outcome = self.kiosk.flow.enter_pin(staff_no, pin)
        if self.attempt is not None:  # closed first; what that shows is not returned
            self._close_undecided(NEW_PIN)
        person = BY_STAFF_NO.get(staff_no)
        if person is None:
            self.trail.append(auth_row("unknown", "failure", "pin", UNKNOWN))
            self._expect(outcome, Outcome(Phase.DENIED, MSG_NOT_RECOGNISED))
            return
        name = person.name
        floor = self.locks[name].floor_s
        left = self._check(name)
        if floor > 0:  # within the lockout on the boot clock, whatever the PIN: checked first
            assert outcome.phase is Phase.LOCKED, outcome
            assert not self.kiosk.flow.wants_embedding
        if left > 0:  # the PIN is not checked, an open marker is left as it is
            event("PIN while locked out")
            self.trail.append(auth_row(self.kiosk.uid(name), "failure", "pin", WHILE_LOCKED))
            self._expect(outcome, Outcome(Phase.LOCKED, locked_text(left), locked_for_s=left))
            return
        if self.locks[name].open:  # an attempt left open: one failure, before the PIN check
            event("interrupted attempt counted")
            if self._register_failure(name, "face", INTERRUPTED):
                self._expect(outcome, LOCKED_NOW)
                return
        if pin != person.pin:
            self._expect_failure(
                outcome, MSG_NOT_RECOGNISED, factor="pin", reason=WRONG_PIN, name=name
            )
            return
        self.locks[name].open = True
        now = self.clock.since_boot()
        self.attempt = AttemptModel(person, now + TIMEOUT_S, face_usable=bool(person.templates))
        if person.templates:
            expected = Outcome(
                Phase.FACE,
                "Look at the camera.",
                user=person.name,
                prompt="Look at the camera",
                fallback=person.totp,
            )
        else:
            expected = Outcome(Phase.FACE, MSG_NO_FACE_ENROLLED, user=person.name, fallback=True)
        self._expect(outcome, expected)

    @rule(
        person=st.sampled_from(PEOPLE),
        kind=st.sampled_from(["right", "wrong", "unknown staff number"]),
        other=any_pin,
        unknown=st.from_regex(STAFF_NO_RE, fullmatch=True),
    )
    def enter_pin(self, person: Person, kind: str, other: str, unknown: str) -> None:
        if kind == "unknown staff number":
            if unknown in BY_STAFF_NO:
                unknown = "9" + unknown[:11]  # no staff number starts with 9
            self._enter_pin(unknown, other)
        else:
            self._enter_pin(person.staff_no, person.pin if kind == "right" else other)

    @rule(person=st.sampled_from(PEOPLE), pins=st.lists(any_pin, min_size=1, max_size=3))
    def enter_wrong_pins(self, person: Person, pins: list[str]) -> None:
        for pin in pins:
            self._enter_pin(person.staff_no, pin if pin != person.pin else "0000")

    # Both factors, one right after the other (other rules interleave anything between a PIN
    # and a face; these make the decisions common enough to explore what comes after them).

    @rule(person=st.sampled_from(PEOPLE), face=face_args)
    def sign_in_with_face(self, person: Person, face: dict[str, Any]) -> None:
        self._enter_pin(person.staff_no, person.pin)
        kind = face["kind"] if face["kind"] in ("stranger", "enrolled") else "claimant"
        self._show_face(**{**face, "kind": kind, "new_track": True})

    @rule(person=st.sampled_from([ALICE, ALICE, ALICE, BOB, DAVE]), code=totp_args)
    def sign_in_with_code(self, person: Person, code: dict[str, Any]) -> None:
        self._enter_pin(person.staff_no, person.pin)
        self._enter_totp(**code)

    @rule(
        person=st.sampled_from(PEOPLE),
        override=override_args,
        wait=st.sampled_from([0.0, 0.0, 5.0, TIMEOUT_S - 1]),
    )
    def sign_in_with_supervisor(
        self, person: Person, override: dict[str, Any], wait: float
    ) -> None:
        self._enter_pin(person.staff_no, person.pin)
        self._advance(wait)  # time passes for the supervisor's lockout too
        self._supervisor_override(**override)

    @rule(
        person=st.sampled_from(PEOPLE),
        wait=st.sampled_from([TIMEOUT_S - 0.5, TIMEOUT_S, TIMEOUT_S + 0.125, 120.0]),
        then=st.sampled_from(["tick", "face", "code", "supervisor", "cancel"]),
    )
    def sign_in_and_wait(self, person: Person, wait: float, then: str) -> None:
        self._enter_pin(person.staff_no, person.pin)
        self._advance(wait)
        if then == "tick":
            self.tick()
        elif then == "face":
            face: dict[str, Any] = {"kind": "claimant", "who": "alice", "new_track": True}
            face.update(dt=0.0, seed=1)
            self._show_face(**face, frames=2)
        elif then == "code":
            self._enter_totp("current", "000000")
        elif then == "supervisor":
            self._supervisor_override(SUPERVISOR.staff_no, right=True, other="0000")
        else:
            self._cancel()

    @rule(
        person=st.sampled_from(PEOPLE),
        faces=st.sampled_from([0, 0, 1]),
        how=st.sampled_from(INTERRUPTIONS),
        then=st.sampled_from(["same, right PIN", "same, right PIN", "same, wrong PIN", "other"]),
        other=st.sampled_from(PEOPLE),
    )
    def sign_in_and_interrupt(
        self, person: Person, faces: int, how: str, then: str, other: Person
    ) -> None:
        """An attempt that ends undecided (after a face or not), then a PIN, often the same
        person's: where an interrupted attempt is counted."""
        self._enter_pin(person.staff_no, person.pin)
        if faces:
            face: dict[str, Any] = {"kind": "claimant", "who": "alice", "new_track": True}
            face.update(dt=0.0, seed=2)
            self._show_face(**face, frames=faces)
        if how == "restart":
            self.restart()
        elif how == "reboot":
            self.reboot(60)
        elif how == "new flow":
            self.new_flow()
        elif how == "cancel":
            self._cancel()
        elif how == "reset":
            self._reset()
        elif how == "camera stopped":
            self.abandon()
        # ("new PIN": the PIN below closes the attempt itself)
        who = other if then == "other" else person
        self._enter_pin(who.staff_no, "0000" if then == "same, wrong PIN" else who.pin)

    @rule(
        person=st.sampled_from([CAROL, CAROL, ALICE, BOB, DAVE]),
        wait=st.sampled_from([0.0, 60.0, LOCKOUT_S - 60, LOCKOUT_S, LOCKOUT_S + 60]),
        then=st.sampled_from(["own PIN", "vouch", "checkpoint, reboot", "reboot"]),
        requester=st.sampled_from([ALICE, BOB, DAVE]),
        right=st.booleans(),
    )
    def lock_out_then(
        self, person: Person, wait: float, then: str, requester: Person, right: bool
    ) -> None:
        """Someone is locked out (wrong PINs), time passes, then they sign in or vouch for
        someone (every check re-records the remainder), or the kiosk reboots."""
        for _ in range(MAX_FAILURES):
            if self._remaining(person.name, save=False) > 0:
                break
            self._enter_pin(person.staff_no, "0000")
        self._advance(wait)
        if then == "vouch":
            self._enter_pin(requester.staff_no, requester.pin)
            self._supervisor_override(person.staff_no, right=right, other="0000")
            return
        if then == "checkpoint, reboot":
            self.checkpoint()
        if then != "own PIN":
            self.reboot(600)
        self._enter_pin(person.staff_no, person.pin if right else "0000")

    @rule(
        which=st.sampled_from(["pin", "code", "supervisor"]),
        staff_no=st.one_of(st.sampled_from([p.staff_no for p in PEOPLE]), st.text(max_size=14)),
        pin=st.one_of(st.sampled_from([p.pin for p in PEOPLE]), st.text(max_size=10)),
        code=st.one_of(
            st.from_regex(r"[0-9]{0,5}|[0-9]{7,9}", fullmatch=True), st.text(max_size=8)
        ),
    )
    def enter_malformed(self, which: str, staff_no: str, pin: str, code: str) -> None:
        """Malformed input is refused and changes nothing (after the deadline has been checked)."""
        flow = self.kiosk.flow
        if STAFF_NO_RE.fullmatch(staff_no) and PIN_RE.fullmatch(pin):
            pin = pin + "x"
        if TOTP_RE.fullmatch(code):
            code = code + "0"
        call: Callable[[], Outcome] = {
            "pin": lambda: flow.enter_pin(staff_no, pin),
            "code": lambda: flow.enter_totp(code),
            "supervisor": lambda: flow.supervisor_override(staff_no, pin),
        }[which]
        if which != "pin" and self._timed_out():
            self._expect_timeout(call())
            return
        self._refused(call)

    # --- the face ------------------------------------------------------------------------------

    def _frame(self, obs: FaceObservation | None, whose: str | None) -> None:
        outcome = self.kiosk.flow.on_frame(obs)
        attempt = self.attempt
        if self._timed_out():
            self._expect_timeout(outcome)
            return
        if attempt is None:  # a decision is reported once: after it, frames show idle
            self._expect(outcome, IDLE)
            return
        if obs is not None:
            attempt.faces += 1
        if not attempt.face_usable:
            self._expect(outcome, Outcome(Phase.FACE, "", user=attempt.person.name, fallback=True))
            return
        progress = min(1.0, attempt.frames / LIVENESS_FRAMES)
        if obs is None:
            self._expect_progress(outcome, "Look at the camera", progress)
            return
        if not obs.quality.ok:
            self._expect_progress(outcome, obs.quality.issues[0].value, progress)
            return
        if attempt.track is None:
            attempt.track = obs.track_id
        elif obs.track_id != attempt.track:
            self._expect_failure(outcome, MSG_LIVENESS)
            return
        attempt.frames += 1
        passed = attempt.frames >= LIVENESS_FRAMES
        if obs.embedding is None:
            self._expect_progress(outcome, "" if passed else "Hold still", 1.0 if passed else 0.5)
            return
        matched = whose == attempt.person.name
        if not matched:
            attempt.unmatched += 1
            if attempt.unmatched >= MAX_UNMATCHED:
                self._expect_failure(outcome, MSG_FACE)
                return
        if passed:
            if matched:  # liveness passed on this tracked face, and this frame is the owner's
                self._expect_grant(outcome, "pin+face")
            else:
                self._expect_failure(outcome, MSG_FACE)
            return
        self._expect_progress(outcome, "Hold still", min(1.0, attempt.frames / LIVENESS_FRAMES))

    @rule(args=face_args)
    def show_face(self, args: dict[str, Any]) -> None:
        self._show_face(**args)

    def _show_face(
        self,
        kind: str,
        who: str,
        new_track: bool,
        frames: int,
        dt: float,
        seed: int,
        cut: bool = False,
    ) -> None:
        if new_track:
            self.track += 1
        if kind == "claimant" and self.attempt is not None and self.attempt.person.templates:
            who = self.attempt.person.name
        for i in range(frames):
            if cut and i:
                self.track += 1
            self._advance(dt)
            whose: str | None = None
            if kind == "none":
                obs = None
            elif kind == "poor":
                obs = observation(face_of(who, seed + i), self.track, usable=False)
            elif kind == "unembedded":
                obs = observation(None, self.track)
            elif kind == "stranger":
                obs = observation(stranger(seed + i), self.track)
            else:
                whose = who
                obs = observation(face_of(who, seed + i), self.track)
            self._frame(obs, whose)

    @rule()
    def tick(self) -> None:
        outcome = self.kiosk.flow.tick()
        if self._timed_out():
            self._expect_timeout(outcome)
            return
        if self.attempt is None:
            self._expect(outcome, IDLE)
            return
        self._expect(outcome, Outcome(Phase.FACE, "", user=self.attempt.person.name))

    @rule(cancel=st.booleans())
    def dismiss(self, cancel: bool) -> None:
        """The person cancels, or the screen is reset to idle."""
        if cancel:
            self._cancel()
        else:
            self._reset()

    def _cancel(self) -> None:
        outcome = self.kiosk.flow.cancel()
        if self.attempt is None:
            self._expect(outcome, IDLE)
            return
        self._expect(outcome, self._close_undecided(CANCELLED) or IDLE)

    def _reset(self) -> None:
        """reset() forgets the attempt without closing it: like a restart, the store's
        marker stays and counts at the user's next PIN."""
        self.kiosk.flow.reset()
        self.attempt = None

    @rule()
    def abandon(self) -> None:
        """The camera stopped: a failure event, not counted; the marker is cleared."""
        outcome = self.kiosk.flow.abandon(CAMERA_STOPPED)
        attempt = self.attempt
        if attempt is None:
            self._expect(outcome, IDLE)
            return
        self.attempt = None
        name = attempt.person.name
        self.locks[name].open = False
        self.trail.append(auth_row(self.kiosk.uid(name), "failure", "face", CAMERA_STOPPED))
        event("abandoned")
        self._expect(outcome, Outcome(Phase.DENIED, MSG_ABANDONED))

    # --- the fallbacks -------------------------------------------------------------------------

    @rule(args=totp_args)
    def enter_totp(self, args: dict[str, Any]) -> None:
        self._enter_totp(**args)

    def _enter_totp(self, kind: str, random_code: str) -> None:
        step = int(self.clock.wall() // TOTP_STEP_S)
        code = {
            "current": lambda: self.kiosk.code(step),
            "previous": lambda: self.kiosk.code(step - 1),
            "next": lambda: self.kiosk.code(step + 1),
            "stale": lambda: self.kiosk.code(step - 3),
            "replay": lambda: self.accepted_codes[-1] if self.accepted_codes else random_code,
            "random": lambda: random_code,
        }[kind]()
        if self.attempt is None:
            self._refused(lambda: self.kiosk.flow.enter_totp(code))
            return
        outcome = self.kiosk.flow.enter_totp(code)
        if self._timed_out():
            self._expect_timeout(outcome)
            return
        person = self.attempt.person
        if not person.totp:
            self._expect(outcome, Outcome(Phase.FACE, MSG_NO_CODE, user=person.name, fallback=True))
            return
        for candidate in (step, step - 1, step + 1):
            if self.totp_last_step is not None and candidate <= self.totp_last_step:
                continue  # a code is good once
            if self.kiosk.code(candidate) == code:
                self.totp_last_step = candidate
                self.accepted_codes.append(code)
                self._expect_grant(outcome, "pin+totp")
                return
        self._expect_failure(outcome, MSG_CODE, factor="totp")

    @rule(args=override_args)
    def supervisor_override(self, args: dict[str, Any]) -> None:
        self._supervisor_override(**args)

    def _supervisor_override(self, staff_no: str, right: bool, other: str) -> None:
        sup = BY_STAFF_NO.get(staff_no)
        pin = sup.pin if sup is not None and right else other
        if self.attempt is None:
            self._refused(lambda: self.kiosk.flow.supervisor_override(staff_no, pin))
            return
        outcome = self.kiosk.flow.supervisor_override(staff_no, pin)
        if self._timed_out():
            self._expect_timeout(outcome)
            return
        person = self.attempt.person
        # Every refusal looks the same and costs the requester one failure.
        if sup is None or sup.role is not Role.SUPERVISOR or sup.name == person.name:
            event("override refused: not another supervisor")
            self._expect_failure(outcome, MSG_OVERRIDE, factor="pin+supervisor")
            return
        if self._check(sup.name) > 0:  # the check re-records the supervisor's remainder
            event("override refused: supervisor locked out")
            self._expect_failure(outcome, MSG_OVERRIDE, factor="pin+supervisor")
            return
        if pin != sup.pin:  # the supervisor's failure is written first
            event("override refused: wrong supervisor PIN")
            self._register_failure(sup.name, "pin", keep_open=True)
            self._expect_failure(outcome, MSG_OVERRIDE, factor="pin+supervisor")
            return
        self._expect_grant(outcome, "pin+supervisor", supervisor=sup.name)

    @rule(person=st.sampled_from(PEOPLE))
    def admin_unlock(self, person: Person) -> None:
        was_locked = self._remaining(person.name, save=False) > 0
        assert self.kiosk.admin.unlock(person.name) is was_locked
        self._clear(person.name)
        self.trail.append(("unlock", self.kiosk.uid(person.name), "", "", ""))

    # --- time, checkpoints and restarts --------------------------------------------------------

    def _advance_floors(self, seconds: float) -> None:
        for m in self.locks.values():
            m.floor_s = max(0.0, m.floor_s - seconds)

    @rule(
        seconds=st.one_of(
            st.integers(0, 30),
            st.integers(0, 2 * 3600),
            st.sampled_from([TIMEOUT_S, TIMEOUT_S + 0.5, LOCKOUT_S - 1, LOCKOUT_S, LOCKOUT_S + 1]),
        )
    )
    def advance(self, seconds: float) -> None:
        self._advance(seconds)

    def _advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self._advance_floors(seconds)

    @rule(seconds=st.integers(-7 * 86_400, 7 * 86_400))
    def jump_wall(self, seconds: int) -> None:
        self.clock.jump_wall(seconds)  # no time passes: nothing about lockouts changes

    @rule()
    def checkpoint(self) -> None:
        """What the daemon does each minute: every lockout's remainder re-recorded now."""
        self.kiosk.flow.checkpoint()
        for name, m in self.locks.items():
            if m.recorded_s > 0:
                event("checkpoint: lock served" if self._check(name) == 0 else "checkpoint")

    @rule()
    def restart(self) -> None:
        """A new process: the attempt is lost, its marker stays in the store."""
        self.kiosk.restart()
        self.attempt = None

    @rule()
    def new_flow(self) -> None:
        """A new flow object over the same store: the same as a restart for the attempt."""
        self.kiosk.flow = self.kiosk.new_flow()
        self.attempt = None

    @rule(downtime=st.integers(0, 3 * 86_400))
    def reboot(self, downtime: int) -> None:
        if any(m.recorded_s > 0 for m in self.locks.values()):
            event("reboot during a lockout")
        self.clock.reboot(downtime)  # downtime is not boot time; a lockout never ends early
        self.restart()

    # --- invariants ----------------------------------------------------------------------------

    @invariant()
    def flow_state_matches(self) -> None:
        flow = self.kiosk.flow
        attempt = self.attempt
        # Between inputs the flow is either in an attempt or idle: decisions are events.
        assert flow.phase is (Phase.FACE if attempt else Phase.IDLE)
        assert flow.claimed_user == (attempt.person.name if attempt else None)
        assert flow.wants_embedding == (attempt is not None and attempt.face_usable)

    @invariant()
    def lockouts_persisted_as_modelled(self) -> None:
        for name, user_id in self.kiosk.ids.items():
            m = self.locks[name]
            state = self.kiosk.repo.lockout(user_id)
            assert state.failures == m.failures, name
            assert state.remaining_s == m.recorded_s, name
            assert state.open_attempt == m.open, name
            if m.recorded_s > 0:
                assert (state.boot_id, state.boot_s) == (m.boot, m.anchor_s), name
            # Never ends early: a reboot pauses a lockout, a wall jump does nothing.
            assert m.floor_s == 0 or self._remaining(name, save=False) >= m.floor_s, name

    @invariant()
    def audit_trail_matches(self) -> None:
        assert self.kiosk.trail() == self.trail


TestAuthFlowStateful = AuthFlowMachine.TestCase
TestAuthFlowStateful.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# --- the sequences, spelled out -----------------------------------------------------------


@pytest.fixture
def kiosk(tmp_path: Path) -> Iterator[Kiosk]:
    k = Kiosk(tmp_path, ManualClock())
    yield k
    k.close()


def _sign_in_with_face(kiosk: Kiosk, person: Person, track: int = 7) -> Outcome:
    assert kiosk.flow.enter_pin(person.staff_no, person.pin).phase is Phase.FACE
    outcome = kiosk.flow.on_frame(observation(face_of(person.name, 1), track))
    assert outcome.phase is Phase.FACE
    return kiosk.flow.on_frame(observation(face_of(person.name, 2), track))


def _lock(kiosk: Kiosk, person: Person) -> None:
    for i in range(MAX_FAILURES - 1):
        outcome = kiosk.flow.enter_pin(person.staff_no, f"000{i}")
        assert outcome == Outcome(Phase.DENIED, MSG_NOT_RECOGNISED)
    assert kiosk.flow.enter_pin(person.staff_no, "0009") == LOCKED_NOW


def _rows(kiosk: Kiosk, class_uid: int, activity_id: int | None = None) -> list[AuditRow]:
    return [
        r
        for r in kiosk.audit()
        if r.class_uid == class_uid
        and (activity_id is None or r.payload["activity_id"] == activity_id)
    ]


def _assert_locked(kiosk: Kiosk, person: Person) -> Outcome:
    outcome = kiosk.flow.enter_pin(person.staff_no, person.pin)
    assert outcome.phase is Phase.LOCKED
    assert outcome.locked_for_s > 0
    assert kiosk.flow.phase is Phase.IDLE
    assert not kiosk.flow.wants_embedding
    assert kiosk.flow.claimed_user is None
    return outcome


def _assert_idle(kiosk: Kiosk) -> None:
    flow = kiosk.flow
    assert (flow.phase, flow.claimed_user, flow.wants_embedding) == (Phase.IDLE, None, False)


def test_three_wrong_pins_lock_out_even_the_right_pin(kiosk: Kiosk) -> None:
    _lock(kiosk, BOB)
    outcome = _assert_locked(kiosk, BOB)
    assert outcome.message == locked_text(LOCKOUT_S)
    # and no face can get past it: no attempt is open
    assert kiosk.flow.on_frame(observation(face_of(BOB.name, 3), 1)) == IDLE
    with pytest.raises(InvalidInputError):
        kiosk.flow.enter_totp(kiosk.code(int(kiosk.clock.wall() // TOTP_STEP_S)))
    uid = kiosk.uid(BOB.name)
    assert [r.user_uid for r in _rows(kiosk, events.ACCOUNT_CHANGE, events.LOCK)] == [uid]
    assert [r.user_uid for r in _rows(kiosk, events.DETECTION_FINDING)] == [uid]
    assert not [r for r in _rows(kiosk, events.AUTHENTICATION) if r.status == "success"]


@pytest.mark.parametrize("jump", [86_400.0, -86_400.0, 30 * 86_400.0])
def test_wall_jumps_and_restarts_do_not_unlock(kiosk: Kiosk, jump: float) -> None:
    _lock(kiosk, ALICE)
    kiosk.clock.jump_wall(jump)
    _assert_locked(kiosk, ALICE)
    kiosk.restart()
    kiosk.clock.jump_wall(jump)
    _assert_locked(kiosk, ALICE)
    kiosk.clock.advance(LOCKOUT_S - 1)
    assert _assert_locked(kiosk, ALICE).locked_for_s == 1.0


@pytest.mark.parametrize(
    ("recorded_by", "carried"),
    [(None, LOCKOUT_S), ("checkpoint", 20 * 60.0), ("PIN while locked", 20 * 60.0)],
)
def test_a_reboot_pauses_a_lockout_from_the_last_check(
    kiosk: Kiosk, recorded_by: str | None, carried: float
) -> None:
    """A reboot carries over the remainder recorded at the last check (fail closed: never
    less than what is left); the daemon's checkpoint and every lock check record it."""
    _lock(kiosk, BOB)
    kiosk.clock.advance(10 * 60)
    if recorded_by == "checkpoint":
        kiosk.flow.checkpoint()
    elif recorded_by == "PIN while locked":
        _assert_locked(kiosk, BOB)
    kiosk.clock.advance(30)  # not recorded: lost to the reboot, the lock lasts that much longer
    kiosk.clock.reboot(downtime=2 * 3600)  # two hours off: not served
    kiosk.restart()
    assert _assert_locked(kiosk, BOB).locked_for_s == carried
    state = kiosk.repo.lockout(kiosk.ids[BOB.name])
    assert (state.boot_id, state.boot_s, state.remaining_s) == (kiosk.clock.boot_id(), 5.0, carried)
    # counting resumed at that first check of the new boot
    kiosk.clock.advance(carried - 1)
    assert _assert_locked(kiosk, BOB).locked_for_s == 1.0
    kiosk.clock.advance(1)
    assert kiosk.flow.enter_pin(BOB.staff_no, BOB.pin).phase is Phase.FACE


def test_a_served_lockout_is_not_served_again_after_a_reboot(kiosk: Kiosk) -> None:
    """(d) Once the lockout has run out on the boot clock, the checkpoint clears it, so a
    reboot does not bring the recorded thirty minutes back."""
    bob = kiosk.ids[BOB.name]
    _lock(kiosk, BOB)
    kiosk.clock.advance(LOCKOUT_S)
    kiosk.flow.checkpoint()
    assert kiosk.repo.lockout(bob) == LockoutState(boot_id=kiosk.clock.boot_id(), boot_s=100.0)
    kiosk.clock.reboot(downtime=600)
    kiosk.restart()
    assert kiosk.flow.enter_pin(BOB.staff_no, BOB.pin).phase is Phase.FACE
    assert WHILE_LOCKED not in kiosk.failure_reasons(BOB.name)
    # the count started again: one wrong PIN is one failure, not a new lockout
    assert kiosk.flow.enter_pin(BOB.staff_no, "0000") == Outcome(Phase.DENIED, MSG_NOT_RECOGNISED)
    assert kiosk.repo.lockout(bob).failures == 1
    # and with the daemon checkpointing each minute, a reboot costs at most that minute
    _lock(kiosk, ALICE)
    kiosk.clock.advance(LOCKOUT_S - 60)
    kiosk.flow.checkpoint()
    kiosk.clock.advance(60)  # served, but the reboot comes before the next checkpoint
    kiosk.clock.reboot(downtime=600)
    kiosk.restart()
    assert _assert_locked(kiosk, ALICE).locked_for_s == 60.0


def test_lockout_ends_after_thirty_minutes_of_boot_time(kiosk: Kiosk) -> None:
    _lock(kiosk, BOB)
    kiosk.clock.advance(LOCKOUT_S - 1)
    assert _assert_locked(kiosk, BOB).locked_for_s == 1.0
    kiosk.clock.advance(1)
    assert kiosk.flow.enter_pin(BOB.staff_no, BOB.pin).phase is Phase.FACE
    # the count starts again: one wrong PIN is one failure, not a new lockout (the attempt
    # the wrong PIN closes saw no face, so it is free)
    assert kiosk.flow.enter_pin(BOB.staff_no, "0000").phase is Phase.DENIED
    assert kiosk.repo.lockout(kiosk.ids[BOB.name]).failures == 1


def test_a_success_resets_the_count(kiosk: Kiosk) -> None:
    for pin in ("0000", "0001"):
        assert kiosk.flow.enter_pin(CAROL.staff_no, pin).phase is Phase.DENIED
    assert _sign_in_with_face(kiosk, CAROL) == Outcome(
        Phase.GRANTED, "Welcome, carol.", user="carol"
    )
    assert kiosk.repo.lockout(kiosk.ids[CAROL.name]) == LockoutState()
    for pin in ("0000", "0001"):
        assert kiosk.flow.enter_pin(CAROL.staff_no, pin).phase is Phase.DENIED
    assert kiosk.flow.enter_pin(CAROL.staff_no, "0002").phase is Phase.LOCKED
    grants = [r for r in _rows(kiosk, events.AUTHENTICATION) if r.status == "success"]
    assert [(r.user_uid, r.payload["unmapped"]["factor"]) for r in grants] == [
        (kiosk.uid(CAROL.name), "pin+face")
    ]
    assert "score" in grants[0].payload["unmapped"]  # the score is audited, never shown


def test_no_factor_without_the_pin(kiosk: Kiosk) -> None:
    flow = kiosk.flow
    for track in (1, 1, 1):
        assert flow.on_frame(observation(face_of(ALICE.name, track), track)) == IDLE
    with pytest.raises(InvalidInputError):
        flow.enter_totp(kiosk.code(int(kiosk.clock.wall() // TOTP_STEP_S)))
    with pytest.raises(InvalidInputError):
        flow.supervisor_override(CAROL.staff_no, CAROL.pin)
    # a wrong PIN opens nothing either
    assert flow.enter_pin(ALICE.staff_no, "9999").phase is Phase.DENIED
    assert flow.on_frame(observation(face_of(ALICE.name, 4), 2)) == IDLE
    assert not [r for r in _rows(kiosk, events.AUTHENTICATION) if r.status == "success"]


def test_a_decision_is_reported_once(kiosk: Kiosk) -> None:
    """Granted, denied or locked, the outcome is returned once; then the flow is idle."""
    granted = _sign_in_with_face(kiosk, ALICE)
    assert granted == Outcome(Phase.GRANTED, "Welcome, alice.", user="alice")
    assert kiosk.repo.lockout(kiosk.ids[ALICE.name]) == LockoutState()  # the attempt closed
    denied = kiosk.flow.enter_pin(BOB.staff_no, "0000")
    assert denied == Outcome(Phase.DENIED, MSG_NOT_RECOGNISED)
    for lock in (False, True):
        if lock:
            _lock(kiosk, DAVE)
        rows = len(kiosk.audit())
        _assert_idle(kiosk)
        assert kiosk.flow.on_frame(observation(face_of(ALICE.name, 3), 7)) == IDLE
        assert kiosk.flow.on_frame(None) == IDLE
        assert kiosk.flow.tick() == IDLE
        assert kiosk.flow.cancel() == IDLE
        assert kiosk.flow.abandon(CAMERA_STOPPED) == IDLE
        assert len(kiosk.audit()) == rows
    assert kiosk.repo.lockout(kiosk.ids[ALICE.name]) == LockoutState()


def test_a_restart_mid_attempt_counts_at_the_next_pin(kiosk: Kiosk) -> None:
    """(a) An attempt opened and never decided is one failure at that user's next PIN."""
    alice, bob = kiosk.ids[ALICE.name], kiosk.ids[BOB.name]
    opened = kiosk.flow.enter_pin(ALICE.staff_no, ALICE.pin)
    assert opened.phase is Phase.FACE
    assert kiosk.repo.lockout(alice) == LockoutState(open_attempt=True)
    kiosk.restart()  # even before any face: pulling the plug is no way around the count
    # another user's PIN does not touch it
    assert kiosk.flow.enter_pin(BOB.staff_no, BOB.pin).phase is Phase.FACE
    assert kiosk.repo.lockout(alice) == LockoutState(open_attempt=True)
    # alice's next PIN: the interrupted attempt is counted, then her PIN checked as usual
    assert kiosk.flow.enter_pin(ALICE.staff_no, ALICE.pin) == opened
    assert kiosk.repo.lockout(alice) == LockoutState(failures=1, open_attempt=True)
    assert kiosk.repo.lockout(bob) == LockoutState()  # closed free: it saw no face
    assert kiosk.failure_reasons(ALICE.name) == [INTERRUPTED]
    # a new flow object is the same as a restart; the wrong PIN after it counts too
    assert kiosk.new_flow().enter_pin(ALICE.staff_no, "0000") == LOCKED_NOW
    assert kiosk.failure_reasons(ALICE.name) == [INTERRUPTED, INTERRUPTED, WRONG_PIN]
    assert not kiosk.repo.lockout(alice).open_attempt
    a = kiosk.uid(ALICE.name)
    assert kiosk.trail()[-2:] == [("lock", a, "", "", ""), ("alert", a, "", "", "")]
    # when the interrupted attempt is the one that locks, the PIN is not even verified
    kiosk.restart()
    for pin in ("0000", "0001", BOB.pin):
        kiosk.flow.enter_pin(BOB.staff_no, pin)
    assert kiosk.repo.lockout(bob) == LockoutState(failures=2, open_attempt=True)
    kiosk.restart()
    assert kiosk.flow.enter_pin(BOB.staff_no, BOB.pin) == LOCKED_NOW
    assert kiosk.failure_reasons(BOB.name) == [WRONG_PIN, WRONG_PIN, INTERRUPTED]
    assert not kiosk.repo.lockout(bob).open_attempt
    _assert_idle(kiosk)


def test_cancel_before_any_face_is_free_after_a_face_counts(kiosk: Kiosk) -> None:
    """(b) Closing an undecided attempt in the same flow (cancel, a new PIN) is free until
    the camera has seen a face, and a failure once it has, or once the deadline passed."""
    flow, bob = kiosk.flow, kiosk.ids[BOB.name]
    assert flow.enter_pin(BOB.staff_no, BOB.pin).phase is Phase.FACE
    assert flow.on_frame(None).phase is Phase.FACE  # frames without a face: still free
    assert flow.cancel() == IDLE
    assert flow.enter_pin(BOB.staff_no, BOB.pin).phase is Phase.FACE
    assert flow.enter_pin(BOB.staff_no, BOB.pin).phase is Phase.FACE  # a new PIN: free too
    assert flow.cancel() == IDLE
    assert kiosk.repo.lockout(bob) == LockoutState()
    assert kiosk.failure_reasons(BOB.name) == []
    # after a face: counted
    assert flow.enter_pin(BOB.staff_no, BOB.pin).phase is Phase.FACE
    assert flow.on_frame(observation(face_of(BOB.name, 1), 3)).phase is Phase.FACE
    assert flow.cancel() == Outcome(Phase.DENIED, MSG_CANCELLED)
    assert kiosk.repo.lockout(bob) == LockoutState(failures=1)
    _assert_idle(kiosk)
    assert flow.enter_pin(BOB.staff_no, BOB.pin).phase is Phase.FACE
    assert flow.on_frame(observation(stranger(9), 4)).phase is Phase.FACE
    assert flow.enter_pin(BOB.staff_no, BOB.pin).phase is Phase.FACE  # closed, counted
    assert kiosk.repo.lockout(bob) == LockoutState(failures=2, open_attempt=True)
    # past the deadline, cancelling counts even without a face: here it locks
    kiosk.clock.advance(TIMEOUT_S + 0.5)
    assert flow.cancel() == LOCKED_NOW
    assert kiosk.failure_reasons(BOB.name) == [CANCELLED, NEW_PIN, TIMED_OUT]
    assert not kiosk.repo.lockout(bob).open_attempt
    _assert_idle(kiosk)


def test_the_camera_stopping_is_audited_not_counted(kiosk: Kiosk) -> None:
    """abandon: a failure event, no count, the marker cleared (even after a face)."""
    bob = kiosk.ids[BOB.name]
    for i in range(MAX_FAILURES + 1):
        assert kiosk.flow.enter_pin(BOB.staff_no, BOB.pin).phase is Phase.FACE
        assert kiosk.flow.on_frame(observation(stranger(i), 10 + i)).phase is Phase.FACE
        assert kiosk.flow.abandon(CAMERA_STOPPED) == Outcome(Phase.DENIED, MSG_ABANDONED)
        assert kiosk.repo.lockout(bob) == LockoutState()
        _assert_idle(kiosk)
    assert kiosk.failure_reasons(BOB.name) == [CAMERA_STOPPED] * (MAX_FAILURES + 1)
    kiosk.restart()
    assert kiosk.flow.enter_pin(BOB.staff_no, BOB.pin).phase is Phase.FACE  # nothing left open
    assert kiosk.repo.lockout(bob).failures == 0


ERIN = Person("erin", "1005", "975310", role=Role.SUPERVISOR, templates=0)
REFUSALS = {
    "unknown staff number": ("9999", "1234"),
    "not a supervisor": (BOB.staff_no, BOB.pin),
    "the requester themselves": (CAROL.staff_no, CAROL.pin),
    "a locked-out supervisor": (ERIN.staff_no, ERIN.pin),
    "a wrong supervisor PIN": (ERIN.staff_no, "0000"),
}


def test_a_refused_override_looks_the_same_and_costs_the_requester(tmp_path: Path) -> None:
    """(c) Whatever the reason, the same answer, and one failure of the requester."""
    outcomes: dict[str, Outcome] = {}
    for i, (case, (staff_no, pin)) in enumerate(REFUSALS.items()):
        (tmp_path / str(i)).mkdir()
        kiosk = Kiosk(tmp_path / str(i), ManualClock())
        try:
            erin = kiosk.admin.add(ERIN.name, ERIN.pin, staff_no=ERIN.staff_no, role=ERIN.role)
            kiosk.ids[ERIN.name] = erin.id
            if case == "a locked-out supervisor":
                _lock(kiosk, ERIN)
                kiosk.clock.advance(60)
            erin_before = kiosk.repo.lockout(erin.id)
            assert kiosk.flow.enter_pin(CAROL.staff_no, CAROL.pin).phase is Phase.FACE
            rows = len(kiosk.audit())
            outcomes[case] = kiosk.flow.supervisor_override(staff_no, pin)
            assert outcomes[case] == Outcome(Phase.DENIED, MSG_OVERRIDE), case
            _assert_idle(kiosk)
            assert kiosk.repo.lockout(kiosk.ids[CAROL.name]) == LockoutState(failures=1), case
            carol_row = auth_row(kiosk.uid(CAROL.name), "failure", "pin+supervisor")
            erin_state = kiosk.repo.lockout(erin.id)
            if case == "a wrong supervisor PIN":
                erin_row = auth_row(kiosk.uid(ERIN.name), "failure", "pin")
                assert kiosk.trail()[rows:] == [erin_row, carol_row]
                assert erin_state == LockoutState(failures=1)
            else:
                assert kiosk.trail()[rows:] == [carol_row], case
                if case == "a locked-out supervisor":  # the check was saved, re-recorded
                    assert (erin_state.remaining_s, erin_state.boot_s) == (LOCKOUT_S - 60, 160.0)
                else:
                    assert erin_state == erin_before, case
        finally:
            kiosk.close()
    assert len(set(outcomes.values())) == 1


def test_refused_overrides_lock_the_requester_and_a_guessing_supervisor(kiosk: Kiosk) -> None:
    carol, bob = kiosk.ids[CAROL.name], kiosk.ids[BOB.name]
    # a wrong supervisor PIN that locks the supervisor: their failure, Lock and alert first
    for pin in ("0000", "0001"):
        kiosk.flow.enter_pin(CAROL.staff_no, pin)
    assert kiosk.flow.enter_pin(BOB.staff_no, BOB.pin).phase is Phase.FACE
    rows = len(kiosk.audit())
    assert kiosk.flow.supervisor_override(CAROL.staff_no, "0002") == Outcome(
        Phase.DENIED, MSG_OVERRIDE
    )
    c, b = kiosk.uid(CAROL.name), kiosk.uid(BOB.name)
    assert kiosk.trail()[rows:] == [
        auth_row(c, "failure", "pin"),
        ("lock", c, "", "", ""),
        ("alert", c, "", "", ""),
        auth_row(b, "failure", "pin+supervisor"),
    ]
    assert kiosk.repo.lockout(carol).remaining_s == LOCKOUT_S
    assert _assert_locked(kiosk, CAROL).locked_for_s == LOCKOUT_S
    # a refusal that reaches the requester's limit locks the requester
    assert kiosk.flow.enter_pin(BOB.staff_no, "0000").phase is Phase.DENIED
    assert kiosk.flow.enter_pin(BOB.staff_no, BOB.pin).phase is Phase.FACE
    rows = len(kiosk.audit())
    assert kiosk.flow.supervisor_override(CAROL.staff_no, CAROL.pin) == LOCKED_NOW
    assert kiosk.trail()[rows:] == [
        auth_row(b, "failure", "pin+supervisor"),
        ("lock", b, "", "", ""),
        ("alert", b, "", "", ""),
    ]
    assert kiosk.repo.lockout(bob).remaining_s == LOCKOUT_S
    _assert_idle(kiosk)


def test_supervisor_lock_after_reboot_counts_down(kiosk: Kiosk) -> None:
    """After a reboot, counting resumes from the first check of the new boot, and an
    override by the locked supervisor is such a check: its re-anchored state is saved."""
    carol = kiosk.ids[CAROL.name]
    for requester in (ALICE, BOB, DAVE):  # each refusal costs its requester one failure
        assert kiosk.flow.enter_pin(requester.staff_no, requester.pin).phase is Phase.FACE
        outcome = kiosk.flow.supervisor_override(CAROL.staff_no, "0000")
        assert outcome == Outcome(Phase.DENIED, MSG_OVERRIDE)
    assert kiosk.repo.lockout(carol).remaining_s == LOCKOUT_S
    assert [r.user_uid for r in _rows(kiosk, events.ACCOUNT_CHANGE, events.LOCK)] == [
        kiosk.uid(CAROL.name)
    ]
    kiosk.clock.reboot(downtime=60)
    kiosk.restart()
    assert kiosk.flow.enter_pin(BOB.staff_no, BOB.pin).phase is Phase.FACE
    outcome = kiosk.flow.supervisor_override(CAROL.staff_no, CAROL.pin)  # first check: t=5
    assert outcome == Outcome(Phase.DENIED, MSG_OVERRIDE)
    state = kiosk.repo.lockout(carol)
    assert (state.boot_id, state.boot_s, state.remaining_s) == (
        kiosk.clock.boot_id(),
        5.0,
        LOCKOUT_S,
    )
    kiosk.clock.advance(LOCKOUT_S - 1)
    assert _assert_locked(kiosk, CAROL).locked_for_s == 1.0
    kiosk.clock.advance(1)
    assert kiosk.flow.enter_pin(CAROL.staff_no, CAROL.pin).phase is Phase.FACE


@pytest.mark.parametrize("right", [False, True], ids=["wrong supervisor PIN", "right PIN"])
def test_a_supervisors_interrupted_attempt_still_counts(kiosk: Kiosk, right: bool) -> None:
    """Rule: an attempt left open counts as one failure (at the user's next PIN). Here the
    supervisor's own attempt saw a face and the kiosk restarted before a decision; before
    their next PIN they vouch (rightly or wrongly) for someone else."""
    carol = kiosk.ids[CAROL.name]
    assert kiosk.flow.enter_pin(CAROL.staff_no, CAROL.pin).phase is Phase.FACE
    assert kiosk.flow.on_frame(observation(stranger(5), 3)).phase is Phase.FACE
    kiosk.restart()
    assert kiosk.repo.lockout(carol).open_attempt
    assert kiosk.flow.enter_pin(BOB.staff_no, BOB.pin).phase is Phase.FACE
    kiosk.flow.supervisor_override(CAROL.staff_no, CAROL.pin if right else "0000")
    assert kiosk.repo.lockout(carol).open_attempt  # vouching did not close her own sign-in
    assert kiosk.flow.enter_pin(CAROL.staff_no, CAROL.pin).phase is Phase.FACE
    # counted once, whether at the override or at this PIN
    assert kiosk.failure_reasons(CAROL.name).count(INTERRUPTED) == 1
    assert kiosk.repo.lockout(carol) == LockoutState(failures=1 if right else 2, open_attempt=True)


def test_a_locked_user_keeps_an_interrupted_attempt_for_later(kiosk: Kiosk) -> None:
    """A locked user's PIN only gets LOCKED and leaves the marker; once the lock is served,
    their next PIN counts the interrupted attempt."""
    carol = kiosk.ids[CAROL.name]
    assert kiosk.flow.enter_pin(CAROL.staff_no, CAROL.pin).phase is Phase.FACE
    kiosk.restart()
    for requester in (ALICE, BOB, DAVE):  # her wrong PIN three times locks her
        assert kiosk.flow.enter_pin(requester.staff_no, requester.pin).phase is Phase.FACE
        kiosk.flow.supervisor_override(CAROL.staff_no, "0000")
    state = kiosk.repo.lockout(carol)
    assert (state.failures, state.remaining_s, state.open_attempt) == (3, LOCKOUT_S, True)
    assert _assert_locked(kiosk, CAROL) == LOCKED_NOW
    assert kiosk.repo.lockout(carol).open_attempt  # untouched
    kiosk.clock.advance(LOCKOUT_S)
    assert kiosk.flow.enter_pin(CAROL.staff_no, CAROL.pin).phase is Phase.FACE
    assert kiosk.repo.lockout(carol) == LockoutState(
        failures=1, boot_id=kiosk.clock.boot_id(), boot_s=100.0, open_attempt=True
    )
    assert kiosk.failure_reasons(CAROL.name)[-2:] == [WHILE_LOCKED, INTERRUPTED]
