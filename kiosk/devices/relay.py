"""The relay output: a door strike pulsed on grant, or terminal power held for a session.

Two modes (:data:`RelayMode`):

* ``"pulse"`` — a door strike: :meth:`Relay.grant` energises the relay for
  ``pulse_s`` seconds and releases it on its own, without blocking the caller
  (gpiozero's ``blink(on_time, off_time=0, n=1, background=True)``).
* ``"session"`` — terminal power or a monitor enable line: :meth:`Relay.grant`
  holds the relay until :meth:`Relay.lock` (session locked, lockout, close).

``active_high=False`` is for relay boards whose input energises the coil when
driven low. The relay is switched off before its pin is released on close, so
a strike is never left open by a stopping daemon (see hardware/pinmap.md for
what the pin does while the Pi boots).
"""

from __future__ import annotations

import logging
from typing import Literal

from gpiozero import DigitalOutputDevice

from kiosk.devices.base import GpioDevice, PinFactory
from kiosk.devices.errors import DeviceError

logger = logging.getLogger(__name__)

RelayMode = Literal["pulse", "session"]
RELAY_MODES: tuple[RelayMode, ...] = ("pulse", "session")


class Relay(GpioDevice):
    """One relay output (door strike or terminal power)."""

    kind = "relay"

    def __init__(
        self,
        *,
        pin: int,
        active_high: bool = True,
        pulse_s: float = 3.0,
        mode: RelayMode = "pulse",
        pin_factory: PinFactory | None = None,
    ) -> None:
        if not pulse_s > 0:
            raise DeviceError(f"relay pulse_s must be > 0 seconds, not {pulse_s}")
        if mode not in RELAY_MODES:
            raise DeviceError(f"relay mode must be one of {', '.join(RELAY_MODES)}, not {mode!r}")
        super().__init__(pin_factory=pin_factory)
        self.pin = pin
        self.pulse_s = float(pulse_s)
        self.mode: RelayMode = mode
        self._output = self._make(
            [pin], DigitalOutputDevice, pin, active_high=active_high, initial_value=False
        )
        logger.info(
            "relay on GPIO%d (%s, active %s, pulse %.2f s)",
            pin,
            mode,
            "high" if active_high else "low",
            self.pulse_s,
        )

    @property
    def is_active(self) -> bool:
        """True while the relay is energised."""
        with self._lock:
            return not self._closed and bool(self._output.is_active)

    def pulse(self, seconds: float | None = None) -> None:
        """Energise the relay for *seconds* (default ``pulse_s``) and return at once.

        A pulse while one runs starts the time again; a held relay is turned
        into a pulse.
        """
        on_time = self.pulse_s if seconds is None else float(seconds)
        if not on_time > 0:
            raise DeviceError(f"relay pulse must be > 0 seconds, not {on_time}")
        with self._lock:
            self._check_open()
            logger.debug("relay pulse %.2f s", on_time)
            self._output.blink(on_time=on_time, off_time=0, n=1, background=True)

    def hold(self) -> None:
        """Energise the relay until :meth:`release` (session power)."""
        with self._lock:
            self._check_open()
            logger.debug("relay held")
            self._output.on()

    def release(self) -> None:
        """De-energise the relay now (also ends a running pulse)."""
        with self._lock:
            self._check_open()
            logger.debug("relay released")
            self._output.off()

    def grant(self) -> None:
        """What a grant does in this relay's mode: pulse, or hold for the session."""
        if self.mode == "pulse":
            self.pulse()
        else:
            self.hold()

    def lock(self) -> None:
        """What a session lock or a lockout does: release a held relay.

        A running door pulse is left to finish in ``"pulse"`` mode (the door was
        granted); in ``"session"`` mode the relay is released.
        """
        if self.mode == "session":
            self.release()

    def _before_close(self) -> None:
        self._output.off()
