"""Regions, crops and the 5-point similarity alignment (all pure numpy/OpenCV)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from kiosk.vision.frames import u8
from kiosk.vision.types import Detection, FloatArray, Roi

#: The ArcFace 112×112 template: the image-left eye, image-right eye, nose tip,
#: image-left and image-right mouth corners.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


def _normalize_angle(angle: float) -> float:
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def roi_from_points(
    xs: FloatArray, ys: FloatArray, start: FloatArray, end: FloatArray, scale: float = 1.5
) -> Roi:
    """MediaPipe's rect-from-points: box of the points, rotated so start→end is horizontal.

    The box is taken in the rotated frame, scaled by ``scale`` and made square on
    its long side.
    """
    angle = _normalize_angle(
        -math.atan2(-(float(end[1]) - float(start[1])), float(end[0]) - float(start[0]))
    )
    cx0, cy0 = (float(xs.min()) + float(xs.max())) / 2, (float(ys.min()) + float(ys.max())) / 2
    cos, sin = math.cos(-angle), math.sin(-angle)
    rx = (xs - cx0) * cos - (ys - cy0) * sin
    ry = (xs - cx0) * sin + (ys - cy0) * cos
    w, h = float(rx.max() - rx.min()), float(ry.max() - ry.min())
    mx, my = (float(rx.max()) + float(rx.min())) / 2, (float(ry.max()) + float(ry.min())) / 2
    cos, sin = math.cos(angle), math.sin(angle)
    cx = cx0 + mx * cos - my * sin
    cy = cy0 + mx * sin + my * cos
    return Roi(cx=cx, cy=cy, size=max(w, h) * scale, angle=angle)


def roi_from_detection(det: Detection) -> Roi:
    """Face Mesh region from a detection: its box, rotated by the eye line, ×1.5, square."""
    x0, y0, x1, y1 = det.box
    angle = _normalize_angle(
        -math.atan2(
            -(float(det.keypoints[1, 1]) - float(det.keypoints[0, 1])),
            float(det.keypoints[1, 0]) - float(det.keypoints[0, 0]),
        )
    )
    return Roi(cx=(x0 + x1) / 2, cy=(y0 + y1) / 2, size=max(x1 - x0, y1 - y0) * 1.5, angle=angle)


def roi_matrix(roi: Roi, out_size: int) -> npt.NDArray[np.float64]:
    """2×3 affine matrix mapping frame pixels into the ``out_size`` square crop of ``roi``."""
    scale = out_size / roi.size
    cos, sin = math.cos(roi.angle) * scale, math.sin(roi.angle) * scale
    # rotate by -angle about the roi centre, scale, then move the centre to the crop centre
    return np.array(
        [
            [cos, sin, out_size / 2 - cos * roi.cx - sin * roi.cy],
            [-sin, cos, out_size / 2 + sin * roi.cx - cos * roi.cy],
        ],
        dtype=np.float64,
    )


def crop(frame: npt.NDArray[np.uint8], roi: Roi, out_size: int) -> npt.NDArray[np.uint8]:
    """The rotated square ``roi`` of ``frame`` resampled to ``out_size``² (black outside)."""
    return u8(
        cv2.warpAffine(
            frame,
            roi_matrix(roi, out_size),
            (out_size, out_size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
    )


def similarity_transform(src: FloatArray, dst: FloatArray) -> npt.NDArray[np.float64]:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src → dst.

    Umeyama's closed form; returns a 2×3 matrix for ``cv2.warpAffine``.
    """
    src64, dst64 = src.astype(np.float64), dst.astype(np.float64)
    mu_s, mu_d = src64.mean(axis=0), dst64.mean(axis=0)
    s_c, d_c = src64 - mu_s, dst64 - mu_d
    var_s = float((s_c**2).sum()) / len(src64)
    cov = d_c.T @ s_c / len(src64)
    u, sig, vt = np.linalg.svd(cov)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1, 1] = -1.0
    rot = u @ d @ vt
    scale = float(np.trace(np.diag(sig) @ d)) / var_s if var_s > 0 else 1.0
    trans = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, trans[:, None]])


def align(frame: npt.NDArray[np.uint8], five: FloatArray, size: int = 112) -> npt.NDArray[np.uint8]:
    """The face warped so its five points land on the ArcFace template (112×112)."""
    matrix = similarity_transform(five, ARCFACE_TEMPLATE * (size / 112.0))
    return u8(
        cv2.warpAffine(
            frame,
            matrix,
            (size, size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
    )
