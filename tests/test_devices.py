"""GPIO devices on gpiozero's MockFactory: levels, timing, keypad scanning, errors, facade.

Timing is checked on the MockPin's recorded states: each carries the seconds
since the previous change. :func:`assert_timeline` checks the number of changes
and that each state lasted at least its time and ended within a scheduling
slack (gpiozero's ``assert_states_and_times`` allows only 50 ms late, which a
loaded 2-core machine's thread scheduling exceeds without anything being wrong).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from gpiozero import LED, Device
from gpiozero.pins.mock import MockFactory, MockPin
from pydantic import BaseModel, ValidationError

from kiosk.devices import (
    LAYOUTS,
    BeepPattern,
    ButtonKeypad,
    Buzzer,
    DeviceError,
    DeviceIOSettings,
    Devices,
    MatrixKeypad,
    PinEntry,
    Relay,
    StatusLeds,
    make_pin_factory,
)
from kiosk.devices.settings import (
    BuzzerSettings,
    KeypadSettings,
    RelaySettings,
    StatusLedSettings,
)
from kiosk.errors import KioskError

ROWS = (5, 6, 12, 13)
COLS = (16, 26, 25)
COLS_4X4 = (16, 26, 25, 4)


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    mock = MockFactory()
    yield mock
    mock.close()
    mock.reset()


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll until *condition* holds; the timeout only stops a broken test from hanging."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


SCHEDULING_SLACK_S = 0.5


def assert_timeline(pin: Any, expected: Sequence[tuple[float, bool]]) -> None:
    """Wait for the pin's changes, then compare states and their spacing.

    Each state must last at least its expected time (a pulse or a beep is never
    cut short) and end within a scheduling slack of it: gpiozero's own
    ``assert_states_and_times`` allows only 50 ms late, which a busy 2-core CI
    machine's thread scheduling can exceed without anything being wrong.
    """
    wait_until(lambda: len(pin.states) >= len(expected))
    assert [bool(s.state) for s in pin.states] == [state for _, state in expected]
    for actual, (delay, _state) in zip(pin.states, expected, strict=True):
        assert delay - 0.02 <= actual.timestamp <= delay + SCHEDULING_SLACK_S, (
            f"state {actual.state} came after {actual.timestamp:.3f} s, expected {delay} s"
        )


# -- relay ------------------------------------------------------------------------------------


def test_relay_pulse_is_timed_and_does_not_block(factory: MockFactory) -> None:
    with Relay(pin=17, pulse_s=0.2, pin_factory=factory) as relay:
        pin = factory.pin(17)
        pin.clear_states()
        relay.pulse()
        assert len(pin.states) < 3  # returned before the pulse ended
        assert_timeline(pin, [(0.0, False), (0.0, True), (0.2, False)])
        assert not relay.is_active


def test_relay_active_low_pulse_with_explicit_length(factory: MockFactory) -> None:
    with Relay(pin=17, active_high=False, pin_factory=factory) as relay:
        pin = factory.pin(17)
        assert pin.state is True  # high = released on an active-low board
        pin.clear_states()
        relay.pulse(0.15)
        assert_timeline(pin, [(0.0, True), (0.0, False), (0.15, True)])


def test_relay_session_mode_holds_until_lock(factory: MockFactory) -> None:
    with Relay(pin=17, mode="session", pin_factory=factory) as relay:
        pin = factory.pin(17)
        relay.grant()
        assert pin.state is True and relay.is_active
        time.sleep(0.05)
        assert pin.state is True
        relay.lock()
        assert pin.state is False
        relay.hold()
        relay.release()
        assert pin.state is False


def test_relay_pulse_mode_lock_lets_the_door_pulse_finish(factory: MockFactory) -> None:
    with Relay(pin=17, pulse_s=0.1, pin_factory=factory) as relay:
        pin = factory.pin(17)
        pin.clear_states()
        relay.grant()
        relay.lock()
        assert_timeline(pin, [(0.0, False), (0.0, True), (0.1, False)])


def test_relay_close_twice_switches_off_and_refuses_use(factory: MockFactory) -> None:
    relay = Relay(pin=17, mode="session", pin_factory=factory)
    relay.hold()
    relay.close()
    relay.close()
    assert relay.closed
    assert factory.pin(17).state is False
    with pytest.raises(DeviceError, match="closed"):
        relay.pulse()
    # the pin is free again
    Relay(pin=17, pin_factory=factory).close()


def test_relay_rejects_bad_options(factory: MockFactory) -> None:
    with pytest.raises(DeviceError, match="pulse_s"):
        Relay(pin=17, pulse_s=0, pin_factory=factory)
    with pytest.raises(DeviceError, match="mode"):
        Relay(pin=17, mode="door", pin_factory=factory)  # type: ignore[arg-type]


# -- errors -----------------------------------------------------------------------------------


def test_pin_in_use_is_a_clear_device_error(factory: MockFactory) -> None:
    with Relay(pin=17, pin_factory=factory), pytest.raises(DeviceError) as caught:
        Buzzer(pin=17, pin_factory=factory)
    err = caught.value
    assert isinstance(err, KioskError) and isinstance(err, RuntimeError)
    assert "GPIO17" in str(err) and "already in use" in str(err)
    assert "pinmap.md" in str(err)


class _FailingFactory(MockFactory):  # type: ignore[misc]
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def pin(self, name: Any, pin_class: Any = None, **kwargs: Any) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "advice"),
    [
        (PermissionError(13, "Permission denied", "/dev/gpiochip0"), "gpio group"),
        (OSError("can not open gpiochip"), "gpio group"),
        (RuntimeError("'GPIO busy'"), "another program holds the pin"),
    ],
)
def test_os_level_failures_say_what_to_do(error: Exception, advice: str) -> None:
    with pytest.raises(DeviceError, match=advice):
        Relay(pin=17, pin_factory=_FailingFactory(error))


def test_missing_gpio_library_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no-such-factory")
    with pytest.raises(DeviceError, match="python3-lgpio"):
        Relay(pin=17)


def test_make_pin_factory_by_name() -> None:
    mock = make_pin_factory("mock")
    try:
        assert isinstance(mock, MockFactory)
    finally:
        mock.close()
    with pytest.raises(DeviceError, match="lgpio"):
        make_pin_factory("no-such-factory")


# -- buzzer -----------------------------------------------------------------------------------


def _buzzer_pin(factory: MockFactory) -> Any:
    pin = factory.pin(27)
    pin.clear_states()
    return pin


def test_buzzer_denied_is_two_short_beeps(factory: MockFactory) -> None:
    with Buzzer(pin=27, pin_factory=factory) as buzzer:
        pin = _buzzer_pin(factory)
        buzzer.play("denied")
        assert_timeline(pin, [(0.0, False), (0.0, True), (0.1, False), (0.1, True), (0.1, False)])


def test_buzzer_granted_is_one_short_beep_and_key_a_tick(factory: MockFactory) -> None:
    with Buzzer(pin=27, pin_factory=factory) as buzzer:
        pin = _buzzer_pin(factory)
        buzzer.play("granted")
        assert_timeline(pin, [(0.0, False), (0.0, True), (0.1, False)])
        pin.clear_states()
        buzzer.play("key")
        assert_timeline(pin, [(0.0, False), (0.0, True), (0.03, False)])


def test_buzzer_locked_is_three_long_beeps(factory: MockFactory) -> None:
    with Buzzer(pin=27, pin_factory=factory) as buzzer:
        pin = _buzzer_pin(factory)
        buzzer.play("locked")
        assert_timeline(
            pin,
            [
                (0.0, False),
                (0.0, True),
                (0.3, False),
                (0.15, True),
                (0.3, False),
                (0.15, True),
                (0.3, False),
            ],
        )


def test_buzzer_new_pattern_replaces_the_old(factory: MockFactory) -> None:
    with Buzzer(pin=27, pin_factory=factory) as buzzer:
        pin = _buzzer_pin(factory)
        buzzer.play("locked")
        wait_until(lambda: pin.state is True)
        buzzer.play("granted")
        assert_timeline(pin, [(0.0, False), (0.0, True), (0.1, False)])
        time.sleep(0.45)  # past where "locked" would have sounded its second beep (0.45 s)
        assert len(pin.states) == 3


def test_buzzer_custom_pattern_and_unknown_name(factory: MockFactory) -> None:
    with Buzzer(
        pin=27,
        patterns={"granted": BeepPattern(on_s=0.05, off_s=0.05, count=2)},
        pin_factory=factory,
    ) as buzzer:
        pin = _buzzer_pin(factory)
        buzzer.play("granted")
        assert_timeline(
            pin, [(0.0, False), (0.0, True), (0.05, False), (0.05, True), (0.05, False)]
        )
        with pytest.raises(DeviceError, match="unknown buzzer pattern"):
            buzzer.play("fanfare")  # type: ignore[arg-type]
    with pytest.raises(DeviceError):
        BeepPattern(on_s=0, off_s=0, count=1)
    assert BeepPattern(on_s=0.3, off_s=0.15, count=3).duration_s == pytest.approx(1.2)


# -- status LEDs ------------------------------------------------------------------------------

GREEN, AMBER, RED = 22, 23, 24


def _levels(factory: MockFactory, *pins: int) -> tuple[bool, ...]:
    return tuple(bool(factory.pin(p).state) for p in pins)


@pytest.mark.parametrize(
    ("state", "green", "amber", "red"),
    [
        ("off", False, False, False),
        ("idle", False, True, False),
        ("granted", True, False, False),
        ("denied", False, False, True),
    ],
)
def test_led_steady_states(
    factory: MockFactory, state: Any, green: bool, amber: bool, red: bool
) -> None:
    with StatusLeds(green=GREEN, amber=AMBER, red=RED, pin_factory=factory) as leds:
        leds.show("granted" if state != "granted" else "denied")  # start from something else
        leds.show(state)
        assert leds.state == state
        assert _levels(factory, GREEN, AMBER, RED) == (green, amber, red)


def test_led_face_step_blinks_amber(factory: MockFactory) -> None:
    with StatusLeds(green=GREEN, amber=AMBER, red=RED, pin_factory=factory) as leds:
        amber = factory.pin(AMBER)
        amber.clear_states()
        leds.show("face")
        assert_timeline(amber, [(0.0, False), (0.0, True), (0.25, False)])
        assert _levels(factory, GREEN, RED) == (False, False)


def test_led_locked_blinks_red(factory: MockFactory) -> None:
    with StatusLeds(green=GREEN, amber=AMBER, red=RED, pin_factory=factory) as leds:
        red = factory.pin(RED)
        red.clear_states()
        leds.show("locked")
        assert_timeline(red, [(0.0, False), (0.0, True), (0.5, False)])
        assert _levels(factory, GREEN, AMBER) == (False, False)


def test_led_result_returns_to_idle_after_hold(factory: MockFactory) -> None:
    with StatusLeds(green=GREEN, amber=AMBER, red=RED, pin_factory=factory) as leds:
        red, amber = factory.pin(RED), factory.pin(AMBER)
        red.clear_states()
        amber.clear_states()
        leds.show("denied", hold_s=0.2)
        assert_timeline(red, [(0.0, False), (0.0, True), (0.2, False)])
        assert_timeline(amber, [(0.0, False), (0.2, True)])
        assert leds.state == "idle"


def test_led_newer_state_cancels_the_return_to_idle(factory: MockFactory) -> None:
    with StatusLeds(green=GREEN, amber=AMBER, red=RED, pin_factory=factory) as leds:
        leds.show("denied", hold_s=0.1)
        leds.show("granted")
        time.sleep(0.25)
        assert leds.state == "granted"
        assert _levels(factory, GREEN, AMBER, RED) == (True, False, False)


def test_led_without_amber_mixes_green_and_red(factory: MockFactory) -> None:
    with StatusLeds(green=GREEN, red=RED, pin_factory=factory) as leds:
        leds.show("idle")
        assert _levels(factory, GREEN, RED) == (True, True)
        leds.show("denied")
        assert _levels(factory, GREEN, RED) == (False, True)


def test_rgb_led_colours(factory: MockFactory) -> None:
    r, g, b = 24, 22, 23
    with StatusLeds(rgb=(r, g, b), pin_factory=factory) as leds:
        leds.show("idle")
        assert _levels(factory, r, g, b) == (True, True, False)  # amber
        leds.show("granted")
        assert _levels(factory, r, g, b) == (False, True, False)
        leds.show("denied")
        assert _levels(factory, r, g, b) == (True, False, False)
        red = factory.pin(r)
        leds.show("off")
        red.clear_states()
        leds.show("face")
        assert_timeline(red, [(0.0, False), (0.0, True), (0.25, False)])
        assert factory.pin(b).state is False


def test_led_common_anode_is_active_low(factory: MockFactory) -> None:
    with StatusLeds(rgb=(24, 22, 23), active_high=False, pin_factory=factory) as leds:
        leds.show("granted")
        assert _levels(factory, 24, 22, 23) == (True, False, True)


def test_led_bad_arguments(factory: MockFactory) -> None:
    with pytest.raises(DeviceError, match="not both"):
        StatusLeds(green=GREEN, rgb=(1, 2, 3), pin_factory=factory)
    with pytest.raises(DeviceError, match="no pin"):
        StatusLeds(pin_factory=factory)
    with (
        StatusLeds(green=GREEN, pin_factory=factory) as leds,
        pytest.raises(DeviceError, match="unknown LED state"),
    ):
        leds.show("party")  # type: ignore[arg-type]


def test_led_close_twice_turns_off_and_frees_pins(factory: MockFactory) -> None:
    leds = StatusLeds(green=GREEN, amber=AMBER, red=RED, pin_factory=factory)
    leds.show("locked")
    leds.show("granted", hold_s=5)
    leds.close()
    leds.close()
    assert _levels(factory, GREEN, AMBER, RED) == (False, False, False)
    StatusLeds(green=GREEN, amber=AMBER, red=RED, pin_factory=factory).close()


# -- matrix keypad ----------------------------------------------------------------------------


class KeyMatrix:
    """Keys wired between row and column mock pins, like a membrane keypad.

    Row pins are :class:`_RowPin`: whenever the scanner changes a row, the
    columns are recomputed at once — a column whose key is held on a row that
    is driven low reads low, otherwise its pull-up holds it high.
    """

    def __init__(
        self, factory: MockFactory, rows: Sequence[int], cols: Sequence[int], grid: Sequence[str]
    ) -> None:
        self.grid = grid
        self.pressed: set[str] = set()
        self.most_rows_low = 0
        self._lock = threading.RLock()
        self.row_pins = [factory.pin(r, pin_class=_RowPin, matrix=self) for r in rows]
        self.col_pins = [factory.pin(c) for c in cols]

    def press(self, key: str) -> None:
        with self._lock:
            self.pressed.add(key)
            self.refresh()

    def release(self, key: str) -> None:
        with self._lock:
            self.pressed.discard(key)
            self.refresh()

    def refresh(self) -> None:
        with self._lock:
            low_rows = [
                r
                for r, pin in enumerate(self.row_pins)
                if pin.function == "output" and not pin.state
            ]
            self.most_rows_low = max(self.most_rows_low, len(low_rows))
            for c, col in enumerate(self.col_pins):
                if col.function != "input":
                    continue
                if any(self.grid[r][c] in self.pressed for r in low_rows):
                    col.drive_low()
                elif col.pull == "up":
                    col.drive_high()


class _RowPin(MockPin):  # type: ignore[misc]
    def __init__(self, factory: Any, info: Any, matrix: KeyMatrix | None = None) -> None:
        super().__init__(factory, info)
        self.matrix = matrix

    def _change_state(self, value: bool) -> bool:
        changed: bool = super()._change_state(value)
        matrix = getattr(self, "matrix", None)
        if matrix is not None:
            matrix.refresh()
        return changed


def _tap(pad: MatrixKeypad, matrix: KeyMatrix, key: str, scans: int = 2) -> None:
    matrix.press(key)
    for _ in range(scans):
        pad.scan_once()
    matrix.release(key)
    for _ in range(scans):
        pad.scan_once()


def test_matrix_keypad_emits_keys_in_order(factory: MockFactory) -> None:
    matrix = KeyMatrix(factory, ROWS, COLS, LAYOUTS["4x3"])
    keys: list[str] = []
    with MatrixKeypad(
        row_pins=ROWS, col_pins=COLS, on_key=keys.append, autostart=False, pin_factory=factory
    ) as pad:
        for key in "1234#":
            _tap(pad, matrix, key)
        for key in "11*0":  # repeats need a release in between, and get one
            _tap(pad, matrix, key)
    assert keys == list("1234#11*0")
    assert matrix.most_rows_low == 1  # one row selected at a time


def test_matrix_keypad_every_key_of_4x4(factory: MockFactory) -> None:
    matrix = KeyMatrix(factory, ROWS, COLS_4X4, LAYOUTS["4x4"])
    keys: list[str] = []
    with MatrixKeypad(
        row_pins=ROWS,
        col_pins=COLS_4X4,
        layout="4x4",
        on_key=keys.append,
        autostart=False,
        pin_factory=factory,
    ) as pad:
        everything = "".join(LAYOUTS["4x4"])
        for key in everything:
            _tap(pad, matrix, key)
    assert "".join(keys) == everything


def test_matrix_scan_drives_each_row_low_once(factory: MockFactory) -> None:
    matrix = KeyMatrix(factory, ROWS, COLS, LAYOUTS["4x3"])
    with MatrixKeypad(row_pins=ROWS, col_pins=COLS, autostart=False, pin_factory=factory) as pad:
        for pin in matrix.row_pins:
            assert pin.state is True  # idle rows are high
            pin.clear_states()
        assert pad.read_matrix() == frozenset()
        for pin in matrix.row_pins:
            assert [s.state for s in pin.states] == [True, False, True]
        for pin in matrix.col_pins:
            assert pin.pull == "up"


def test_matrix_keypad_debounce(factory: MockFactory) -> None:
    matrix = KeyMatrix(factory, ROWS, COLS, LAYOUTS["4x3"])
    keys: list[str] = []
    with MatrixKeypad(
        row_pins=ROWS,
        col_pins=COLS,
        debounce_scans=3,
        on_key=keys.append,
        autostart=False,
        pin_factory=factory,
    ) as pad:
        # contact bounce: seen, gone, seen for two scans -> not yet stable
        matrix.press("5")
        pad.scan_once()
        matrix.release("5")
        pad.scan_once()
        matrix.press("5")
        pad.scan_once()
        pad.scan_once()
        assert keys == []
        assert pad.scan_once() == "5"
        for _ in range(10):  # held: no repeats
            pad.scan_once()
        # a brief opening while held is not a release
        matrix.release("5")
        pad.scan_once()
        matrix.press("5")
        for _ in range(5):
            pad.scan_once()
        assert keys == ["5"]
        # two keys at once are ambiguous: nothing; rolling to the second key emits it
        matrix.release("5")
        for _ in range(3):
            pad.scan_once()
        matrix.press("7")
        matrix.press("9")
        for _ in range(5):
            pad.scan_once()
        assert keys == ["5"]
        matrix.release("7")
        for _ in range(3):
            pad.scan_once()
        assert keys == ["5", "9"]


def test_matrix_keypad_background_scanner_with_pin_entry(factory: MockFactory) -> None:
    matrix = KeyMatrix(factory, ROWS, COLS, LAYOUTS["4x3"])
    pins: queue.Queue[str] = queue.Queue()
    lengths: list[int] = []
    entry = PinEntry(on_pin=pins.put, on_change=lengths.append)
    with MatrixKeypad(row_pins=ROWS, col_pins=COLS, pin_factory=factory) as pad:
        assert pad.scanning
        for key in "12*34#":  # distinct keys: each press is a new key for the scanner
            matrix.press(key)
            got = pad.get_key(timeout=5)
            matrix.release(key)
            assert got == key
            entry.feed(got)
        assert pins.get(timeout=1) == "34"
    assert not pad.scanning
    assert lengths == [1, 2, 0, 1, 2, 0]


def test_matrix_keypad_callback_on_scanner_thread(factory: MockFactory) -> None:
    matrix = KeyMatrix(factory, ROWS, COLS, LAYOUTS["4x3"])
    got: queue.Queue[tuple[str, str]] = queue.Queue()
    with MatrixKeypad(
        row_pins=ROWS,
        col_pins=COLS,
        on_key=lambda k: got.put((k, threading.current_thread().name)),
        pin_factory=factory,
    ):
        matrix.press("8")
        key, thread = got.get(timeout=5)
    assert (key, thread) == ("8", "kiosk-keypad")


def test_matrix_keypad_close_twice_and_bad_shape(factory: MockFactory) -> None:
    pad = MatrixKeypad(row_pins=ROWS, col_pins=COLS, pin_factory=factory)
    pad.close()
    pad.close()
    assert pad.closed and not pad.scanning
    with pytest.raises(DeviceError, match="closed"):
        pad.read_matrix()
    with pytest.raises(DeviceError, match="4 row pins and 4 column pins"):
        MatrixKeypad(row_pins=ROWS, col_pins=COLS, layout="4x4", pin_factory=factory)
    # a failed constructor releases the pins it took
    with LED(25, pin_factory=factory), pytest.raises(DeviceError, match="GPIO25"):
        MatrixKeypad(row_pins=ROWS, col_pins=COLS, pin_factory=factory)
    MatrixKeypad(row_pins=ROWS, col_pins=COLS, autostart=False, pin_factory=factory).close()


# -- button keypad ----------------------------------------------------------------------------

BUTTONS = {"1": 5, "2": 6, "*": 12, "#": 13}


def _push(factory: MockFactory, pin: int) -> None:
    factory.pin(pin).drive_low()
    factory.pin(pin).drive_high()


def test_button_keypad_keys_and_pin_entry(factory: MockFactory) -> None:
    keys: list[str] = []
    entry = PinEntry()

    def on_key(key: str) -> None:
        keys.append(key)
        if (pin := entry.feed(key)) is not None:
            keys.append(f"PIN {pin}")

    with ButtonKeypad(buttons=BUTTONS, bounce_s=0.05, on_key=on_key, pin_factory=factory):
        assert factory.pin(5).bounce == pytest.approx(0.05)
        for key in "12*21#":
            _push(factory, BUTTONS[key])
        wait_until(lambda: len(keys) >= 7)
    assert keys == ["1", "2", "*", "2", "1", "#", "PIN 21"]


def test_button_keypad_queue_close_twice_and_errors(factory: MockFactory) -> None:
    pad = ButtonKeypad(buttons=BUTTONS, pin_factory=factory)
    _push(factory, BUTTONS["#"])
    assert pad.get_key(timeout=5) == "#"
    assert pad.get_key(timeout=0.01) is None
    pad.close()
    pad.close()
    _push(factory, BUTTONS["1"])  # after close: nothing
    assert pad.get_key(timeout=0.01) is None
    with pytest.raises(DeviceError, match="not keypad keys"):
        ButtonKeypad(buttons={"X": 5}, pin_factory=factory)
    with pytest.raises(DeviceError, match="no buttons"):
        ButtonKeypad(buttons={}, pin_factory=factory)


def test_pin_entry_rules() -> None:
    entry = PinEntry(max_length=4)
    for key in "123456":
        entry.feed(key)
    assert len(entry) == 4
    assert entry.feed("A") is None and len(entry) == 4
    assert entry.feed("#") == "1234"
    assert entry.feed("#") is None  # nothing typed: nothing submitted
    entry.feed("9")
    entry.clear()
    assert len(entry) == 0


# -- settings ---------------------------------------------------------------------------------


def _fields_documented(model: type[BaseModel], where: str) -> list[str]:
    missing = []
    for name, field in model.model_fields.items():
        if not field.title or not field.description:
            missing.append(f"{where}.{name}")
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            missing += _fields_documented(annotation, f"{where}.{name}")
    return missing


def test_settings_every_field_has_title_and_description() -> None:
    assert _fields_documented(DeviceIOSettings, "devices") == []


def test_settings_defaults_are_all_disabled_and_frozen() -> None:
    settings = DeviceIOSettings()
    assert not settings.any_enabled
    with pytest.raises(ValidationError):
        settings.relay = RelaySettings()  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        DeviceIOSettings.model_validate({"relay": {"pin": 17, "colour": "red"}})


def test_settings_default_pins_do_not_clash_when_all_enabled() -> None:
    settings = DeviceIOSettings(
        relay=RelaySettings(enabled=True),
        leds=StatusLedSettings(enabled=True),
        buzzer=BuzzerSettings(enabled=True),
        keypad=KeypadSettings(enabled=True, layout="4x4", col_pins=COLS_4X4),
    )
    used = settings.used_pins()
    assert len(used) == 1 + 3 + 1 + 8
    # clear of I2C (2, 3), SPI0 (7-11), UART (14, 15), I2S (18-21) and the HAT EEPROM (0, 1)
    assert not set(used) & {0, 1, 2, 3, 7, 8, 9, 10, 11, 14, 15, 18, 19, 20, 21}


def test_settings_refuse_clashes_and_bad_shapes() -> None:
    with pytest.raises(ValidationError, match="GPIO22 is given to both"):
        DeviceIOSettings(
            relay=RelaySettings(enabled=True, pin=22), leds=StatusLedSettings(enabled=True)
        )
    # a disabled device's pin does not clash
    DeviceIOSettings(relay=RelaySettings(enabled=True, pin=22))
    with pytest.raises(ValidationError, match="4 row_pins and 4 col_pins"):
        KeypadSettings(layout="4x4")
    with pytest.raises(ValidationError, match="button_pins"):
        KeypadSettings(kind="buttons")
    with pytest.raises(ValidationError, match="not keypad keys"):
        KeypadSettings(kind="buttons", button_pins={"Z": 5})
    with pytest.raises(ValidationError):
        RelaySettings(pin=40)
    # TOML has no null: "none" marks an LED that is not fitted
    leds = StatusLedSettings.model_validate({"amber_pin": "none"})
    assert leds.amber_pin is None and leds.pins() == {"green LED": 22, "red LED": 24}
    with pytest.raises(ValidationError, match="at least one"):
        StatusLedSettings.model_validate(
            {"green_pin": "none", "amber_pin": "none", "red_pin": "none"}
        )


# -- the facade -------------------------------------------------------------------------------


def _led_state(devices: Devices) -> str:
    assert devices.leds is not None
    return devices.leds.state


def _all_enabled(mode: Any = "pulse", **keypad: Any) -> DeviceIOSettings:
    return DeviceIOSettings(
        relay=RelaySettings(enabled=True, pulse_s=0.2, mode=mode),
        leds=StatusLedSettings(enabled=True, result_hold_s=0.3),
        buzzer=BuzzerSettings(enabled=True),
        keypad=KeypadSettings(enabled=True, **keypad),
    )


def test_devices_default_touches_no_gpio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no-such-factory")  # would fail if used
    with Devices() as devices:
        assert not devices.has_hardware
        devices.on_idle()
        devices.on_face_step()
        devices.on_grant()
        devices.on_deny()
        devices.on_lockout()
        devices.on_session_lock()
        devices.on_key(lambda key: None)
    devices.close()
    assert devices.closed


def test_devices_grant_pulses_beeps_and_lights(factory: MockFactory) -> None:
    with Devices(_all_enabled(), pin_factory=factory) as devices:
        assert devices.has_hardware
        assert devices.leds is not None and devices.leds.state == "idle"
        relay, buzzer, green, amber = (factory.pin(p) for p in (17, 27, GREEN, AMBER))
        for pin in (relay, buzzer, green, amber):
            pin.clear_states()
        devices.on_grant()
        assert_timeline(relay, [(0.0, False), (0.0, True), (0.2, False)])
        assert_timeline(buzzer, [(0.0, False), (0.0, True), (0.1, False)])
        assert_timeline(green, [(0.0, False), (0.0, True), (0.3, False)])
        assert_timeline(amber, [(0.0, True), (0.0, False), (0.3, True)])


def test_devices_deny_and_lockout(factory: MockFactory) -> None:
    with Devices(_all_enabled(), pin_factory=factory) as devices:
        assert devices.leds is not None
        buzzer = factory.pin(27)
        buzzer.clear_states()
        devices.on_deny()
        assert _led_state(devices) == "denied"
        assert _levels(factory, GREEN, AMBER, RED) == (False, False, True)
        assert_timeline(
            buzzer, [(0.0, False), (0.0, True), (0.1, False), (0.1, True), (0.1, False)]
        )
        devices.on_lockout()
        assert _led_state(devices) == "locked"
        wait_until(lambda: factory.pin(27).state is True)  # the long beeps begin
        devices.on_face_step()
        assert _led_state(devices) == "face"


def test_devices_session_mode_holds_until_session_lock(factory: MockFactory) -> None:
    with Devices(_all_enabled(mode="session"), pin_factory=factory) as devices:
        assert devices.leds is not None
        devices.on_grant()
        assert factory.pin(17).state is True
        time.sleep(0.35)  # longer than pulse_s and result_hold_s: still held and green
        assert factory.pin(17).state is True
        assert _led_state(devices) == "granted"
        devices.on_session_lock()
        assert factory.pin(17).state is False
        assert _led_state(devices) == "idle"
        devices.on_grant()
        devices.on_lockout()
        assert factory.pin(17).state is False


def test_devices_keys_reach_the_callback_with_a_tick(factory: MockFactory) -> None:
    settings = _all_enabled(kind="buttons", button_pins=BUTTONS)
    keys: list[str] = []
    with Devices(settings, pin_factory=factory) as devices:
        buzzer = factory.pin(27)
        _push(factory, BUTTONS["1"])  # no callback yet: dropped
        devices.on_key(keys.append)
        wait_until(lambda: buzzer.state is False)
        buzzer.clear_states()
        _push(factory, BUTTONS["2"])
        assert_timeline(buzzer, [(0.0, False), (0.0, True), (0.03, False)])
        _push(factory, BUTTONS["#"])
        wait_until(lambda: len(keys) == 2)
        devices.on_key(None)
        _push(factory, BUTTONS["*"])
    assert keys == ["2", "#"]


def test_devices_matrix_keypad_from_settings(factory: MockFactory) -> None:
    matrix = KeyMatrix(factory, ROWS, COLS, LAYOUTS["4x3"])
    got: queue.Queue[str] = queue.Queue()
    with Devices(_all_enabled(), pin_factory=factory) as devices:
        assert isinstance(devices.keypad, MatrixKeypad)
        devices.on_key(got.put)
        matrix.press("7")
        assert got.get(timeout=5) == "7"


def test_devices_own_mock_factory_from_settings() -> None:
    settings = DeviceIOSettings(pin_factory="mock", relay=RelaySettings(enabled=True))
    devices = Devices(settings)
    assert devices.relay is not None
    devices.on_grant()
    devices.close()
    devices.close()
    assert devices.relay.closed


def test_devices_failed_build_releases_what_it_took(factory: MockFactory) -> None:
    with LED(27, pin_factory=factory), pytest.raises(DeviceError, match="buzzer on GPIO27"):
        Devices(_all_enabled(), pin_factory=factory)
    # relay and LEDs were built before the buzzer failed; their pins are free again
    Relay(pin=17, pin_factory=factory).close()
    StatusLeds(green=GREEN, amber=AMBER, red=RED, pin_factory=factory).close()
