"""Measures on Face Mesh landmarks that liveness and quality use.

Index sets are those of MediaPipe's 468-point topology. "Right" and "left" are
the person's own (the image's left and right on an unmirrored camera).
"""

from __future__ import annotations

import math

import numpy as np

from kiosk.vision.types import EyeMouth, FloatArray, Pose

# p1 (outer corner), p2, p3 (upper lid), p4 (inner corner), p5, p6 (lower lid)
RIGHT_EYE = (33, 160, 158, 133, 153, 144)
LEFT_EYE = (263, 387, 385, 362, 380, 373)
# inner lips top/bottom and mouth corners
MOUTH_TOP, MOUTH_BOTTOM, MOUTH_RIGHT, MOUTH_LEFT = 13, 14, 61, 291
FOREHEAD, CHIN, NOSE_TIP = 10, 152, 1
RIGHT_EYE_RING = (33, 133, 159, 145)
LEFT_EYE_RING = (263, 362, 386, 374)


def eye_aspect_ratio(landmarks: FloatArray, eye: tuple[int, ...]) -> float:
    """(|p2−p6| + |p3−p5|) / (2·|p1−p4|) in the image plane; about 0.25–0.35 open, < 0.15 shut."""
    p = landmarks[list(eye), :2].astype(np.float64)
    width = float(np.linalg.norm(p[0] - p[3]))
    if width <= 1e-6:
        return 0.0
    return float(np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2.0 * width)


def mouth_opening(landmarks: FloatArray) -> float:
    """Inner-lip gap over mouth width: about 0 closed, above 0.3 clearly open."""
    p = landmarks[:, :2].astype(np.float64)
    width = float(np.linalg.norm(p[MOUTH_RIGHT] - p[MOUTH_LEFT]))
    if width <= 1e-6:
        return 0.0
    return float(np.linalg.norm(p[MOUTH_TOP] - p[MOUTH_BOTTOM])) / width


def eyes_and_mouth(landmarks: FloatArray) -> EyeMouth:
    """Eye-aspect ratio per eye and the mouth opening."""
    return EyeMouth(
        ear_right=eye_aspect_ratio(landmarks, RIGHT_EYE),
        ear_left=eye_aspect_ratio(landmarks, LEFT_EYE),
        mouth=mouth_opening(landmarks),
    )


def head_pose(landmarks: FloatArray) -> Pose:
    """Yaw, pitch and roll from the 3-D landmarks (x right, y down, z away from the camera).

    The face's own axes are built from the eye corners (x) and forehead→chin (y);
    their cross product is the face's depth axis. Frontal gives (0, 0, 0).
    """
    p = landmarks.astype(np.float64)
    ex = p[LEFT_EYE[0]] - p[RIGHT_EYE[0]]
    ey = p[CHIN] - p[FOREHEAD]
    nx = np.linalg.norm(ex)
    if nx <= 1e-6:
        return Pose(0.0, 0.0, 0.0)
    x = ex / nx
    y = ey - float(ey @ x) * x
    ny = np.linalg.norm(y)
    if ny <= 1e-6:
        return Pose(0.0, 0.0, 0.0)
    y = y / ny
    forward = -np.cross(x, y)  # out of the face, towards the camera when frontal
    yaw = math.degrees(math.atan2(float(forward[0]), float(-forward[2])))
    pitch = math.degrees(math.atan2(float(-forward[1]), math.hypot(forward[0], forward[2])))
    roll = math.degrees(math.atan2(float(x[1]), float(x[0])))
    return Pose(yaw=yaw, pitch=pitch, roll=roll)


def five_points(landmarks: FloatArray) -> FloatArray:
    """The ArcFace five points from the mesh, in template order.

    The person's right eye centre, left eye centre, nose tip, right and left
    mouth corners: the image-left points first for an upright face.
    """
    p = landmarks[:, :2]
    right_eye = p[list(RIGHT_EYE_RING)].mean(axis=0)
    left_eye = p[list(LEFT_EYE_RING)].mean(axis=0)
    pts = np.stack([right_eye, left_eye, p[NOSE_TIP], p[MOUTH_RIGHT], p[MOUTH_LEFT]])
    return pts.astype(np.float32)
