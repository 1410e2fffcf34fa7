"""Clocks the authentication core is given (never reads time itself).

Two times matter: the wall clock (for audit timestamps and what a person is
told) and a monotonic clock that counts since boot including suspend
(``CLOCK_BOOTTIME``), tagged with the boot's id. Lockouts are measured on the
latter, so setting the wall clock forward does not end one.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Protocol

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class Clock(Protocol):
    """What the core needs to know about time."""

    def wall(self) -> float:
        """Seconds since the epoch (may jump)."""
        ...

    def since_boot(self) -> float:
        """Monotonic seconds since this boot, including suspend."""
        ...

    def boot_id(self) -> str:
        """An id that changes at every boot."""
        ...


class SystemClock:
    """The machine's clocks."""

    def __init__(self) -> None:
        try:
            self._boot = _BOOT_ID.read_text().strip()
        except OSError:  # not Linux: one id per process is the safe approximation
            self._boot = f"process-{uuid.uuid4()}"

    def wall(self) -> float:
        return time.time()

    def since_boot(self) -> float:
        return time.clock_gettime(time.CLOCK_BOOTTIME)

    def boot_id(self) -> str:
        return self._boot


class ManualClock:
    """A clock tests move by hand: wall and boot time advance together unless told apart."""

    def __init__(self, wall: float = 1_800_000_000.0, boot: str = "boot-1") -> None:
        self._wall = wall
        self._since = 100.0
        self._boot = boot

    def wall(self) -> float:
        return self._wall

    def since_boot(self) -> float:
        return self._since

    def boot_id(self) -> str:
        return self._boot

    def advance(self, seconds: float) -> None:
        self._wall += seconds
        self._since += seconds

    def jump_wall(self, seconds: float) -> None:
        """Set the wall clock forward or back without time passing."""
        self._wall += seconds

    def reboot(self, downtime: float = 30.0) -> None:
        self._wall += downtime
        self._since = 5.0
        self._boot = f"{self._boot}+"
