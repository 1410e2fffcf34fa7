"""Frame validation: turn whatever a source hands over into H×W×3 uint8 BGR, or say why not."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from kiosk.errors import FrameError

BgrImage = npt.NDArray[np.uint8]


def u8(image: Any) -> BgrImage:
    """An OpenCV result typed as the uint8 image it is (no copy when it already is one)."""
    return np.asarray(image, dtype=np.uint8)


def as_bgr(frame: Any) -> BgrImage:
    """Return ``frame`` as a contiguous H×W×3 uint8 BGR array.

    Grey (H×W or H×W×1) is expanded, BGRA loses its alpha, 16-bit is scaled
    down, float in [0, 1] is scaled up. Anything else raises :class:`FrameError`
    with the reason; nothing here crashes on a strange array.
    """
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"a frame must be a numpy array, got {type(frame).__name__}")
    if frame.size == 0 or frame.ndim < 2 or frame.shape[0] == 0 or frame.shape[1] == 0:
        raise FrameError(f"empty frame (shape {frame.shape})")
    if frame.ndim > 3:
        raise FrameError(f"a frame must be H×W or H×W×C, got shape {frame.shape}")
    image = _to_uint8(frame)
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == 1:
        image = u8(cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR))
    elif channels == 4:
        image = u8(cv2.cvtColor(image, cv2.COLOR_BGRA2BGR))
    elif channels != 3:
        raise FrameError(f"a frame must have 1, 3 or 4 channels, got {channels}")
    return np.ascontiguousarray(image)


def _to_uint8(frame: npt.NDArray[Any]) -> BgrImage:
    if frame.dtype == np.uint8:
        return frame
    if frame.dtype == np.uint16:
        return (frame >> 8).astype(np.uint8)
    if np.issubdtype(frame.dtype, np.floating):
        if not np.all(np.isfinite(frame)):
            raise FrameError("frame has NaN or infinite values")
        peak = float(frame.max()) if frame.size else 0.0
        scaled = frame * 255.0 if peak <= 1.0 else frame
        return np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)
    raise FrameError(f"frame pixels must be uint8, uint16 or float, got {frame.dtype}")


def decode_image(data: bytes, *, name: str = "image") -> BgrImage:
    """Decode an encoded image (JPEG, PNG, …) to BGR, honouring EXIF orientation.

    Grey, 16-bit and alpha images come out as 8-bit BGR too.
    """
    if not data:
        raise FrameError(f"{name} is empty")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise FrameError(f"cannot decode {name}: not an image, or the file is corrupt")
    return np.ascontiguousarray(image)
