"""The liveness step of the flow: its interface, and the continuity check it starts with.

After the PIN, the flow starts a :class:`LivenessSession` from the configured
:class:`LivenessChecker` and feeds it every observation of the attempt. The
session answers PENDING (with a prompt for the screen and a progress from 0 to
1), PASSED or FAILED (with a reason). The face is only matched for a decision
once liveness has passed, and only on the same tracked face.

:class:`TrackContinuity` is the minimal checker: the same tracked face, of
usable quality, for a number of frames and a minimum time, with no cut to
another face. It is *not* a presentation-attack defence — a photo passes it —
and exists so the flow is complete and testable; the liveness work supplies
the challenge-based checker (blink, turns, …) that replaces it as the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from kiosk.vision.types import DepthFrame, FaceObservation


class LivenessStatus(Enum):
    PENDING = "pending"
    PASSED = "passed"
    FAILED = "failed"


@dataclass(frozen=True)
class LivenessUpdate:
    """What a session says after one frame."""

    status: LivenessStatus
    prompt: str = ""
    progress: float = 0.0
    reason: str = ""


class LivenessSession(Protocol):
    """One attempt's liveness check, fed frame by frame."""

    def update(
        self, obs: FaceObservation | None, t: float, depth: DepthFrame | None = None
    ) -> LivenessUpdate:
        """Take the observation of the frame at boot-clock time ``t`` (None: no face),
        and the aligned depth map when a depth sensor is fitted."""
        ...


class LivenessChecker(Protocol):
    """Starts sessions; one per attempt."""

    def start(self, t: float) -> LivenessSession: ...


class _ContinuitySession:
    def __init__(self, frames: int, seconds: float) -> None:
        self._need_frames = frames
        self._need_s = seconds
        self._track: int | None = None
        self._first_t = 0.0
        self._count = 0

    def update(
        self, obs: FaceObservation | None, t: float, depth: DepthFrame | None = None
    ) -> LivenessUpdate:
        if obs is None or not obs.quality.ok:
            return LivenessUpdate(LivenessStatus.PENDING, "Look at the camera", self._progress(t))
        if self._track is None:
            self._track, self._first_t = obs.track_id, t
        elif obs.track_id != self._track:
            return LivenessUpdate(LivenessStatus.FAILED, reason="the face changed during the check")
        self._count += 1
        if self._count >= self._need_frames and t - self._first_t >= self._need_s:
            return LivenessUpdate(LivenessStatus.PASSED, progress=1.0)
        return LivenessUpdate(LivenessStatus.PENDING, "Hold still", self._progress(t))

    def _progress(self, t: float) -> float:
        if self._track is None:
            return 0.0
        by_frames = self._count / self._need_frames
        by_time = (t - self._first_t) / self._need_s if self._need_s > 0 else 1.0
        return float(min(1.0, by_frames, by_time))


class TrackContinuity:
    """Same tracked face for ``frames`` usable frames over at least ``seconds``."""

    def __init__(self, *, frames: int = 3, seconds: float = 0.0) -> None:
        self.frames = frames
        self.seconds = seconds

    def start(self, t: float) -> LivenessSession:
        return _ContinuitySession(self.frames, self.seconds)
