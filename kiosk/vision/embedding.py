"""MobileFaceNet embeddings (192-d, L2-normalised) and cosine similarity."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from kiosk.vision.runtime import Model
from kiosk.vision.types import FloatArray

INPUT_SIZE = 112


class FaceEmbedder:
    """Embeds aligned 112×112 faces.

    The published model file has its batch fixed at two by a reshape constant.
    Rather than patch it, the kiosk fills the batch usefully: the face and its
    mirror image, whose embeddings are averaged (the usual flip test-time
    augmentation, which steadies the score against small pose changes). With
    ``flip=False`` the face is fed twice and one output is used.
    """

    def __init__(self, model: Model, *, flip: bool = True) -> None:
        shape = model.input_shape
        if len(shape) != 4 or shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3) or shape[0] not in (1, 2):
            raise ValueError(f"embedder expects an N×112×112×3 model (N 1 or 2), got {shape}")
        self.model = model
        self.flip = flip
        self.batch = shape[0]

    def embed(self, aligned_bgr: npt.NDArray[np.uint8]) -> FloatArray:
        """The unit-length embedding of one aligned BGR face."""
        rgb = cv2.cvtColor(aligned_bgr, cv2.COLOR_BGR2RGB).astype(np.float32)
        face = (rgb - 127.5) / 128.0
        if self.batch == 1:
            out = self.model.run(face[None])[0][0]
            if self.flip:
                out = out + self.model.run(face[None, :, ::-1].copy())[0][0]
        else:
            second = face[:, ::-1] if self.flip else face
            raw = self.model.run(np.stack([face, second]))[0]
            out = raw[0] + raw[1] if self.flip else raw[0]
        return l2_normalize(out)


def l2_normalize(vector: FloatArray) -> FloatArray:
    """``vector`` scaled to unit length (a zero vector stays zero)."""
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm > 0 else vector.astype(np.float32)


def best_match(vector: FloatArray, templates: Sequence[FloatArray]) -> float:
    """The highest similarity of a unit-length embedding to unit-length templates (≥ 1 template)."""
    return max(float(np.dot(vector, t)) for t in templates)


def cosine_similarity(a: FloatArray, b: FloatArray) -> float:
    """Cosine similarity in [-1, 1] of two embeddings (normalised here, whatever their length)."""
    return float(np.dot(l2_normalize(a), l2_normalize(b)))
