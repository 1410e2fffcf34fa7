"""A face followed across frames: one track while it stays, a new track after it is lost."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kiosk.vision import FacePipeline
from kiosk.vision.frames import BgrImage


def _shifted(image: BgrImage, dx: int, dy: int) -> BgrImage:
    out = np.zeros_like(image)
    h, w = image.shape[:2]
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def test_a_moving_face_keeps_one_track_without_redetection(
    fresh_pipeline: FacePipeline, load: Callable[[str], BgrImage]
) -> None:
    image = load("obama.jpg")
    first = fresh_pipeline.track(image)
    assert first is not None
    ids = []
    for step in range(1, 15):
        obs = fresh_pipeline.track(_shifted(image, 6 * step, 3 * step))
        assert obs is not None
        ids.append(obs.track_id)
        assert fresh_pipeline.times.detect_s == 0.0  # the mesh followed it; no detector run
        # the landmarks moved with the face
        assert abs(float(obs.landmarks[1, 0] - first.landmarks[1, 0]) - 6 * step) < 8
    assert set(ids) == {first.track_id}


def test_losing_the_face_ends_the_track(
    fresh_pipeline: FacePipeline, load: Callable[[str], BgrImage]
) -> None:
    image = load("obama.jpg")
    first = fresh_pipeline.track(image)
    assert first is not None
    assert fresh_pipeline.track(np.zeros_like(image)) is None
    again = fresh_pipeline.track(image)
    assert again is not None and again.track_id != first.track_id


def test_tracking_embeds_on_demand(
    fresh_pipeline: FacePipeline, load: Callable[[str], BgrImage]
) -> None:
    image = load("obama.jpg")
    plain = fresh_pipeline.track(image)
    assert plain is not None and plain.embedding is None
    with_embedding = fresh_pipeline.track(image, embed=True)
    assert with_embedding is not None and with_embedding.embedding is not None
