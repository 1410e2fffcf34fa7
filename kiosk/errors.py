"""Exceptions of the kiosk package.

Every error a user can meet is a :class:`KioskError` that also inherits the
builtin it resembles (so ``except FileNotFoundError`` still works), carries a
message that says what to do, and maps to a process exit code that means
something to scripts and to systemd.
"""

from __future__ import annotations


class KioskError(Exception):
    """Base class: a failure with a message a person can act on."""

    #: Exit code of the ``kiosk`` command when this error ends it.
    exit_code: int = 1


class ConfigError(KioskError, ValueError):
    """A configuration value is missing or out of range."""

    exit_code = 78  # EX_CONFIG


class ModelError(KioskError, RuntimeError):
    """A model file is missing, fails verification, or cannot be loaded."""

    exit_code = 72  # EX_OSFILE


class FetchError(KioskError, RuntimeError):
    """Obtaining a package from a registry failed."""

    exit_code = 69  # EX_UNAVAILABLE


class FrameError(KioskError, ValueError):
    """A frame or an image cannot be used (empty, corrupt, wrong layout)."""

    exit_code = 65  # EX_DATAERR


class CameraError(KioskError, RuntimeError):
    """A camera cannot be opened or stopped delivering frames."""

    exit_code = 74  # EX_IOERR
