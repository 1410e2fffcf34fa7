"""The dlib (Howdy) baseline of ``kiosk bench``: runs only where the bench extra is installed."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from kiosk.dlib_baseline import EMBEDDING_SIZE, DlibBaseline, DlibTimings
from kiosk.errors import FrameError

pytest.importorskip(
    "dlib",
    reason="dlib is not installed; the dlib baseline needs the bench extra: "
    "pip install -e '.[bench]'",
)
# Not importorskip: face_recognition_models 0.3.0 fails to import where setuptools
# no longer ships pkg_resources, yet the baseline still finds its model files.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("face_recognition_models") is None,
    reason="face-recognition-models is not installed; the dlib baseline needs the bench "
    "extra: pip install -e '.[bench]'",
)


@pytest.fixture(scope="module")
def baseline() -> DlibBaseline:
    return DlibBaseline()


def test_real_face_gives_a_128d_embedding_and_stage_timings(
    baseline: DlibBaseline, sample_image: Callable[[str], Path]
) -> None:
    image = cv2.imread(str(sample_image("obama.jpg")))
    assert image is not None

    result = baseline.verify(image)

    assert isinstance(result, DlibTimings)
    assert result.embedding.shape == (EMBEDDING_SIZE,)
    assert np.all(np.isfinite(result.embedding))
    assert np.linalg.norm(result.embedding) > 0
    assert result.detect_s > 0
    assert result.landmarks_s > 0
    assert result.embed_s > 0
    # The three stages are disjoint parts of the whole call.
    assert result.total_s >= result.detect_s + result.landmarks_s + result.embed_s


def test_embedding_is_deterministic_and_read_only(
    baseline: DlibBaseline, sample_image: Callable[[str], Path]
) -> None:
    image = cv2.imread(str(sample_image("obama.jpg")))
    assert image is not None

    first = baseline.verify(image)
    second = baseline.verify(image)

    assert first is not None and second is not None
    np.testing.assert_array_equal(first.embedding, second.embedding)
    with pytest.raises(ValueError, match="read-only"):
        first.embedding[0] = 1.0


@pytest.mark.parametrize("value", [0, 128, 255])
def test_blank_frame_gives_none(baseline: DlibBaseline, value: int) -> None:
    assert baseline.verify(np.full((480, 640, 3), value, dtype=np.uint8)) is None


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((480, 640), dtype=np.uint8),
        np.zeros((480, 640, 4), dtype=np.uint8),
        np.zeros((480, 640, 3), dtype=np.float32),
        np.zeros((0, 640, 3), dtype=np.uint8),
    ],
    ids=["grey", "bgra", "float", "empty"],
)
def test_frame_that_is_not_bgr_uint8_is_refused(
    baseline: DlibBaseline, frame: npt.NDArray[Any]
) -> None:
    with pytest.raises(FrameError):
        baseline.verify(frame)
