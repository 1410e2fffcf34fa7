"""Errors of step-up verification."""

from __future__ import annotations

from kiosk.errors import KioskError


class StepUpError(KioskError, RuntimeError):
    """The step-up API cannot be served (socket path in use, not creatable …)."""

    exit_code = 71  # EX_OSERR


class StepUpKeyError(StepUpError):
    """The step-up signing key (or the loopback token) is missing, unsafe or malformed."""

    exit_code = 77  # EX_NOPERM, as for the device secret
