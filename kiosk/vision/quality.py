"""Quality gates with reasons: size, light, sharpness, pose, framing.

Howdy's lesson: reject a dark frame before matching (an IR camera between
emitter pulses, a covered lens) rather than let it produce a confident score.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from kiosk.config import QualitySettings
from kiosk.vision.types import Pose, Quality, QualityIssue

#: Grey level under which a pixel counts as "very dark" (Howdy: the first of 8 histogram bins).
DARK_LEVEL = 32


def assess(
    box: tuple[float, float, float, float],
    frame_shape: tuple[int, ...],
    aligned: npt.NDArray[np.uint8],
    pose: Pose,
    gates: QualitySettings,
) -> Quality:
    """Measure one face and list every gate it fails, in the order a person should fix them."""
    x0, y0, x1, y1 = box
    face_px = float(min(x1 - x0, y1 - y0))
    grey = cv2.cvtColor(aligned, cv2.COLOR_BGR2GRAY)
    centre = grey[16:96, 16:96]  # the face itself, without the template's margins
    brightness = float(centre.mean())
    dark_fraction = float((centre < DARK_LEVEL).mean())
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    height, width = frame_shape[:2]
    margin = 0.1 * face_px
    issues: list[QualityIssue] = []
    if x0 < -margin or y0 < -margin or x1 > width + margin or y1 > height + margin:
        issues.append(QualityIssue.PARTLY_OUTSIDE)
    if face_px < gates.min_face_px:
        issues.append(QualityIssue.TOO_SMALL)
    if brightness < gates.min_brightness or dark_fraction > gates.max_dark_fraction:
        issues.append(QualityIssue.TOO_DARK)
    if abs(pose.yaw) > gates.max_yaw_deg or abs(pose.pitch) > gates.max_pitch_deg:
        issues.append(QualityIssue.NOT_FRONTAL)
    if sharpness < gates.min_sharpness and QualityIssue.TOO_DARK not in issues:
        issues.append(QualityIssue.BLURRED)
    return Quality(
        face_px=face_px,
        brightness=brightness,
        dark_fraction=dark_fraction,
        sharpness=sharpness,
        issues=tuple(issues),
    )
