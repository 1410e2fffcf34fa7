"""Choosing the frames that become a user's templates (pure; the app feeds it frames).

A frame is kept only when it shows exactly one face that passes every quality
gate and is near-frontal (stricter than verification: enrolment sets the
reference). Near-duplicates of a kept frame add nothing and are skipped; a face
that does not match the ones already kept (someone else stepped in) is
refused. Enrolment succeeds with 3 to 5 templates; images are never kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from kiosk.vision.types import FaceObservation, FloatArray

MIN_TEMPLATES = 3
MAX_TEMPLATES = 5


class Verdict(Enum):
    KEPT = "kept"
    NO_FACE = "no face"
    SEVERAL_FACES = "more than one face"
    POOR_QUALITY = "quality"
    NOT_FRONTAL = "not frontal"
    DUPLICATE = "too similar to a kept frame"
    DIFFERENT_PERSON = "does not match the frames already kept"


@dataclass(frozen=True)
class FrameResult:
    verdict: Verdict
    kept: int
    detail: str = ""


@dataclass
class EnrolmentCollector:
    """Accumulates templates from observed frames."""

    threshold: float
    max_yaw_deg: float = 20.0
    max_pitch_deg: float = 20.0
    duplicate_similarity: float = 0.97
    target: int = MAX_TEMPLATES
    templates: list[FloatArray] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return len(self.templates) >= self.target

    @property
    def enough(self) -> bool:
        return len(self.templates) >= MIN_TEMPLATES

    def offer(self, faces: list[FaceObservation]) -> FrameResult:
        """Consider one frame's faces (each with its embedding)."""
        if not faces:
            return FrameResult(Verdict.NO_FACE, len(self.templates))
        if len(faces) > 1:
            return FrameResult(Verdict.SEVERAL_FACES, len(self.templates))
        face = faces[0]
        if not face.quality.ok:
            detail = ", ".join(i.value for i in face.quality.issues)
            return FrameResult(Verdict.POOR_QUALITY, len(self.templates), detail)
        if abs(face.pose.yaw) > self.max_yaw_deg or abs(face.pose.pitch) > self.max_pitch_deg:
            return FrameResult(Verdict.NOT_FRONTAL, len(self.templates), "Look straight ahead.")
        if face.embedding is None:
            raise ValueError("enrolment needs embedded observations")
        vector = face.embedding
        if self.templates:
            sims = [float(np.dot(vector, t)) for t in self.templates]
            if max(sims) >= self.duplicate_similarity:
                return FrameResult(Verdict.DUPLICATE, len(self.templates))
            if float(np.mean(sims)) < self.threshold:
                return FrameResult(Verdict.DIFFERENT_PERSON, len(self.templates))
        self.templates.append(vector)
        return FrameResult(Verdict.KEPT, len(self.templates))
