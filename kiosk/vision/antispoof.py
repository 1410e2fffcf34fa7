"""FaceAntiSpoofing (passive, weak): a spoof score for one face crop.

The model (256×256 RGB in [0, 1]) has two outputs of 8: class predictions per
leaf and a leaf-node mask; their weighted sum is the spoof score (its
publishers treat above 0.2 as a spoof). Unproven: the kiosk uses it only as
one signal beside the active challenges, off by default, and ``kiosk eval
liveness`` reports whether it separates bona fide from attack frames here.
"""

from __future__ import annotations

import cv2
import numpy as np

from kiosk.vision.geometry import crop
from kiosk.vision.runtime import Model
from kiosk.vision.types import FaceObservation, Roi

INPUT_SIZE = 256


class AntiSpoof:
    """Scores faces: higher means more likely a presentation attack."""

    def __init__(self, model: Model) -> None:
        if model.input_shape != (1, INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"anti-spoof model expects 1×256×256×3, got {model.input_shape}")
        self.model = model

    def score(self, frame: np.ndarray, obs: FaceObservation) -> float:
        x0, y0, x1, y1 = obs.box
        side = 1.2 * max(x1 - x0, y1 - y0)
        roi = Roi(cx=(x0 + x1) / 2, cy=(y0 + y1) / 2, size=side, angle=0.0)
        patch = cv2.cvtColor(crop(frame, roi, INPUT_SIZE), cv2.COLOR_BGR2RGB)
        classes, mask = self.model.run((patch.astype(np.float32) / 255.0)[None])
        return float(np.sum(np.abs(classes[0]) * mask[0]))
