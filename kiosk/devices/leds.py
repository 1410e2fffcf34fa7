"""Status LEDs: green / amber / red LEDs, or one RGB LED, showing what the kiosk is doing.

============  ===========================  ===================================
state         discrete LEDs                meaning
============  ===========================  ===================================
``off``       all off                      not running
``idle``      amber on                     ready: type your PIN
``face``      amber blinking (2 Hz)        PIN accepted: look at the camera
``granted``   green on                     access granted / session open
``denied``    red on                       refused (PIN, face or liveness)
``locked``    red blinking (1 Hz)          this user is locked out
============  ===========================  ===================================

An RGB LED shows the same colours (amber is red + green: the LED is switched,
not dimmed, so any GPIO pin works and no PWM is needed). With discrete LEDs
the amber LED is optional: without one, amber is shown as green + red
together, which a two-colour (red/green) LED mixes into amber. Missing green
or red LEDs just stay dark in their states.

``show(state, hold_s=…)`` shows a state for *hold_s* seconds and then returns
to ``idle`` on its own, unless another state was shown meanwhile (results
such as ``denied`` are transient; ``locked`` and ``granted`` in a session are
not).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Literal, get_args

from gpiozero import LED, RGBLED

from kiosk.devices.base import GpioDevice, PinFactory
from kiosk.devices.errors import DeviceError

logger = logging.getLogger(__name__)

StatusState = Literal["off", "idle", "face", "granted", "denied", "locked"]
STATUS_STATES: tuple[StatusState, ...] = get_args(StatusState)

Colour = Literal["green", "amber", "red"]
#: How each colour is made on an RGB LED (red, green, blue), switched on/off.
RGB_COLOURS: dict[Colour, tuple[int, int, int]] = {
    "green": (0, 1, 0),
    "amber": (1, 1, 0),
    "red": (1, 0, 0),
}


@dataclass(frozen=True)
class Look:
    """How a state looks: a colour (or none), steady or blinking ``(on_s, off_s)``."""

    colour: Colour | None
    blink: tuple[float, float] | None = None


#: The look of every state (see the module docstring).
LOOKS: dict[StatusState, Look] = {
    "off": Look(None),
    "idle": Look("amber"),
    "face": Look("amber", blink=(0.25, 0.25)),
    "granted": Look("green"),
    "denied": Look("red"),
    "locked": Look("red", blink=(0.5, 0.5)),
}


class StatusLeds(GpioDevice):
    """Discrete green/amber/red LEDs, or one RGB LED (``rgb=(red, green, blue)`` pins)."""

    kind = "status LEDs"

    def __init__(
        self,
        *,
        green: int | None = None,
        amber: int | None = None,
        red: int | None = None,
        rgb: tuple[int, int, int] | None = None,
        active_high: bool = True,
        pin_factory: PinFactory | None = None,
    ) -> None:
        discrete = {"green": green, "amber": amber, "red": red}
        if rgb is not None and any(pin is not None for pin in discrete.values()):
            raise DeviceError(
                "status LEDs: give either rgb=(red, green, blue) pins or green/amber/red pins, "
                "not both"
            )
        if rgb is None and all(pin is None for pin in discrete.values()):
            raise DeviceError("status LEDs: no pin given; set at least one LED pin")
        super().__init__(pin_factory=pin_factory)
        self._leds: dict[Colour, Any] = {}
        self._rgb: Any = None
        self._state: StatusState = "off"
        self._generation = 0
        self._timer: threading.Timer | None = None
        try:
            if rgb is not None:
                self._rgb = self._make(
                    list(rgb),
                    RGBLED,
                    *rgb,
                    active_high=active_high,
                    initial_value=(0, 0, 0),
                    pwm=False,
                )
                logger.info("RGB status LED on GPIO%d/%d/%d", *rgb)
            else:
                wanted: tuple[tuple[Colour, int | None], ...] = (
                    ("green", green),
                    ("amber", amber),
                    ("red", red),
                )
                for colour, pin in wanted:
                    if pin is not None:
                        self._leds[colour] = self._make(
                            [pin], LED, pin, active_high=active_high, initial_value=False
                        )
                logger.info(
                    "status LEDs on %s",
                    ", ".join(f"{c} GPIO{p}" for c, p in discrete.items() if p is not None),
                )
        except BaseException:
            self.close()
            raise

    @property
    def state(self) -> StatusState:
        """The state shown now."""
        with self._lock:
            return self._state

    def show(self, state: StatusState, *, hold_s: float | None = None) -> None:
        """Show *state*; with *hold_s*, go back to ``idle`` after that many seconds."""
        if state not in LOOKS:
            raise DeviceError(
                f"unknown LED state {state!r}; use one of: {', '.join(STATUS_STATES)}"
            )
        if hold_s is not None and not hold_s > 0:
            raise DeviceError(f"LED hold_s must be > 0 seconds, not {hold_s}")
        with self._lock:
            self._check_open()
            self._cancel_timer()
            self._generation += 1
            self._apply(state)
            if hold_s is not None and state != "idle":
                timer = threading.Timer(hold_s, self._revert, args=(self._generation,))
                timer.daemon = True
                self._timer = timer
                timer.start()

    def _revert(self, generation: int) -> None:
        with self._lock:
            if self._closed or generation != self._generation:
                return
            self._timer = None
            self._apply("idle")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _apply(self, state: StatusState) -> None:
        look = LOOKS[state]
        logger.debug("status LEDs: %s", state)
        self._state = state
        if self._rgb is not None:
            self._apply_rgb(look)
        else:
            self._apply_discrete(look)

    def _apply_rgb(self, look: Look) -> None:
        if look.colour is None:
            self._rgb.off()
        elif look.blink is None:
            self._rgb.color = RGB_COLOURS[look.colour]
        else:
            on_s, off_s = look.blink
            self._rgb.blink(
                on_time=on_s,
                off_time=off_s,
                on_color=RGB_COLOURS[look.colour],
                off_color=(0, 0, 0),
                background=True,
            )

    def _apply_discrete(self, look: Look) -> None:
        lit: set[Colour] = set()
        if look.colour == "amber" and "amber" not in self._leds:
            lit = {"green", "red"}  # a red/green LED pair mixes into amber
        elif look.colour is not None:
            lit = {look.colour}
        for colour, led in self._leds.items():
            if colour not in lit:
                led.off()
        for colour, led in self._leds.items():
            if colour in lit:
                if look.blink is None:
                    led.on()
                else:
                    on_s, off_s = look.blink
                    led.blink(on_time=on_s, off_time=off_s, background=True)

    def _before_close(self) -> None:
        with self._lock:
            self._cancel_timer()
            for led in self._leds.values():
                led.off()
            if self._rgb is not None:
                self._rgb.off()
            self._state = "off"
