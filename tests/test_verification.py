"""1:1 verification on real photos: the same person matches, another person does not."""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations

import cv2
import numpy as np
import pytest

from kiosk.config import Settings
from kiosk.vision import FacePipeline
from kiosk.vision.embedding import cosine_similarity
from kiosk.vision.frames import BgrImage
from kiosk.vision.types import FloatArray

OBAMAS = ("obama.jpg", "obama2.jpg", "obama3.jpg")


def _embedding(pipeline: FacePipeline, image: BgrImage) -> FloatArray:
    vector = pipeline.embedding_of(image)
    assert vector is not None, "no face found"
    return vector


def test_embeddings_are_unit_length(
    pipeline: FacePipeline, load: Callable[[str], BgrImage]
) -> None:
    vector = _embedding(pipeline, load("obama.jpg"))
    assert vector.shape == (192,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4


def test_the_three_obama_photos_match_each_other(
    pipeline: FacePipeline, settings: Settings, load: Callable[[str], BgrImage]
) -> None:
    vectors = {n: _embedding(pipeline, load(n)) for n in OBAMAS}
    for a, b in combinations(OBAMAS, 2):
        assert cosine_similarity(vectors[a], vectors[b]) >= settings.verification.threshold, (a, b)


def test_biden_matches_none_of_them(
    pipeline: FacePipeline, settings: Settings, load: Callable[[str], BgrImage]
) -> None:
    biden = _embedding(pipeline, load("biden.jpg"))
    for name in OBAMAS:
        score = cosine_similarity(biden, _embedding(pipeline, load(name)))
        assert score < settings.verification.threshold, name


def _variants(image: BgrImage) -> dict[str, BgrImage]:
    from conftest import rotate

    height = round(image.shape[0] * 320 / image.shape[1])
    return {
        "rotated +30°": rotate(image, 30),
        "rotated -30°": rotate(image, -30),
        "mirrored": np.ascontiguousarray(image[:, ::-1]),
        "320 px wide": cv2.resize(image, (320, height), interpolation=cv2.INTER_AREA),
    }


@pytest.mark.parametrize("variant", ["rotated +30°", "rotated -30°", "mirrored", "320 px wide"])
def test_a_changed_photo_still_verifies(
    variant: str, pipeline: FacePipeline, settings: Settings, load: Callable[[str], BgrImage]
) -> None:
    """obama.jpg changed still matches the *other* Obama photos, and still rejects Biden."""
    probe = _embedding(pipeline, _variants(load("obama.jpg"))[variant])
    threshold = settings.verification.threshold
    for other in ("obama2.jpg", "obama3.jpg"):
        assert cosine_similarity(probe, _embedding(pipeline, load(other))) >= threshold, other
    assert cosine_similarity(probe, _embedding(pipeline, load("biden.jpg"))) < threshold
