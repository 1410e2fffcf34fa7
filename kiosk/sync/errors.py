"""Errors of the MQTT link and the centre's ingest."""

from __future__ import annotations

from kiosk.errors import KioskError


class SyncError(KioskError, RuntimeError):
    """The broker or the centre's database cannot be reached or used; the message says why."""

    exit_code = 69  # EX_UNAVAILABLE


class SyncBusyError(SyncError):
    """Another process is already publishing this device's outbox."""

    exit_code = 75  # EX_TEMPFAIL
