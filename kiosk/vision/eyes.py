"""Eyelids from the iris landmark model: the eye opening Face Mesh cannot see.

Face Mesh's eye points barely move when a person blinks (its eyes are
smoothed), so blinks are measured on MediaPipe's iris landmark model instead.
Each eye is cropped square around its corners (2.3× their distance, rotated
so the corners are level), the person's left eye mirrored, and the model
returns 71 eye-region points: 0–8 the lower lid from the outer to the inner
corner, 9–15 the upper lid between them. The opening is the mean of three
lid-to-lid distances over the corner distance — an eye-aspect ratio that
drops to about a third when the eye shuts.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from kiosk.vision.geometry import crop
from kiosk.vision.runtime import Model
from kiosk.vision.types import FloatArray, Roi

INPUT_SIZE = 64
ROI_SCALE = 2.3
# (outer corner, inner corner) in Face Mesh indices; the person's right eye first
EYE_CORNERS = ((33, 133), (362, 263))
_UPPER = (11, 12, 13)
_LOWER = (3, 4, 5)


class EyeLids:
    """Eye opening per eye from the iris landmark model."""

    def __init__(self, model: Model) -> None:
        if model.input_shape != (1, INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"eye model expects 1×64×64×3, got {model.input_shape}")
        self.model = model
        self.last_invoke_s = 0.0

    def openness(self, frame: npt.NDArray[np.uint8], landmarks: FloatArray) -> tuple[float, float]:
        """(right, left) eye opening ratios of the face whose mesh ``landmarks`` are given."""
        self.last_invoke_s = 0.0
        right = self._eye(frame, landmarks, *EYE_CORNERS[0], mirror=False)
        left = self._eye(frame, landmarks, *EYE_CORNERS[1], mirror=True)
        return right, left

    def _eye(
        self, frame: npt.NDArray[np.uint8], landmarks: FloatArray, a: int, b: int, *, mirror: bool
    ) -> float:
        p0, p1 = landmarks[a, :2].astype(np.float64), landmarks[b, :2].astype(np.float64)
        width = float(np.linalg.norm(p1 - p0))
        if width < 2.0:
            return 0.0
        centre = (p0 + p1) / 2.0
        angle = math.atan2(float(p1[1] - p0[1]), float(p1[0] - p0[0]))
        roi = Roi(cx=float(centre[0]), cy=float(centre[1]), size=width * ROI_SCALE, angle=angle)
        patch = cv2.cvtColor(crop(frame, roi, INPUT_SIZE), cv2.COLOR_BGR2RGB)
        if mirror:
            patch = patch[:, ::-1]
        tensor = (patch.astype(np.float32) / 255.0)[None]
        contour, _iris = self.model.run(np.ascontiguousarray(tensor))
        self.last_invoke_s += self.model.last_invoke_s
        pts = contour.reshape(-1, 3)[:, :2].astype(np.float64)
        corner = float(np.linalg.norm(pts[0] - pts[8]))
        if corner <= 1e-6:
            return 0.0
        gaps = [
            float(np.linalg.norm(pts[u] - pts[lo])) for u, lo in zip(_UPPER, _LOWER, strict=True)
        ]
        return float(np.mean(gaps)) / corner
