"""GPIO devices of the terminal through gpiozero: relay, status LEDs, buzzer, keypad.

Each device is a small class taking keyword-only options and a
``pin_factory=`` (None: gpiozero's default, lgpio on Raspberry Pi OS; tests
pass ``gpiozero.pins.mock.MockFactory()``). Every one is open once built, a
context manager, and ``close()`` is idempotent; failures are
:class:`DeviceError` (a :class:`~kiosk.errors.KioskError` and a
``RuntimeError``) saying what to do — a pin used twice, a missing GPIO
library, no access to ``/dev/gpiochip*`` (the ``gpio`` group).

* :class:`Relay` — door strike pulsed on grant (``pulse()``, non-blocking) or
  terminal power held for a session (``hold()`` / ``release()``).
* :class:`StatusLeds` — green/amber/red LEDs or one RGB LED: ``show(state)``.
* :class:`Buzzer` — ``play("granted" | "denied" | "locked" | "key")``.
* :class:`MatrixKeypad` / :class:`ButtonKeypad` — key events ``0-9 * #``
  through a callback or a queue; :class:`PinEntry` turns them into a PIN.
* :class:`Devices` — all of them built from
  :class:`~kiosk.devices.settings.DeviceIOSettings`, driven by the flow's
  events (``on_grant()``, ``on_deny()``, ``on_lockout()``,
  ``on_session_lock()``, ``on_key(callback)``); nothing enabled → no GPIO.

The default pins and the wiring are in hardware/pinmap.md.
"""

from kiosk.devices.base import GpioDevice, PinFactory, make_pin_factory
from kiosk.devices.buzzer import DEFAULT_PATTERNS, BeepPattern, Buzzer, BuzzerPatternName
from kiosk.devices.errors import DeviceError
from kiosk.devices.facade import Devices
from kiosk.devices.keypad import (
    KEYS,
    LAYOUTS,
    ButtonKeypad,
    KeyCallback,
    KeypadLayout,
    KeySource,
    MatrixKeypad,
    PinEntry,
)
from kiosk.devices.leds import LOOKS, STATUS_STATES, StatusLeds, StatusState
from kiosk.devices.relay import RELAY_MODES, Relay, RelayMode
from kiosk.devices.settings import (
    BuzzerSettings,
    DeviceIOSettings,
    KeypadSettings,
    RelaySettings,
    StatusLedSettings,
)

__all__ = [
    "DEFAULT_PATTERNS",
    "KEYS",
    "LAYOUTS",
    "LOOKS",
    "RELAY_MODES",
    "STATUS_STATES",
    "BeepPattern",
    "ButtonKeypad",
    "Buzzer",
    "BuzzerPatternName",
    "BuzzerSettings",
    "DeviceError",
    "DeviceIOSettings",
    "Devices",
    "GpioDevice",
    "KeyCallback",
    "KeySource",
    "KeypadLayout",
    "KeypadSettings",
    "MatrixKeypad",
    "PinEntry",
    "PinFactory",
    "Relay",
    "RelayMode",
    "RelaySettings",
    "StatusLedSettings",
    "StatusLeds",
    "StatusState",
    "make_pin_factory",
]
