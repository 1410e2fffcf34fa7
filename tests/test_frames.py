"""Bad frames get a clear error or "no face", never a crash."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest

from kiosk.errors import FrameError
from kiosk.vision import FacePipeline
from kiosk.vision.frames import BgrImage, as_bgr, decode_image


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\xff\xd8\xff\xe0 not really a jpeg", "corrupt"),
        (b"GIF89a" * 3, "corrupt"),
    ],
)
def test_corrupt_or_empty_files_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        decode_image(data, name="upload.jpg")


def test_a_truncated_jpeg_is_refused_or_yields_no_crash(
    sample_image: Callable[[str], object], pipeline: FacePipeline
) -> None:
    from pathlib import Path

    data = Path(str(sample_image("obama.jpg"))).read_bytes()
    try:
        image = decode_image(data[: len(data) // 3], name="truncated.jpg")
    except FrameError:
        return
    pipeline.observe(image)  # decodable remainder: any answer, but no exception


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((480, 0, 3), np.uint8),
        np.zeros((10,), np.uint8),
        np.zeros((4, 4, 3, 2), np.uint8),
        np.zeros((64, 64, 2), np.uint8),
        np.zeros((64, 64, 3), np.complex64),
        np.full((64, 64, 3), np.nan, np.float32),
        "not an array",
        None,
    ],
    ids=["empty", "zero-width", "1-d", "4-d", "2-channel", "complex", "nan", "str", "none"],
)
def test_unusable_frames_get_a_clear_error(frame: object, pipeline: FacePipeline) -> None:
    with pytest.raises(FrameError):
        pipeline.observe(frame)
    with pytest.raises(FrameError):
        pipeline.track(frame)


@pytest.mark.parametrize("shape", [(1, 1, 3), (3, 1000, 3), (1001, 7, 3), (17, 23), (2, 2, 4)])
def test_odd_sizes_give_no_face(shape: tuple[int, ...], pipeline: FacePipeline) -> None:
    frame = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    assert pipeline.observe(frame) == []
    assert pipeline.track(frame) is None


def test_grey_four_channel_16bit_and_float_frames_work(
    pipeline: FacePipeline, load: Callable[[str], BgrImage]
) -> None:
    image = load("obama.jpg")
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    variants = {
        "grey": grey,
        "grey 1-channel": grey[:, :, None],
        "BGRA": cv2.cvtColor(image, cv2.COLOR_BGR2BGRA),
        "16-bit": image.astype(np.uint16) * 257,
        "float [0,1]": image.astype(np.float32) / 255.0,
        "non-contiguous": image[::2, ::2],
    }
    for name, frame in variants.items():
        assert as_bgr(frame).shape[2] == 3, name
        faces = pipeline.observe(frame)
        assert len(faces) == 1, name


def test_layouts_convert_exactly() -> None:
    grey = np.full((4, 5), 77, np.uint8)
    assert as_bgr(grey).shape == (4, 5, 3)
    assert (as_bgr(grey) == 77).all()
    bgra = np.zeros((4, 5, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 9, 128
    assert as_bgr(bgra).shape == (4, 5, 3)
    assert (as_bgr(bgra)[..., 0] == 9).all()
    deep = np.full((4, 5, 3), 65535, np.uint16)
    assert as_bgr(deep).dtype == np.uint8
    assert (as_bgr(deep) == 255).all()
    assert (as_bgr(np.full((2, 2), 0.5, np.float32)) == 128).all()
    with pytest.raises(FrameError):
        as_bgr(np.zeros((4, 5, 2), np.uint8))
    with pytest.raises(FrameError):
        as_bgr(np.zeros((4, 5, 3), np.int32))


# -- still images -------------------------------------------------------------------
