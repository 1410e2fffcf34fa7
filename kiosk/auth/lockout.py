"""Failed-attempt counting and lockout, as pure functions of a state and a clock.

A user is locked for ``lockout_s`` after ``max_failures`` consecutive failures
(wrong PIN, face not matched, liveness failed, timed out, wrong fallback code).
A success resets the count; so does the end of a lockout.

Time is measured on the boot clock: the state records how much lockout was
left at a moment of a given boot. Within that boot, the remainder shrinks as
boot time passes — wall-clock jumps do nothing. After a reboot the boot clock
restarts, so the remainder recorded last is carried over and counting resumes
from the first check of the new boot: a power cycle pauses a lockout, it never
ends one early (fail closed). The running kiosk re-records the remainder of
every lockout each minute (:func:`checkpoint`), so a reboot costs a locked
user at most that minute plus the downtime, not a whole new lockout.

An attempt that was opened (PIN accepted) and never decided — the kiosk
restarted, say — is marked ``open_attempt`` and counts as a failure at that
user's next PIN, so restarting mid-attempt is no way around the count.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kiosk.auth.clock import Clock


@dataclass(frozen=True)
class LockoutPolicy:
    """NIST SP 800-63B §5.2.2 allows at most 100 consecutive failures; the default is 3."""

    max_failures: int = 3
    lockout_s: float = 30 * 60.0


@dataclass(frozen=True)
class LockoutState:
    """Persisted per user."""

    failures: int = 0
    remaining_s: float = 0.0  # lockout left at (boot_id, boot_s); 0 when not locked
    boot_id: str = ""
    boot_s: float = 0.0
    locked_at_wall: float | None = None
    open_attempt: bool = False

    @property
    def ever_locked(self) -> bool:
        return self.remaining_s > 0


def remaining(state: LockoutState, clock: Clock) -> tuple[float, LockoutState]:
    """Seconds of lockout left now, and the state re-anchored to this boot if it changed.

    The returned state must be saved when it differs from the one passed in
    (after a reboot, to carry the remainder over).
    """
    if state.remaining_s <= 0:
        return 0.0, state
    if state.boot_id == clock.boot_id():
        left = state.remaining_s - max(0.0, clock.since_boot() - state.boot_s)
        if left > 0:
            return left, state
        # served: the lock ends and the count starts again
        return 0.0, replace(state, failures=0, remaining_s=0.0, locked_at_wall=None)
    anchored = replace(state, boot_id=clock.boot_id(), boot_s=clock.since_boot())
    return state.remaining_s, anchored


def checkpoint(state: LockoutState, clock: Clock) -> LockoutState:
    """The state with its remainder re-recorded now (what a reboot would carry over)."""
    left, anchored = remaining(state, clock)
    if left <= 0:
        return anchored
    return replace(anchored, remaining_s=left, boot_id=clock.boot_id(), boot_s=clock.since_boot())


def register_failure(
    state: LockoutState, clock: Clock, policy: LockoutPolicy
) -> tuple[LockoutState, bool]:
    """The state after one more failure, and whether it has just locked the user."""
    failures = state.failures + 1
    if failures >= policy.max_failures:
        locked = LockoutState(
            failures=failures,
            remaining_s=policy.lockout_s,
            boot_id=clock.boot_id(),
            boot_s=clock.since_boot(),
            locked_at_wall=clock.wall(),
        )
        return locked, True
    return replace(state, failures=failures, open_attempt=False), False


def register_success(state: LockoutState) -> LockoutState:
    """A success clears the failure count."""
    return LockoutState()


def unlocked() -> LockoutState:
    """The state an administrator's unlock leaves."""
    return LockoutState()
