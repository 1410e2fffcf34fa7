"""Presentation-attack cues that need no model: planar motion, replay loops, depth relief.

* **Planar motion.** A printed photo or a flat screen moves as a plane: between
  any two frames its landmarks are related by one homography. A real head
  turning 15° or more moves non-rigidly in the image — the nose shifts against
  the cheeks and the outline — and a homography leaves a residual of at least
  ~6 % of the eye distance on the project's real clips, against 1–3 % for a
  photo warped as a plane. :func:`planar_residual` measures it on landmarks of
  the face's rigid parts (outline, nose, eye corners, brows).
* **Replay loops.** A clip replayed in a loop shows the same frame again
  later, pixel for pixel; a camera never does (sensor noise). :class:`RepeatDetector`
  takes each frame's fingerprint and flags one that comes back after different
  frames in between (a frozen frame is not a loop).
* **Depth relief** (when a depth sensor is fitted): a real face has its nose
  tip well in front of the plane through its outline and a physical width
  that fits its distance; a photo or a screen, even tilted, is flat.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kiosk.vision.types import DepthFrame, FloatArray

_OVAL = (
    10,
    338,
    297,
    332,
    284,
    251,
    389,
    356,
    454,
    323,
    361,
    288,
    397,
    365,
    379,
    378,
    400,
    377,
    152,
    148,
    176,
    149,
    150,
    136,
    172,
    58,
    132,
    93,
    234,
    127,
    162,
    21,
    54,
    103,
    67,
    109,
)
RIGID_POINTS = (*_OVAL, 1, 4, 5, 6, 195, 197, 168, 33, 133, 263, 362, 70, 300, 105, 334, 2, 98, 327)
NOSE_TIP = 1
_EYES = (33, 263)


def planar_residual(reference: FloatArray, current: FloatArray) -> float:
    """RMS error of the best homography from ``reference`` to ``current`` landmarks,
    in units of the eye distance (0 for a plane moved in any way)."""
    src = reference[list(RIGID_POINTS), :2].astype(np.float32)
    dst = current[list(RIGID_POINTS), :2].astype(np.float32)
    homography, _ = cv2.findHomography(src, dst, 0)
    eye_distance = float(np.linalg.norm(current[_EYES[0], :2] - current[_EYES[1], :2]))
    if homography is None or eye_distance <= 1e-6:
        return 0.0
    projected = cv2.perspectiveTransform(src[None], homography)[0]
    return float(np.sqrt(((projected - dst) ** 2).sum(axis=1).mean())) / eye_distance


class RepeatDetector:
    """Flags a face crop that comes back, identical, after different frames (a replay loop)."""

    def __init__(self) -> None:
        self._seen: dict[bytes, int] = {}
        self._last: bytes | None = None
        self._count = 0

    def is_loop(self, digest: bytes) -> bool:
        """Whether the frame with this fingerprint was seen before, with others in between."""
        self._count += 1
        looped = digest in self._seen and digest != self._last
        self._seen[digest] = self._count
        self._last = digest
        return looped


@dataclass(frozen=True)
class DepthVerdict:
    ok: bool
    reason: str
    relief_mm: float
    width_mm: float


def depth_relief(
    depth: DepthFrame,
    landmarks: FloatArray,
    *,
    min_relief_mm: float = 10.0,
    width_mm: tuple[float, float] = (100.0, 220.0),
) -> DepthVerdict:
    """Is there a face-shaped relief at the landmarks? (depth aligned to the colour frame)"""
    h, w = depth.depth_mm.shape[:2]

    def sample(index: int) -> float:
        x = round(float(landmarks[index, 0]))
        y = round(float(landmarks[index, 1]))
        if not (0 <= x < w and 0 <= y < h):
            return float("nan")
        patch = depth.depth_mm[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3]
        valid = patch[patch > 0]
        return float(np.median(valid)) if valid.size else float("nan")

    outline = [(landmarks[i, 0], landmarks[i, 1], sample(i)) for i in _OVAL]
    pts = np.array([p for p in outline if np.isfinite(p[2])], dtype=np.float64)
    nose = sample(NOSE_TIP)
    if len(pts) < 12 or not np.isfinite(nose):
        return DepthVerdict(False, "no depth at the face", 0.0, 0.0)
    # plane z = a·x + b·y + c through the outline; the nose must stand out of it
    design = np.column_stack([pts[:, 0], pts[:, 1], np.ones(len(pts))])
    coeffs, *_ = np.linalg.lstsq(design, pts[:, 2], rcond=None)
    plane_at_nose = float(coeffs @ [landmarks[NOSE_TIP, 0], landmarks[NOSE_TIP, 1], 1.0])
    relief = plane_at_nose - nose
    left, right = landmarks[234, :2], landmarks[454, :2]
    width_px = float(np.linalg.norm(left - right))
    distance = float(np.median(pts[:, 2]))
    width = width_px * distance / depth.fx if depth.fx > 0 else 0.0
    if relief < min_relief_mm:
        return DepthVerdict(False, "flat: no face relief", relief, width)
    if not width_mm[0] <= width <= width_mm[1]:
        return DepthVerdict(False, "implausible face size for its distance", relief, width)
    return DepthVerdict(True, "", relief, width)
