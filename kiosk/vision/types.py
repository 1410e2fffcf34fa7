"""What the vision pipeline reports about a face. Coordinates are frame pixels."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Detection:
    """One BlazeFace detection.

    ``keypoints`` are six (x, y) points: the person's right eye, left eye, nose
    tip, mouth centre, right ear tragion, left ear tragion ("right" is the
    person's own right, which is the image's left on an unmirrored camera).
    """

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float
    keypoints: FloatArray  # (6, 2)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


@dataclass(frozen=True)
class Roi:
    """A rotated square region of the frame: centre, side length, rotation (radians)."""

    cx: float
    cy: float
    size: float
    angle: float


@dataclass(frozen=True)
class Pose:
    """Head pose in degrees.

    yaw > 0: the nose points to the image's right (the person turned to their own
    left, unmirrored camera); pitch > 0: looking up; roll > 0: head tilted
    clockwise as seen in the image.
    """

    yaw: float
    pitch: float
    roll: float


class QualityIssue(Enum):
    """Why a face is not good enough, worded for the person in front of the camera."""

    TOO_SMALL = "Move closer to the camera."
    TOO_DARK = "Too dark: face the light or turn on the light."
    BLURRED = "Hold still for a moment."
    NOT_FRONTAL = "Look straight at the camera."
    PARTLY_OUTSIDE = "Move so your whole face is in view."


@dataclass(frozen=True)
class Quality:
    """Quality measures of one face and the issues that fail the gates."""

    face_px: float
    brightness: float
    dark_fraction: float
    sharpness: float
    issues: tuple[QualityIssue, ...]

    @property
    def ok(self) -> bool:
        return not self.issues


@dataclass(frozen=True)
class EyeMouth:
    """Eye-aspect ratio per eye (the person's right/left) and the mouth opening ratio."""

    ear_right: float
    ear_left: float
    mouth: float

    @property
    def ear(self) -> float:
        return (self.ear_right + self.ear_left) / 2.0


@dataclass(frozen=True)
class FaceObservation:
    """Everything measured of one face in one frame.

    ``aligned`` is the 112×112 BGR face crop used for the embedding: biometric
    data that stays in memory and is never logged or written.
    """

    box: tuple[float, float, float, float]
    score: float
    keypoints: FloatArray
    landmarks: FloatArray  # (468, 3): x, y in frame pixels, z in the same scale
    presence: float
    pose: Pose
    eyes: EyeMouth
    quality: Quality
    track_id: int
    roi: Roi
    aligned: npt.NDArray[np.uint8] = field(repr=False)
    embedding: FloatArray | None = field(default=None, repr=False)
    #: FaceAntiSpoofing score when the passive model is on (higher: more likely an attack).
    spoof_score: float | None = None
    #: Fingerprint of the whole frame: a camera never delivers the same frame twice.
    frame_digest: bytes = b""

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]


@dataclass(frozen=True)
class DepthFrame:
    """A depth map aligned pixel for pixel to the colour frame.

    ``depth_mm`` is H×W float32 millimetres from the camera (0: no reading);
    ``fx`` the colour camera's focal length in pixels, to turn pixels into
    millimetres at a distance.
    """

    depth_mm: npt.NDArray[np.float32] = field(repr=False)
    fx: float
