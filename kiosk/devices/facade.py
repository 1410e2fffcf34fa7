"""The :class:`Devices` facade: every GPIO device of the terminal behind the flow's events.

Built from :class:`~kiosk.devices.settings.DeviceIOSettings`; each device is
optional, and with everything disabled (the default) the facade touches no
GPIO at all and every method does nothing, so the daemon calls it
unconditionally.

=====================  ==================  ====================  ========================
event                  relay               LEDs                  buzzer
=====================  ==================  ====================  ========================
``on_idle()``          —                   idle                  —
``on_face_step()``     —                   face                  —
``on_grant()``         pulse / hold        granted ¹             granted (one short)
``on_deny()``          —                   denied for a while    denied (two short)
``on_lockout()``       release (session)   locked                locked (three long)
``on_session_lock()``  release (session)   idle                  —
key press              —                   —                     key tick
=====================  ==================  ====================  ========================

¹ for ``result_hold_s`` in "pulse" mode, then idle; in "session" mode until
the session locks.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Self

from kiosk.devices.base import GpioDevice, PinFactory, make_pin_factory
from kiosk.devices.buzzer import Buzzer, BuzzerPatternName
from kiosk.devices.errors import DeviceError
from kiosk.devices.keypad import ButtonKeypad, KeyCallback, KeySource, MatrixKeypad
from kiosk.devices.leds import StatusLeds, StatusState
from kiosk.devices.relay import Relay
from kiosk.devices.settings import DeviceIOSettings

logger = logging.getLogger(__name__)


class Devices:
    """Relay, status LEDs, buzzer and keypad as configured; each may be None."""

    def __init__(
        self,
        settings: DeviceIOSettings | None = None,
        *,
        pin_factory: PinFactory | None = None,
    ) -> None:
        self.settings = settings if settings is not None else DeviceIOSettings()
        self.relay: Relay | None = None
        self.leds: StatusLeds | None = None
        self.buzzer: Buzzer | None = None
        self.keypad: KeySource | None = None
        self._key_callback: KeyCallback | None = None
        self._owned_factory: PinFactory | None = None
        self._lock = threading.Lock()
        self._closed = False
        s = self.settings
        if not s.any_enabled:
            logger.info("no GPIO devices enabled")
            return
        factory = pin_factory
        if factory is None and s.pin_factory is not None:
            factory = self._owned_factory = make_pin_factory(s.pin_factory)
            if s.pin_factory.lower() == "mock":
                logger.warning("GPIO devices are simulated (devices.pin_factory = 'mock')")
        try:
            self._build(factory)
        except BaseException:
            self.close()
            raise

    def _build(self, factory: PinFactory | None) -> None:
        s = self.settings
        if s.relay.enabled:
            self.relay = Relay(
                pin=s.relay.pin,
                active_high=s.relay.active_high,
                pulse_s=s.relay.pulse_s,
                mode=s.relay.mode,
                pin_factory=factory,
            )
        if s.leds.enabled:
            if s.leds.kind == "rgb":
                self.leds = StatusLeds(
                    rgb=s.leds.rgb_pins, active_high=s.leds.active_high, pin_factory=factory
                )
            else:
                self.leds = StatusLeds(
                    green=s.leds.green_pin,
                    amber=s.leds.amber_pin,
                    red=s.leds.red_pin,
                    active_high=s.leds.active_high,
                    pin_factory=factory,
                )
            self.leds.show("idle")
        if s.buzzer.enabled:
            self.buzzer = Buzzer(
                pin=s.buzzer.pin, active_high=s.buzzer.active_high, pin_factory=factory
            )
        if s.keypad.enabled:
            if s.keypad.kind == "buttons":
                self.keypad = ButtonKeypad(
                    buttons=s.keypad.button_pins,
                    pull_up=s.keypad.pull_up,
                    bounce_s=s.keypad.bounce_s,
                    on_key=self._dispatch_key,
                    pin_factory=factory,
                )
            else:
                self.keypad = MatrixKeypad(
                    row_pins=s.keypad.row_pins,
                    col_pins=s.keypad.col_pins,
                    layout=s.keypad.layout,
                    scan_hz=s.keypad.scan_hz,
                    debounce_scans=s.keypad.debounce_scans,
                    on_key=self._dispatch_key,
                    pin_factory=factory,
                )

    # -- state ----------------------------------------------------------------------------

    @property
    def has_hardware(self) -> bool:
        """True when at least one device is open."""
        return any(d is not None for d in (self.relay, self.leds, self.buzzer, self.keypad))

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._closed

    # -- the flow's events ----------------------------------------------------------------

    def show(self, state: StatusState, *, hold_s: float | None = None) -> None:
        """Show a state on the LEDs, if fitted (see :class:`StatusLeds`)."""
        if self.leds is not None and not self._closed:
            self.leds.show(state, hold_s=hold_s)

    def on_idle(self) -> None:
        """Waiting for a PIN."""
        self.show("idle")

    def on_face_step(self) -> None:
        """PIN accepted: the user should look at the camera."""
        self.show("face")

    def on_grant(self) -> None:
        """Access granted: open the door (or power the terminal), green LED, one beep."""
        if self._closed:
            return
        session = self.relay is not None and self.relay.mode == "session"
        self.show("granted", hold_s=None if session else self.settings.leds.result_hold_s)
        self._beep("granted")
        if self.relay is not None:
            self.relay.grant()

    def on_deny(self) -> None:
        """An attempt was refused: red LED for a while, two beeps."""
        if self._closed:
            return
        self.show("denied", hold_s=self.settings.leds.result_hold_s)
        self._beep("denied")

    def on_lockout(self) -> None:
        """The user is locked out: release a session relay, blinking red, three long beeps."""
        if self._closed:
            return
        if self.relay is not None:
            self.relay.lock()
        self.show("locked")
        self._beep("locked")

    def on_session_lock(self) -> None:
        """The session locked (walk-away, other face, timeout): release a session relay, idle."""
        if self._closed:
            return
        if self.relay is not None:
            self.relay.lock()
        self.show("idle")

    def on_key(self, callback: KeyCallback | None) -> None:
        """Send every key press of the hardware keypad to *callback* (None: stop sending).

        The callback runs on the keypad's thread; keep it short. Without a
        keypad it is never called.
        """
        with self._lock:
            self._key_callback = callback

    def _dispatch_key(self, key: str) -> None:
        if self.settings.buzzer.key_tick:
            self._beep("key")
        with self._lock:
            callback = self._key_callback
        if callback is not None:
            callback(key)

    def _beep(self, pattern: BuzzerPatternName) -> None:
        if self.buzzer is not None and pattern in self.settings.buzzer.sounds:
            self.buzzer.play(pattern)

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the keypad, switch everything off and release the pins; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        devices: list[GpioDevice | None] = [self.keypad, self.leds, self.buzzer, self.relay]
        for device in devices:
            if device is not None:
                device.close()
        if self._owned_factory is not None:
            try:
                self._owned_factory.close()
            except Exception:
                logger.warning("closing the GPIO pin factory failed", exc_info=True)
            self._owned_factory = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = ["DeviceError", "Devices"]
