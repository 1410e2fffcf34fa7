"""What the screen shows, and how it reaches the page.

The daemon's main loop owns a :class:`View` and publishes a copy to the
:class:`Broadcaster` at every change; the screen server's event streams wake
up and send it whole (a page that reconnects gets the current state at once).
The view never carries a score, a PIN digit or a template: only what a person
at the terminal may see.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any


class Screen(StrEnum):
    IDLE = "idle"
    FACE = "face"
    RESULT = "result"
    LOCKOUT = "lockout"
    SESSION = "session"
    STEPUP = "stepup"
    UNAVAILABLE = "unavailable"


class Result(StrEnum):
    GRANTED = "granted"
    DENIED = "denied"
    LOCKED = "locked"
    SESSION_LOCKED = "session_locked"
    ERROR = "error"


MSG_STAFF = "Enter your staff number, then OK."
MSG_PIN = "Enter your PIN, then OK."


@dataclass(frozen=True)
class Entry:
    """The PIN pad's line: the staff number in clear, the PIN only as a length."""

    field: str = "staff_no"  # or "pin"
    staff_no: str = ""
    pin_length: int = 0


@dataclass(frozen=True)
class CameraView:
    label: str = ""
    replay: bool = False
    ok: bool = True


@dataclass(frozen=True)
class View:
    """One state of the screen (see the page contract in kiosk/daemon/screen.py)."""

    screen: Screen = Screen.IDLE
    message: str = MSG_STAFF
    entry: Entry = field(default_factory=Entry)
    user: str | None = None
    prompt: str = ""
    progress: float = 0.0
    fallback: bool = False
    result: Result | None = None
    locked_for_s: float = 0.0
    hold_s: float = 0.0
    session: dict[str, Any] | None = None
    stepup: dict[str, str] | None = None
    camera: CameraView = field(default_factory=CameraView)
    face: dict[str, float] | None = None

    def but(self, **changes: Any) -> View:
        return replace(self, **changes)

    def as_dict(self, seq: int) -> dict[str, Any]:
        data = asdict(self)
        data["screen"] = self.screen.value
        data["result"] = self.result.value if self.result else None
        data["progress"] = round(min(1.0, max(0.0, self.progress)), 3)
        data["locked_for_s"] = round(self.locked_for_s, 1)
        data["seq"] = seq
        return data


class Broadcaster:
    """Hands the newest view (and preview image) from the main loop to every open page."""

    def __init__(self, view: View | None = None) -> None:
        self._lock = threading.Lock()
        self._view = view or View()
        self._seq = 1
        self._payload = json.dumps(self._view.as_dict(self._seq))
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self.preview: bytes | None = None  # JPEG; replaced whole, so readers need no lock

    @property
    def view(self) -> View:
        with self._lock:
            return self._view

    def current(self) -> tuple[int, str]:
        """The current sequence number and its JSON."""
        with self._lock:
            return self._seq, self._payload

    def publish(self, view: View) -> None:
        """Make ``view`` current and wake every stream (any thread)."""
        with self._lock:
            if view == self._view:
                return
            self._view = view
            self._seq += 1
            self._payload = json.dumps(view.as_dict(self._seq))
        self.wake_all()

    def wake_all(self) -> None:
        """Wake every stream without a change (so they notice the server is closing)."""
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    def subscribe(self) -> asyncio.Event:
        """An event set at every publish (call on the server's event loop)."""
        event = asyncio.Event()
        with self._lock:
            self._waiters.add((asyncio.get_running_loop(), event))
        return event

    def unsubscribe(self, event: asyncio.Event) -> None:
        with self._lock:
            self._waiters = {w for w in self._waiters if w[1] is not event}
