"""The session after a grant: continuous presence checks, and what locking does.

While a session is open the daemon feeds the monitor a face check at a low rate
(``interval_s``, default every 0.5 s: one detection + embedding). The monitor
locks the session when:

* no face has been seen for ``absent_s`` seconds (the user walked away);
* the face is not the session's user for ``mismatch_checks`` checks in a row
  (someone else sat down) — one bad frame (a turned head, motion blur) does not;
* by policy (``lock_on_onlooker``), a second face looks on for
  ``onlooker_checks`` checks in a row.

Every lock is audited with its reason. What a lock *does* is pluggable: a
:class:`LockAction` may end the kiosk screen's session, lock a Linux desktop
session (``loginctl lock-session``), release the relay, or publish an event;
the daemon configures a list of them. The monitor itself performs no I/O.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from kiosk.auth import events
from kiosk.auth.clock import Clock
from kiosk.auth.events import DeviceInfo, UserRef
from kiosk.auth.model import Change
from kiosk.vision.embedding import best_match
from kiosk.vision.types import FaceObservation, FloatArray

log = logging.getLogger(__name__)


class LockReason(Enum):
    ABSENT = "no face seen"
    OTHER_PERSON = "the face is not the session's user"
    ONLOOKER = "a second face looked on"
    MANUAL = "locked by the user"
    TIMEOUT = "session time limit reached"
    SHUTDOWN = "the kiosk stopped"


@dataclass(frozen=True)
class PresencePolicy:
    interval_s: float = 0.5
    absent_s: float = 10.0
    mismatch_checks: int = 3
    lock_on_onlooker: bool = False
    onlooker_checks: int = 4
    max_session_s: float = 8 * 3600.0


class LockAction(Protocol):
    """Something that happens when a session locks."""

    def lock(self, user: str, reason: LockReason) -> None: ...


class LoginctlLock:
    """Locks the Linux desktop session this process belongs to (``loginctl lock-session``)."""

    def __init__(self, session_id: str | None = None) -> None:
        self.session_id = session_id

    def lock(self, user: str, reason: LockReason) -> None:
        exe = shutil.which("loginctl")
        if exe is None:
            log.error("cannot lock the desktop: loginctl is not installed (systemd-logind)")
            return
        cmd = [exe, "lock-session"] + ([self.session_id] if self.session_id else [])
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        if result.returncode != 0:
            log.error("loginctl lock-session failed: %s", result.stderr.strip())


class CallbackLock:
    """Calls a function (the kiosk screen's own lock, releasing the relay, an MQTT event)."""

    def __init__(self, callback: Callable[[str, LockReason], None]) -> None:
        self.callback = callback

    def lock(self, user: str, reason: LockReason) -> None:
        self.callback(user, reason)


@dataclass
class PresenceState:
    user: UserRef
    templates: list[FloatArray]
    opened: float
    last_seen: float
    last_check: float = float("-inf")
    mismatches: int = 0
    onlookers: int = 0
    last_verified: float = 0.0


@dataclass
class SessionMonitor:
    """Watches an open session; decides when to lock (pure: clock and observations in)."""

    clock: Clock
    device: DeviceInfo
    threshold: float
    policy: PresencePolicy = field(default_factory=PresencePolicy)
    actions: Sequence[LockAction] = ()
    commit: Callable[[Change], None] | None = None
    state: PresenceState | None = None

    @property
    def open(self) -> bool:
        return self.state is not None

    def start(self, user: UserRef, templates: list[FloatArray]) -> None:
        now = self.clock.since_boot()
        self.state = PresenceState(user, templates, opened=now, last_seen=now, last_verified=now)

    def due(self) -> bool:
        """Whether the daemon should run a presence check now."""
        s = self.state
        return s is not None and self.clock.since_boot() - s.last_check >= self.policy.interval_s

    def last_verified_at(self) -> float | None:
        """Boot-clock time the session's user was last matched (step-up uses it)."""
        return self.state.last_verified if self.state else None

    def check(self, faces: list[FaceObservation]) -> LockReason | None:
        """One presence check with every face in the frame (embedded); locks and returns why."""
        s = self.state
        if s is None:
            return None
        now = self.clock.since_boot()
        s.last_check = now
        if now - s.opened > self.policy.max_session_s:
            return self.lock(LockReason.TIMEOUT)
        usable = [f for f in faces if f.embedding is not None]
        if s.templates:
            matched = [
                f
                for f in usable
                if f.embedding is not None
                and best_match(f.embedding, s.templates) >= self.threshold
            ]
        else:
            # A fallback sign-in (code, supervisor) of a user without a usable face template:
            # presence can only be "a face is there"; who it is cannot be checked.
            matched = usable[:1]
        if matched:
            s.last_seen = now
            s.last_verified = now
            s.mismatches = 0
        elif usable:
            s.mismatches += 1
            if s.mismatches >= self.policy.mismatch_checks:
                return self.lock(LockReason.OTHER_PERSON)
        if not matched and now - s.last_seen >= self.policy.absent_s:
            return self.lock(LockReason.ABSENT)
        if self.policy.lock_on_onlooker and matched and len(usable) > 1:
            s.onlookers += 1
            if s.onlookers >= self.policy.onlooker_checks:
                return self.lock(LockReason.ONLOOKER)
        else:
            s.onlookers = 0
        return None

    def verified(self) -> None:
        """The session's user just passed a fresh face check (a step-up)."""
        if self.state is not None:
            now = self.clock.since_boot()
            self.state.last_verified = self.state.last_seen = now

    def lock(self, reason: LockReason) -> LockReason:
        """Close the session: audit it, run every lock action."""
        s = self.state
        if s is None:
            return reason
        self.state = None
        event = events.logoff(
            wall=self.clock.wall(),
            device=self.device,
            user=s.user,
            reason=f"session locked: {reason.value}",
            extra={"session_s": round(self.clock.since_boot() - s.opened, 1)},
        )
        if self.commit is not None:
            self.commit(Change(events=[event]))
        for action in self.actions:
            try:
                action.lock(s.user.name, reason)
            except Exception:  # one failing action must not stop the others from locking
                log.exception("lock action %s failed", type(action).__name__)
        log.info("session of %s locked: %s", s.user.uid, reason.value)
        return reason
