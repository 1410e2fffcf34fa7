"""What every device class shares: keyword-only construction, a pin factory, idempotent close.

A device owns one or more gpiozero devices ("parts"). It is created open,
closes its parts in reverse order on :meth:`GpioDevice.close` (idempotent; a
part that fails to close is logged, not raised), and is a context manager.
When a constructor fails half-way, the parts already made are closed before
the :class:`~kiosk.devices.errors.DeviceError` propagates, so no pin stays
reserved.

``pin_factory=None`` means gpiozero's default factory (``Device.pin_factory``:
lgpio on Raspberry Pi OS, or whatever ``GPIOZERO_PIN_FACTORY`` names); tests
pass ``gpiozero.pins.mock.MockFactory()``. :func:`make_pin_factory` builds a
factory from its gpiozero name (``"lgpio"``, ``"rpigpio"``, ``"mock"``, …).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from types import TracebackType
from typing import Any, Self, TypeAlias, TypeVar

from kiosk.devices.errors import DeviceError, gpio_access

logger = logging.getLogger(__name__)

#: A gpiozero pin factory (``gpiozero.pins.Factory``); gpiozero ships no type hints.
PinFactory: TypeAlias = Any

_T = TypeVar("_T")


def make_pin_factory(name: str) -> PinFactory:
    """The gpiozero pin factory registered under *name* (case-insensitive), freshly made.

    Raises :class:`DeviceError` saying which names exist when *name* is unknown,
    or what to install when the factory's library is missing.
    """
    factories = {ep.name.lower(): ep for ep in entry_points(group="gpiozero_pin_factories")}
    entry = factories.get(name.lower())
    if entry is None:
        known = ", ".join(sorted(factories)) or "none (is gpiozero installed?)"
        raise DeviceError(
            f"unknown GPIO pin factory {name!r}; devices.pin_factory must be one of: {known}"
        )
    with gpio_access(f"pin factory {name!r}", ()):
        return entry.load()()


class GpioDevice:
    """Base of the device classes: parts, a lock, idempotent close, context manager."""

    #: Human name used in messages and logs.
    kind: str = "device"

    def __init__(self, *, pin_factory: PinFactory | None = None) -> None:
        self._pin_factory = pin_factory
        self._parts: list[Any] = []
        self._lock = threading.RLock()
        self._closed = False

    # -- construction helpers -------------------------------------------------------------

    def _make(self, pins: Sequence[int], build: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Build one gpiozero part with this device's factory and remember it for close()."""
        with gpio_access(self.kind, pins):
            part = build(*args, pin_factory=self._pin_factory, **kwargs)
        self._parts.append(part)
        return part

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceError(f"the {self.kind} is closed; create a new one to use it again")

    def _before_close(self) -> None:
        """Hook for subclasses: stop threads, switch outputs off.

        Runs once, after :attr:`closed` became True (so no new operation starts)
        and without the lock held (so a background thread that takes it can end).
        """

    def close(self) -> None:
        """Release the pins; safe to call more than once and from any thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._before_close()
        except Exception:
            logger.warning("%s: error while stopping", self.kind, exc_info=True)
        with self._lock:
            parts, self._parts = self._parts, []
        for part in reversed(parts):
            try:
                part.close()
            except Exception:
                logger.warning("%s: error while releasing a pin", self.kind, exc_info=True)
        logger.debug("%s closed", self.kind)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
