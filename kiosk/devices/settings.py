"""Settings of the GPIO devices: ``[devices]`` with one table per device.

Every device is off by default (``enabled = false``), so a developer machine
or a terminal without GPIO wiring needs no configuration; the pins below are
the defaults of hardware/pinmap.md (BCM numbers, chosen to stay clear of the
camera, a DSI or HDMI display, I²C, SPI, the UART and I²S audio). Example::

    [devices.relay]
    enabled = true
    mode = "pulse"        # door strike; "session" holds it while a session is open
    pulse_s = 4

    [devices.keypad]
    enabled = true
    layout = "4x4"
    col_pins = [16, 26, 25, 4]

or ``KIOSK_DEVICES__RELAY__ENABLED=true`` in the environment. Two enabled
devices on one pin are refused when the settings load.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kiosk.devices.buzzer import BuzzerPatternName
from kiosk.devices.keypad import KEYS, LAYOUTS, KeypadLayout
from kiosk.devices.relay import RelayMode

#: A BCM GPIO number of the 40-pin header (GPIO17 is physical pin 11).
GpioPin = Annotated[int, Field(ge=0, le=27)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RelaySettings(_Section):
    """The relay: a door strike pulsed on grant, or terminal power held for a session."""

    enabled: bool = Field(False, title="Relay enabled", description="A relay board is wired.")
    pin: GpioPin = Field(
        17,
        title="Relay pin",
        description="BCM GPIO driving the relay board input (GPIO17 = physical pin 11).",
    )
    active_high: bool = Field(
        True,
        title="Relay active high",
        description=(
            "True when a high level energises the relay; false for boards that switch on a "
            "low input (then mind the boot-time pin level, see hardware/pinmap.md)."
        ),
    )
    mode: RelayMode = Field(
        "pulse",
        title="Relay mode",
        description=(
            "'pulse': energise for pulse_s seconds on each grant (door strike); 'session': "
            "energise on grant and release when the session locks or a lockout starts "
            "(terminal power, monitor enable)."
        ),
    )
    pulse_s: float = Field(
        3.0,
        gt=0,
        le=60,
        title="Pulse length",
        description="Seconds the relay stays energised after a grant in 'pulse' mode.",
    )


class StatusLedSettings(_Section):
    """Status LEDs: discrete green/amber/red LEDs, or one RGB LED."""

    enabled: bool = Field(False, title="LEDs enabled", description="Status LEDs are wired.")
    kind: Literal["discrete", "rgb"] = Field(
        "discrete",
        title="LED kind",
        description="'discrete': separate green/amber/red LEDs; 'rgb': one RGB LED on rgb_pins.",
    )
    green_pin: GpioPin | None = Field(
        22,
        title="Green LED pin",
        description="BCM GPIO of the green LED (physical 15); 'none': not fitted.",
    )
    amber_pin: GpioPin | None = Field(
        23,
        title="Amber LED pin",
        description=(
            "BCM GPIO of the amber LED (physical 16); 'none': not fitted, amber is then shown "
            "as green + red (a red/green two-colour LED)."
        ),
    )
    red_pin: GpioPin | None = Field(
        24,
        title="Red LED pin",
        description="BCM GPIO of the red LED (physical 18); 'none': not fitted.",
    )
    rgb_pins: tuple[GpioPin, GpioPin, GpioPin] = Field(
        (24, 22, 23),
        title="RGB LED pins",
        description="BCM GPIOs of the red, green and blue legs of an RGB LED (kind = 'rgb').",
    )
    active_high: bool = Field(
        True,
        title="LEDs active high",
        description=(
            "True for LEDs from the pin to ground (and common-cathode RGB LEDs); false for "
            "LEDs from 3V3 to the pin (common-anode RGB LEDs)."
        ),
    )
    result_hold_s: float = Field(
        3.0,
        gt=0,
        le=60,
        title="Result display time",
        description=(
            "Seconds 'denied' (and 'granted' in pulse mode) stays shown before the LEDs "
            "return to idle."
        ),
    )

    @field_validator("green_pin", "amber_pin", "red_pin", mode="before")
    @classmethod
    def _not_fitted(cls, value: object) -> object:
        # TOML has no null: "none" (or false) says an LED is not fitted
        if value is False or (isinstance(value, str) and value.strip().lower() in {"", "none"}):
            return None
        return value

    @model_validator(mode="after")
    def _some_led(self) -> StatusLedSettings:
        if self.kind == "discrete" and not self.pins():
            raise ValueError("discrete status LEDs need at least one of green/amber/red_pin")
        return self

    def pins(self) -> dict[str, int]:
        """The pins this LED set uses, by role."""
        if self.kind == "rgb":
            return dict(zip(("rgb red", "rgb green", "rgb blue"), self.rgb_pins, strict=True))
        named = {"green LED": self.green_pin, "amber LED": self.amber_pin, "red LED": self.red_pin}
        return {role: pin for role, pin in named.items() if pin is not None}


class BuzzerSettings(_Section):
    """An active buzzer (sounds while its pin is on)."""

    enabled: bool = Field(False, title="Buzzer enabled", description="A buzzer is wired.")
    pin: GpioPin = Field(
        27, title="Buzzer pin", description="BCM GPIO of the buzzer driver (physical pin 13)."
    )
    active_high: bool = Field(
        True,
        title="Buzzer active high",
        description="True when a high level sounds the buzzer (an NPN or MOSFET driver).",
    )
    key_tick: bool = Field(True, title="Key tick", description="Tick on every keypad key press.")
    sounds: tuple[BuzzerPatternName, ...] = Field(
        ("granted", "denied", "locked", "key"),
        title="Sounds played",
        description="Which patterns sound at all (e.g. drop 'granted' for a quiet office).",
    )


class KeypadSettings(_Section):
    """PIN input: a matrix keypad or one button per key."""

    enabled: bool = Field(False, title="Keypad enabled", description="A hardware keypad is wired.")
    kind: Literal["matrix", "buttons"] = Field(
        "matrix",
        title="Keypad kind",
        description="'matrix': rows/columns keypad; 'buttons': one GPIO button per key.",
    )
    layout: KeypadLayout = Field(
        "4x3",
        title="Matrix layout",
        description="'4x3' (0-9 * #) or '4x4' (adds A-D in a fourth column).",
    )
    row_pins: tuple[GpioPin, ...] = Field(
        (5, 6, 12, 13),
        title="Row pins",
        description="BCM GPIOs of rows 1-4, top to bottom (outputs; physical 29, 31, 32, 33).",
    )
    col_pins: tuple[GpioPin, ...] = Field(
        (16, 26, 25),
        title="Column pins",
        description=(
            "BCM GPIOs of the columns, left to right (inputs with pull-ups; physical 36, 37, "
            "22; a 4x4 pad adds GPIO4, physical 7)."
        ),
    )
    scan_hz: float = Field(
        50.0, ge=10, le=500, title="Scan rate", description="Matrix scans per second."
    )
    debounce_scans: int = Field(
        2,
        ge=1,
        le=10,
        title="Debounce scans",
        description="Consecutive scans a key must be seen (gone) to count as pressed (released).",
    )
    button_pins: dict[str, GpioPin] = Field(
        default_factory=dict,
        title="Button pins",
        description="Key → BCM GPIO for kind = 'buttons', e.g. {'1' = 5, '#' = 4}.",
    )
    bounce_s: float = Field(
        0.05,
        gt=0,
        le=1,
        title="Button debounce",
        description="Seconds a button edge is ignored after the last one (kind = 'buttons').",
    )
    pull_up: bool = Field(
        True,
        title="Buttons to ground",
        description="True for buttons between the pin and ground (internal pull-up).",
    )

    @model_validator(mode="after")
    def _shape(self) -> KeypadSettings:
        if self.kind == "matrix":
            rows, cols = len(LAYOUTS[self.layout]), len(LAYOUTS[self.layout][0])
            if len(self.row_pins) != rows or len(self.col_pins) != cols:
                raise ValueError(
                    f"a {self.layout} keypad needs {rows} row_pins and {cols} col_pins, not "
                    f"{len(self.row_pins)} and {len(self.col_pins)}"
                )
        else:
            if not self.button_pins:
                raise ValueError("a 'buttons' keypad needs button_pins (key → GPIO)")
            unknown = sorted(set(self.button_pins) - KEYS)
            if unknown:
                raise ValueError(f"button_pins keys {unknown} are not keypad keys 0-9 * # A-D")
        return self

    def pins(self) -> dict[str, int]:
        """The pins this keypad uses, by role."""
        if self.kind == "buttons":
            return {f"key {key!r} button": pin for key, pin in self.button_pins.items()}
        rows = {f"keypad row {i + 1}": pin for i, pin in enumerate(self.row_pins)}
        cols = {f"keypad column {i + 1}": pin for i, pin in enumerate(self.col_pins)}
        return rows | cols


class DeviceIOSettings(_Section):
    """GPIO devices of the terminal: relay, status LEDs, buzzer, keypad (all optional)."""

    pin_factory: str | None = Field(
        None,
        title="GPIO library",
        description=(
            "gpiozero pin factory: unset = gpiozero's choice (lgpio on Raspberry Pi OS, or "
            "$GPIOZERO_PIN_FACTORY); 'lgpio', 'rpigpio', 'pigpio', 'native', or 'mock' to "
            "simulate the pins on a machine without GPIO."
        ),
    )
    relay: RelaySettings = Field(
        default_factory=RelaySettings, title="Relay", description="Door strike or power relay."
    )
    leds: StatusLedSettings = Field(
        default_factory=StatusLedSettings, title="Status LEDs", description="State indicators."
    )
    buzzer: BuzzerSettings = Field(
        default_factory=BuzzerSettings, title="Buzzer", description="Audible feedback."
    )
    keypad: KeypadSettings = Field(
        default_factory=KeypadSettings, title="Keypad", description="Hardware PIN entry."
    )

    @property
    def any_enabled(self) -> bool:
        """True when at least one device is enabled (else no GPIO is touched)."""
        return self.relay.enabled or self.leds.enabled or self.buzzer.enabled or self.keypad.enabled

    def used_pins(self) -> dict[int, str]:
        """BCM pin → the role using it, over the enabled devices."""
        return {pin: role for role, pin in self._roles()}

    def _roles(self) -> list[tuple[str, int]]:
        roles: list[tuple[str, int]] = []
        if self.relay.enabled:
            roles.append(("relay", self.relay.pin))
        if self.leds.enabled:
            roles.extend(self.leds.pins().items())
        if self.buzzer.enabled:
            roles.append(("buzzer", self.buzzer.pin))
        if self.keypad.enabled:
            roles.extend(self.keypad.pins().items())
        return roles

    @model_validator(mode="after")
    def _distinct_pins(self) -> DeviceIOSettings:
        seen: dict[int, str] = {}
        for role, pin in self._roles():
            if pin in seen:
                raise ValueError(
                    f"GPIO{pin} is given to both {seen[pin]} and {role}; every enabled device "
                    "needs its own pin (see hardware/pinmap.md)"
                )
            seen[pin] = role
        return self
