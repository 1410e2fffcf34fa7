"""The buzzer: an active buzzer (it sounds while its pin is on) with distinct patterns.

===========  ================================  ==========================
pattern      sound                             when
===========  ================================  ==========================
``granted``  one short beep (0.1 s)            access granted
``denied``   two short beeps (0.1 s, 0.1 s)    PIN or face refused
``locked``   three long beeps (0.3 s, 0.15 s)  the user is locked out
``key``      a tick (0.03 s)                   a key of the keypad
===========  ================================  ==========================

A pattern plays in the background (gpiozero's ``blink(..., n=count,
background=True)``) and :meth:`Buzzer.play` returns at once; a new pattern
replaces the one playing. Every pattern is ``count`` beeps of ``on_s`` with
``off_s`` silence between them, so it is one ``blink`` call and its timing is
gpiozero's. The patterns can be replaced through ``patterns=`` (a passive
piezo needs a :class:`gpiozero.TonalBuzzer` instead and is not supported).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from gpiozero import Buzzer as GpiozeroBuzzer

from kiosk.devices.base import GpioDevice, PinFactory
from kiosk.devices.errors import DeviceError

logger = logging.getLogger(__name__)

BuzzerPatternName = Literal["granted", "denied", "locked", "key"]


@dataclass(frozen=True)
class BeepPattern:
    """``count`` beeps of ``on_s`` seconds, ``off_s`` seconds of silence after each."""

    on_s: float
    off_s: float
    count: int

    def __post_init__(self) -> None:
        if not (self.on_s > 0 and self.off_s >= 0 and self.count >= 1):
            raise DeviceError(
                f"a beep pattern needs on_s > 0, off_s >= 0 and count >= 1, not {self}"
            )

    @property
    def duration_s(self) -> float:
        """How long the pattern sounds, from the first beep to the end of the last."""
        return self.count * self.on_s + (self.count - 1) * self.off_s


#: The default patterns (see the module docstring).
DEFAULT_PATTERNS: Mapping[BuzzerPatternName, BeepPattern] = {
    "granted": BeepPattern(on_s=0.1, off_s=0.1, count=1),
    "denied": BeepPattern(on_s=0.1, off_s=0.1, count=2),
    "locked": BeepPattern(on_s=0.3, off_s=0.15, count=3),
    "key": BeepPattern(on_s=0.03, off_s=0.0, count=1),
}


class Buzzer(GpioDevice):
    """An active buzzer playing :class:`BeepPattern` patterns in the background."""

    kind = "buzzer"

    def __init__(
        self,
        *,
        pin: int,
        active_high: bool = True,
        patterns: Mapping[BuzzerPatternName, BeepPattern] | None = None,
        pin_factory: PinFactory | None = None,
    ) -> None:
        super().__init__(pin_factory=pin_factory)
        self.pin = pin
        self.patterns: dict[BuzzerPatternName, BeepPattern] = {
            **DEFAULT_PATTERNS,
            **(patterns or {}),
        }
        self._output = self._make(
            [pin], GpiozeroBuzzer, pin, active_high=active_high, initial_value=False
        )
        logger.info("buzzer on GPIO%d (active %s)", pin, "high" if active_high else "low")

    @property
    def is_active(self) -> bool:
        """True while the buzzer sounds."""
        with self._lock:
            return not self._closed and bool(self._output.is_active)

    def play(self, pattern: BuzzerPatternName | BeepPattern) -> None:
        """Start *pattern* (a name or a :class:`BeepPattern`), replacing any pattern playing."""
        if isinstance(pattern, BeepPattern):
            beeps = pattern
        else:
            try:
                beeps = self.patterns[pattern]
            except KeyError:
                known = ", ".join(sorted(self.patterns))
                raise DeviceError(
                    f"unknown buzzer pattern {pattern!r}; use one of: {known}"
                ) from None
        with self._lock:
            self._check_open()
            logger.debug("buzzer pattern %s", pattern if isinstance(pattern, str) else beeps)
            self._output.blink(
                on_time=beeps.on_s, off_time=beeps.off_s, n=beeps.count, background=True
            )

    def stop(self) -> None:
        """Silence the buzzer now."""
        with self._lock:
            self._check_open()
            self._output.off()

    def _before_close(self) -> None:
        self._output.off()
