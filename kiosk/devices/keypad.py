"""PIN input: a matrix keypad (4×3 or 4×4) or one GPIO button per key, plus a PIN collector.

Both keypads are :class:`KeySource` objects: each key press becomes one key
event, ``'0'``–``'9'``, ``'*'`` (clear), ``'#'`` (enter) and, on a 4×4 pad,
``'A'``–``'D'``. Events go to the ``on_key`` callback when one is set, else
into a bounded queue read with :meth:`KeySource.get_key`. Callbacks run on the
keypad's thread (the scanner, or gpiozero's event thread for buttons): keep
them short and hand the key to the application's own loop. Key values are
never logged — they are PIN digits.

:class:`MatrixKeypad` — rows are outputs, columns inputs with the internal
pull-ups. Every scan drives one row low at a time (the others stay high) and
reads the columns: a column that reads low has a key closed between it and the
selected row. A background thread scans ``scan_hz`` times a second (50 Hz by
default). Debounce: a key counts as pressed once it has been seen alone in
``debounce_scans`` consecutive scans (2 → 20–40 ms at 50 Hz) and as released
after as many scans without it; one event is emitted per press, on the press.
A scan that sees more than one key changes nothing (no ghost keys on pads
without diodes; rolling from one key to the next still works). The scan step
is public (:meth:`MatrixKeypad.scan_once`) so it can be driven by hand; with
gpiozero's ``MockFactory`` a test wires "keys" between the row and column pins
(see tests/test_devices.py).

Why rows are gpiozero ``DigitalOutputDevice`` (active low) and columns
``DigitalInputDevice`` (pull-up) rather than gpiozero's own keypad support:
gpiozero has none, and with these two primitives the whole matrix runs on any
pin factory, including ``MockFactory``. The price is that an unselected row is
driven high rather than left floating, so two keys pressed in one column tie a
high and a low output together: fit 1 kΩ resistors in series with the row
lines (hardware/pinmap.md), or diodes.

:class:`ButtonKeypad` — one gpiozero ``Button`` per key (pull-up, to ground),
debounced by the pin library (``bounce_s``).

:class:`PinEntry` turns key events into a PIN: digits append, ``'*'`` clears,
``'#'`` hands the PIN over.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Literal

from gpiozero import Button, DigitalInputDevice, DigitalOutputDevice

from kiosk.devices.base import GpioDevice, PinFactory
from kiosk.devices.errors import DeviceError

logger = logging.getLogger(__name__)

KeypadLayout = Literal["4x3", "4x4"]

#: Key labels row by row, as printed on the common membrane keypads.
LAYOUTS: dict[KeypadLayout, tuple[str, ...]] = {
    "4x3": ("123", "456", "789", "*0#"),
    "4x4": ("123A", "456B", "789C", "*0#D"),
}

#: Every key a keypad may emit.
KEYS: frozenset[str] = frozenset("0123456789*#ABCD")

CLEAR_KEY = "*"
ENTER_KEY = "#"

#: Receives one key; its return value is ignored (so ``PinEntry.feed`` fits).
KeyCallback = Callable[[str], object]


class KeySource(GpioDevice):
    """Base of the keypads: delivers key events to a callback or a queue."""

    kind = "keypad"

    def __init__(
        self,
        *,
        on_key: KeyCallback | None = None,
        queue_size: int = 64,
        pin_factory: PinFactory | None = None,
    ) -> None:
        super().__init__(pin_factory=pin_factory)
        self._on_key = on_key
        self._queue: queue.Queue[str] = queue.Queue(maxsize=max(1, queue_size))

    @property
    def on_key(self) -> KeyCallback | None:
        """The callback receiving each key; None queues keys for :meth:`get_key`."""
        return self._on_key

    @on_key.setter
    def on_key(self, callback: KeyCallback | None) -> None:
        self._on_key = callback

    def get_key(self, timeout: float | None = None) -> str | None:
        """The next queued key (only used while no callback is set); None on timeout."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _emit(self, key: str) -> None:
        if self._closed:
            return
        callback = self._on_key
        logger.debug("%s: key event", self.kind)  # never the key: it is part of a PIN
        if callback is None:
            while True:
                try:
                    self._queue.put_nowait(key)
                    return
                except queue.Full:
                    try:
                        self._queue.get_nowait()  # drop the oldest key
                        logger.warning("%s: key queue full, oldest key dropped", self.kind)
                    except queue.Empty:
                        pass
        try:
            callback(key)
        except Exception:
            logger.exception("%s: the key callback failed", self.kind)


def _check_grid(rows: Sequence[str]) -> tuple[str, ...]:
    grid = tuple(rows)
    if not grid or any(len(row) != len(grid[0]) for row in grid) or not grid[0]:
        raise DeviceError(f"keypad layout must be rows of equal length, not {grid!r}")
    unknown = set("".join(grid)) - KEYS
    if unknown:
        raise DeviceError(
            f"keypad layout has keys {sorted(unknown)} outside {''.join(sorted(KEYS))}"
        )
    return grid


class MatrixKeypad(KeySource):
    """A row/column matrix keypad scanned by a background thread."""

    def __init__(
        self,
        *,
        row_pins: Sequence[int],
        col_pins: Sequence[int],
        layout: KeypadLayout | Sequence[str] = "4x3",
        scan_hz: float = 50.0,
        debounce_scans: int = 2,
        on_key: KeyCallback | None = None,
        autostart: bool = True,
        pin_factory: PinFactory | None = None,
    ) -> None:
        if isinstance(layout, str):
            if layout not in LAYOUTS:
                raise DeviceError(
                    f"unknown keypad layout {layout!r}; use one of: {', '.join(LAYOUTS)}"
                )
            grid = LAYOUTS[layout]
        else:
            grid = _check_grid(layout)
        if len(row_pins) != len(grid) or len(col_pins) != len(grid[0]):
            raise DeviceError(
                f"a {len(grid)}×{len(grid[0])} keypad needs {len(grid)} row pins and "
                f"{len(grid[0])} column pins, not {len(row_pins)} and {len(col_pins)}"
            )
        if not 1 <= scan_hz <= 1000:
            raise DeviceError(f"keypad scan_hz must be within 1-1000, not {scan_hz}")
        if debounce_scans < 1:
            raise DeviceError(f"keypad debounce_scans must be >= 1, not {debounce_scans}")
        super().__init__(on_key=on_key, pin_factory=pin_factory)
        self.grid = grid
        self.row_pins = tuple(row_pins)
        self.col_pins = tuple(col_pins)
        self.scan_period_s = 1.0 / scan_hz
        self.debounce_scans = debounce_scans
        self._rows: list[Any] = []
        self._cols: list[Any] = []
        self._candidate: str | None = None
        self._seen = 0
        self._stable: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            for pin in self.row_pins:
                # active low: on() drives the row low (selected), off() drives it high
                self._rows.append(
                    self._make(
                        [pin], DigitalOutputDevice, pin, active_high=False, initial_value=False
                    )
                )
            for pin in self.col_pins:
                self._cols.append(self._make([pin], DigitalInputDevice, pin, pull_up=True))
        except BaseException:
            self.close()
            raise
        logger.info(
            "%d×%d matrix keypad: rows %s, columns %s, %.0f Hz",
            len(grid),
            len(grid[0]),
            ",".join(f"GPIO{p}" for p in self.row_pins),
            ",".join(f"GPIO{p}" for p in self.col_pins),
            scan_hz,
        )
        if autostart:
            self.start()

    def read_matrix(self) -> frozenset[str]:
        """The keys closed right now (one raw scan, no debounce)."""
        pressed: set[str] = set()
        with self._lock:
            self._check_open()
            for r, row in enumerate(self._rows):
                row.on()
                try:
                    for c, col in enumerate(self._cols):
                        if col.is_active:
                            pressed.add(self.grid[r][c])
                finally:
                    row.off()
        return frozenset(pressed)

    def scan_once(self) -> str | None:
        """Scan the matrix once and debounce; returns the key pressed by this scan, if any."""
        pressed = self.read_matrix()
        if len(pressed) > 1:
            return None  # ambiguous (two keys, or a ghost): wait for a clear reading
        raw = next(iter(pressed), None)
        if raw == self._candidate:
            self._seen += 1
        else:
            self._candidate, self._seen = raw, 1
        if self._seen >= self.debounce_scans and raw != self._stable:
            self._stable = raw
            if raw is not None:
                self._emit(raw)
                return raw
        return None

    @property
    def scanning(self) -> bool:
        """True while the background scanner runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the background scanner (``autostart=True`` does this)."""
        with self._lock:
            self._check_open()
            if self.scanning:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="kiosk-keypad", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the background scanner; :meth:`start` resumes it."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        next_scan = time.monotonic()
        while not self._stop.is_set():
            try:
                self.scan_once()
            except Exception:
                if not self._closed:
                    logger.exception("keypad scanner stopped by an error")
                return
            next_scan += self.scan_period_s
            delay = next_scan - time.monotonic()
            if delay < 0:  # fell behind (a slow callback): do not try to catch up
                next_scan, delay = time.monotonic(), 0.0
            self._stop.wait(delay)

    def _before_close(self) -> None:
        self.stop()


class ButtonKeypad(KeySource):
    """One push button per key, each between its GPIO pin and ground (or 3V3 with pull_up=False)."""

    def __init__(
        self,
        *,
        buttons: Mapping[str, int],
        pull_up: bool = True,
        bounce_s: float | None = 0.05,
        on_key: KeyCallback | None = None,
        pin_factory: PinFactory | None = None,
    ) -> None:
        if not buttons:
            raise DeviceError("button keypad: no buttons; map keys to pins, e.g. {'1': 5, ...}")
        unknown = set(buttons) - KEYS
        if unknown:
            raise DeviceError(
                f"button keypad: keys {sorted(unknown)} are not keypad keys "
                f"({''.join(sorted(KEYS))})"
            )
        super().__init__(on_key=on_key, pin_factory=pin_factory)
        self.buttons = dict(buttons)
        try:
            for key, pin in self.buttons.items():
                button = self._make([pin], Button, pin, pull_up=pull_up, bounce_time=bounce_s)
                button.when_pressed = partial(self._emit, key)
        except BaseException:
            self.close()
            raise
        logger.info("button keypad: %d buttons", len(self.buttons))

    def _before_close(self) -> None:
        with self._lock:
            for button in self._parts:
                button.when_pressed = None
                # Each gpiozero Button runs a hold-detection thread that notices a stop
                # request within 0.1 s; ask them all at once so closing a 12-key pad takes
                # 0.1 s rather than 1.2 s (Button.close() then joins a finished thread).
                hold_thread = getattr(button, "_hold_thread", None)
                if hold_thread is not None:
                    hold_thread.stopping.set()


class PinEntry:
    """Collects key events into a PIN: digits append, ``*`` clears, ``#`` submits.

    ``feed(key)`` returns the PIN when ``#`` completes one (and calls
    ``on_pin``), else None; ``on_change(length)`` lets a screen draw one dot per
    digit. Letters (4×4 pads) are ignored; digits beyond ``max_length`` are
    dropped. ``#`` with nothing typed submits nothing.
    """

    def __init__(
        self,
        *,
        on_pin: Callable[[str], None] | None = None,
        on_change: Callable[[int], None] | None = None,
        max_length: int = 12,
    ) -> None:
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, not {max_length}")
        self.on_pin = on_pin
        self.on_change = on_change
        self.max_length = max_length
        self._digits: list[str] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._digits)

    def clear(self) -> None:
        """Forget the digits typed so far."""
        with self._lock:
            self._digits.clear()
        self._changed(0)

    def feed(self, key: str) -> str | None:
        """Take one key event; returns the PIN when ``#`` submits one."""
        submitted: str | None = None
        with self._lock:
            if key == CLEAR_KEY:
                self._digits.clear()
            elif key == ENTER_KEY:
                if self._digits:
                    submitted = "".join(self._digits)
                self._digits.clear()
            elif key.isdigit() and len(key) == 1:
                if len(self._digits) >= self.max_length:
                    return None
                self._digits.append(key)
            else:
                return None
            length = len(self._digits)
        self._changed(length)
        if submitted is not None and self.on_pin is not None:
            self.on_pin(submitted)
        return submitted

    __call__ = feed

    def _changed(self, length: int) -> None:
        if self.on_change is not None:
            self.on_change(length)
