"""The one exception of the devices package and the translation of gpiozero's failures into it.

gpiozero reports problems in its own vocabulary (``GPIOPinInUse``,
``BadPinFactory``, an ``lgpio.error`` saying ``'GPIO busy'``, a
``PermissionError`` on ``/dev/gpiochip0``). :func:`gpio_access` turns each of
them into a :class:`DeviceError` whose message names the device and the pin
and says what to do about it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from gpiozero.exc import BadPinFactory, GPIOPinInUse, PinInvalidPin

from kiosk.errors import KioskError

logger = logging.getLogger(__name__)

#: How a technician finds the default wiring.
PINMAP_HINT = "see hardware/pinmap.md and the [devices] settings"

#: What to do when the process may not open the GPIO character device.
GPIO_GROUP_HINT = (
    "add the service user to the gpio group (sudo usermod -aG gpio kiosk, then restart the "
    "service or log in again) so it may open /dev/gpiochip*"
)


class DeviceError(KioskError, RuntimeError):
    """A GPIO device (relay, LEDs, buzzer, keypad) cannot be set up or used."""

    exit_code = 74  # EX_IOERR, like CameraError


def _pins(pins: Sequence[int]) -> str:
    return ", ".join(f"GPIO{pin}" for pin in pins) or "no pin"


@contextmanager
def gpio_access(what: str, pins: Sequence[int]) -> Iterator[None]:
    """Run GPIO set-up code, turning gpiozero's and the OS's failures into :class:`DeviceError`.

    *what* names the device for the message (``"relay"``), *pins* are the BCM
    numbers it wanted.
    """
    where = f"{what} on {_pins(pins)}"
    try:
        yield
    except DeviceError:
        raise
    except GPIOPinInUse as exc:
        raise DeviceError(
            f"{where}: the pin is already in use by another device of this program ({exc}); "
            f"give every device its own pin ({PINMAP_HINT}), or close the other device first"
        ) from exc
    except BadPinFactory as exc:
        raise DeviceError(
            f"{where}: no GPIO library could be loaded ({exc}); on a Raspberry Pi install "
            "python3-lgpio (sudo apt install python3-lgpio) and create the venv with "
            "--system-site-packages; on a machine without GPIO disable the devices or set "
            "devices.pin_factory = 'mock' (or GPIOZERO_PIN_FACTORY=mock) to simulate them"
        ) from exc
    except PinInvalidPin as exc:
        raise DeviceError(
            f"{where}: {exc}; use BCM GPIO numbers 2-27 of the 40-pin header ({PINMAP_HINT})"
        ) from exc
    except PermissionError as exc:
        raise DeviceError(
            f"{where}: no access to the GPIO chip ({exc}); {GPIO_GROUP_HINT}"
        ) from exc
    except Exception as exc:  # lgpio.error, OSError and other back-end specific errors
        raise _translate(where, exc) from exc


def _translate(where: str, exc: Exception) -> DeviceError:
    text = str(exc).lower()
    if "busy" in text:
        return DeviceError(
            f"{where}: another program holds the pin ({exc}); stop it (gpioinfo names the "
            "consumer of each line) or move this device to a free pin "
            f"({PINMAP_HINT})"
        )
    if "permission" in text or "gpiochip" in text or "/dev/gpiomem" in text:
        return DeviceError(f"{where}: no access to the GPIO chip ({exc}); {GPIO_GROUP_HINT}")
    return DeviceError(f"{where}: cannot use the GPIO pin ({type(exc).__name__}: {exc})")
