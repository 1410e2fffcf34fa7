"""Presentation attacks built from photos and clips, for the liveness evaluation and tests.

* :func:`printed_photo` — a photo held in front of the camera as a rigid plane:
  rotated about its own vertical or horizontal axis (an attacker's best try at
  a turn or a nod), tilted, scaled and shifted along a smooth random path, with
  blur, sensor noise and lighting drift frame by frame.
* :func:`looped` — a clip replayed in a loop.
* :func:`letterbox` — any frame fitted into the 640×480 frame of the synthetic attacks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import cv2
import numpy as np

from kiosk.vision.frames import BgrImage, u8

FRAME_W, FRAME_H = 640, 480


def plane_homography(
    width: int,
    height: int,
    *,
    yaw_deg: float,
    pitch_deg: float,
    roll_deg: float,
    scale: float,
    shift: tuple[float, float],
    focal: float = 1.4,
) -> np.ndarray:
    """Homography of a photo (``width``×``height``) seen as a plane rotated about its centre.

    A photo pixel p = (u, v, 1) lies on a plane at depth f: X = A·p + c with
    c = (0, 0, f); rotated about c it is X' = R·A·p + c, seen at K·X'.
    """
    f = focal * max(FRAME_W, FRAME_H)
    k = np.array([[f, 0, FRAME_W / 2], [0, f, FRAME_H / 2], [0, 0, 1.0]])
    ry, rx, rz = (math.radians(a) for a in (yaw_deg, pitch_deg, roll_deg))
    rot_y = np.array([[math.cos(ry), 0, math.sin(ry)], [0, 1, 0], [-math.sin(ry), 0, math.cos(ry)]])
    rot_x = np.array([[1, 0, 0], [0, math.cos(rx), -math.sin(rx)], [0, math.sin(rx), math.cos(rx)]])
    rot_z = np.array([[math.cos(rz), -math.sin(rz), 0], [math.sin(rz), math.cos(rz), 0], [0, 0, 1]])
    rot = rot_z @ rot_x @ rot_y
    a = np.array([[scale, 0, -scale * width / 2], [0, scale, -scale * height / 2], [0, 0, 0]])
    m = rot @ a + np.outer([0.0, 0.0, f], [0.0, 0.0, 1.0])
    move = np.array([[1.0, 0, shift[0]], [0, 1.0, shift[1]], [0, 0, 1.0]])
    homography = move @ k @ m
    return np.asarray(homography / homography[2, 2], dtype=np.float64)


def _smooth_path(rng: random.Random, frames: int, amplitude: float) -> np.ndarray:
    knots = [rng.uniform(-amplitude, amplitude) for _ in range(4)]
    xs = np.linspace(0, 3, frames)
    return np.interp(xs, range(4), knots)


def printed_photo(
    photo: BgrImage, *, motion: str, frames: int, rng: random.Random
) -> list[BgrImage]:
    """Frames of ``photo`` presented as a rigid plane.

    ``motion``: ``"turn"`` (rotated about its vertical axis, out and back, up to
    ±35°), ``"nod"`` (about its horizontal axis), or ``"hold"`` (small random
    tilts only).
    """
    h, w = photo.shape[:2]
    scale = min(FRAME_W / w, FRAME_H / h) * rng.uniform(0.55, 0.85)
    peak = rng.uniform(20, 35) * rng.choice((-1, 1))
    ramp = np.sin(np.linspace(0, math.pi, frames))  # out and back
    yaw = _smooth_path(rng, frames, 4) + (peak * ramp if motion == "turn" else 0)
    pitch = _smooth_path(rng, frames, 4) + (peak * ramp if motion == "nod" else 0)
    roll = _smooth_path(rng, frames, 6)
    zoom = 1 + _smooth_path(rng, frames, 0.08)
    dx, dy = _smooth_path(rng, frames, 25), _smooth_path(rng, frames, 20)
    background = np.full((FRAME_H, FRAME_W, 3), rng.randint(40, 200), np.uint8)
    gain = 1 + _smooth_path(rng, frames, 0.25)
    out = []
    for i in range(frames):
        hom = plane_homography(
            w,
            h,
            yaw_deg=float(yaw[i]),
            pitch_deg=float(pitch[i]),
            roll_deg=float(roll[i]),
            scale=scale * float(zoom[i]),
            shift=(float(dx[i]), float(dy[i])),
        )
        frame = cv2.warpPerspective(
            photo,
            hom,
            (FRAME_W, FRAME_H),
            borderMode=cv2.BORDER_TRANSPARENT,
            dst=background.copy(),
        )
        if rng.random() < 0.5:
            frame = cv2.GaussianBlur(frame, (0, 0), rng.uniform(0.3, 1.5))
        noisy = frame.astype(np.float32) * float(gain[i])
        noisy += np.random.default_rng(rng.randrange(1 << 30)).normal(0, 3.0, frame.shape)
        out.append(u8(np.clip(noisy, 0, 255)))
    return out


def looped(clip: Sequence[BgrImage], times: int = 3) -> list[BgrImage]:
    """``clip`` played ``times`` times in a row (a replayed recording)."""
    return [frame for _ in range(times) for frame in clip]


def letterbox(frame: BgrImage) -> BgrImage:
    """A frame fitted into the 640×480 camera frame used by the synthetic attacks."""
    h, w = frame.shape[:2]
    scale = min(FRAME_W / w, FRAME_H / h)
    resized = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))))
    canvas = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
    y0, x0 = (FRAME_H - resized.shape[0]) // 2, (FRAME_W - resized.shape[1]) // 2
    canvas[y0 : y0 + resized.shape[0], x0 : x0 + resized.shape[1]] = resized
    return canvas
