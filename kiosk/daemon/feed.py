"""A camera read on its own thread, handing the main loop only the newest frame.

The main loop never waits on the camera and never falls behind it: frames that
arrive while a frame is being processed are dropped (counted), so the face
check always works on what is in front of the camera now. A camera that fails
is closed and reopened every ``retry_s`` seconds; while it is down the feed
reports it (``ok`` is False, ``error`` says why) and no new frames arrive,
which the daemon's health check sees.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from kiosk.camera import Frame, FrameSource
from kiosk.errors import KioskError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedStatus:
    label: str
    replay: bool
    ok: bool
    error: str | None
    ended: bool
    captured: int
    dropped: int
    last_frame_age_s: float | None

    def stale(self, limit_s: float) -> bool:
        """No frame yet, or none for more than ``limit_s`` seconds."""
        return self.last_frame_age_s is None or self.last_frame_age_s > limit_s


class CameraFeed:
    """Reads ``source`` in a thread; :meth:`latest` returns the newest unseen frame."""

    def __init__(self, source: FrameSource, *, retry_s: float = 2.0) -> None:
        self.source = source
        self.retry_s = retry_s
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._seq = 0
        self._taken = 0
        self._captured = 0
        self._dropped = 0
        self._last_at: float | None = None
        self._ok = False
        self._error: str | None = None
        self._ended = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kiosk-camera", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("the camera thread did not stop within %.0f s", timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- the main loop's side -----------------------------------------------------------------

    def latest(self, timeout_s: float) -> tuple[int, Frame] | None:
        """The newest frame not yet taken, with its sequence number; None after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._seq == self._taken:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set() or self._ended:
                    return None
                self._cond.wait(left)
            assert self._frame is not None  # noqa: S101 - set with every new sequence number
            self._taken = self._seq
            return self._seq, self._frame

    def status(self) -> FeedStatus:
        with self._cond:
            age = None if self._last_at is None else time.monotonic() - self._last_at
            return FeedStatus(
                label=self.source.label,
                replay=self.source.is_replay,
                ok=self._ok,
                error=self._error,
                ended=self._ended,
                captured=self._captured,
                dropped=self._dropped,
                last_frame_age_s=age,
            )

    # --- the camera thread --------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.source:
                    self._set(ok=True, error=None)
                    log.info("camera open: %s", self.source.label)
                    while not self._stop.is_set():
                        frame = self.source.read()
                        if frame is None:
                            log.info("the replay %s has ended", self.source.label)
                            self._set(ok=False, error="the replay has ended", ended=True)
                            return
                        self._put(frame)
            except (KioskError, OSError) as exc:
                log.error(
                    "camera %s failed: %s; retrying in %.0f s", self.source.label, exc, self.retry_s
                )
                self._set(ok=False, error=str(exc))
            except Exception as exc:  # a driver bug must not kill the thread silently
                log.exception("camera %s failed unexpectedly", self.source.label)
                self._set(ok=False, error=f"camera failure: {type(exc).__name__}")
            self._stop.wait(self.retry_s)

    def _put(self, frame: Frame) -> None:
        with self._cond:
            if self._seq != self._taken:
                self._dropped += 1
            self._frame = frame
            self._seq += 1
            self._captured += 1
            self._last_at = time.monotonic()
            self._cond.notify_all()

    def _set(self, *, ok: bool, error: str | None, ended: bool = False) -> None:
        with self._cond:
            self._ok, self._error = ok, error
            self._ended = self._ended or ended
            self._cond.notify_all()
