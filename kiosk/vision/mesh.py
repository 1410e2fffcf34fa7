"""Face Mesh: 468 landmarks on the rotated face region, with the face-presence score."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from kiosk.vision.geometry import crop, roi_from_points, roi_matrix
from kiosk.vision.runtime import Model
from kiosk.vision.types import FloatArray, Roi

INPUT_SIZE = 192
NUM_LANDMARKS = 468


class FaceMesh:
    """Runs the landmark model on a region and maps its points back to the frame."""

    def __init__(self, model: Model) -> None:
        if model.input_shape != (1, INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"mesh expects a 1×192×192×3 model, got {model.input_shape}")
        self.model = model

    def landmarks(self, frame: npt.NDArray[np.uint8], roi: Roi) -> tuple[FloatArray, float]:
        """(468, 3) landmarks in frame pixels and the face-presence probability.

        z is relative depth (smaller is nearer the camera) in the same pixel scale as x.
        """
        patch = cv2.cvtColor(crop(frame, roi, INPUT_SIZE), cv2.COLOR_BGR2RGB)
        tensor = (patch.astype(np.float32) / 255.0)[None]
        raw, presence_logit = self.model.run(tensor)
        points = raw.reshape(NUM_LANDMARKS, 3).astype(np.float64)
        presence = float(1.0 / (1.0 + np.exp(-np.clip(float(presence_logit.ravel()[0]), -80, 80))))
        matrix = np.vstack([roi_matrix(roi, INPUT_SIZE), [0.0, 0.0, 1.0]])
        inverse = np.linalg.inv(matrix)
        xy1 = np.hstack([points[:, :2], np.ones((NUM_LANDMARKS, 1))])
        out = np.empty((NUM_LANDMARKS, 3), dtype=np.float32)
        out[:, :2] = (xy1 @ inverse.T)[:, :2]
        out[:, 2] = points[:, 2] * (roi.size / INPUT_SIZE)
        return out, presence


def roi_from_landmarks(landmarks: FloatArray) -> Roi:
    """The region for the next frame from this frame's landmarks (tracking)."""
    return roi_from_points(
        landmarks[:, 0], landmarks[:, 1], landmarks[33, :2], landmarks[263, :2], scale=1.5
    )
