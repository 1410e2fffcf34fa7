"""Detection and landmarks on real photos: faces are found where people are, and only there."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kiosk.vision import FacePipeline
from kiosk.vision.detection import Letterbox, auto_grid, ssd_anchors, tiles
from kiosk.vision.frames import BgrImage
from kiosk.vision.measures import CHIN, FOREHEAD, LEFT_EYE, MOUTH_TOP, RIGHT_EYE


def test_anchor_layout_matches_the_model() -> None:
    anchors = ssd_anchors()
    assert anchors.shape == (896, 2)
    assert np.all((anchors > 0) & (anchors < 1))


def test_letterbox_maps_points_back_to_the_frame() -> None:
    box = Letterbox(480, 640, 128)
    pts = np.array([[0.0, box.pad_y], [128.0, 128.0 - box.pad_y]], dtype=np.float32)
    back = box.unmap(pts)
    np.testing.assert_allclose(back, [[0, 0], [640, 480]], atol=1e-3)


def test_tiles_cover_the_frame() -> None:
    assert tiles(480, 640, 1) == []
    cover = np.zeros((900, 1300), bool)
    for x, y, side in tiles(900, 1300, auto_grid(900, 1300)):
        cover[y : y + side, x : x + side] = True
    assert cover.all()


def test_one_face_in_obama(pipeline: FacePipeline, load: Callable[[str], BgrImage]) -> None:
    image = load("obama.jpg")
    faces = pipeline.observe(image)
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].box
    h, w = image.shape[:2]
    # the face is in the upper middle of the portrait, a sensible size
    assert 0.2 * w < (x0 + x1) / 2 < 0.8 * w
    assert (y0 + y1) / 2 < 0.6 * h
    assert 0.15 * w < x1 - x0 < 0.6 * w
    assert faces[0].quality.ok


def test_at_least_five_faces_in_the_group_photo(
    pipeline: FacePipeline, load: Callable[[str], BgrImage]
) -> None:
    faces = pipeline.observe(load("t1.jpg"))
    assert len(faces) >= 5
    centres = [((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2) for f in faces]
    for i, a in enumerate(centres):  # distinct people, not one face reported twice
        for b in centres[i + 1 :]:
            assert np.hypot(a[0] - b[0], a[1] - b[1]) > 40


def test_no_face_in_blank_or_noise(pipeline: FacePipeline) -> None:
    rng = np.random.default_rng(7)
    frames = [
        np.zeros((480, 640, 3), np.uint8),
        np.full((480, 640, 3), 255, np.uint8),
        rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
        rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8),
    ]
    for frame in frames:
        assert pipeline.observe(frame) == []
        assert pipeline.track(frame) is None


def test_landmarks_fall_on_the_face(
    pipeline: FacePipeline, load: Callable[[str], BgrImage]
) -> None:
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"):
        image = load(name)
        det = pipeline.detect(image)[0]
        face = pipeline.observe(image)[0]
        lm = face.landmarks
        x0, y0, x1, y1 = det.box
        pad = 0.15 * (x1 - x0)
        inside = (
            (lm[:, 0] > x0 - pad)
            & (lm[:, 0] < x1 + pad)
            & (lm[:, 1] > y0 - pad)
            & (lm[:, 1] < y1 + 2 * pad)  # the chin sits low in the box
        )
        assert inside.mean() > 0.95, name
        eyes_y = (lm[list(RIGHT_EYE), 1].mean() + lm[list(LEFT_EYE), 1].mean()) / 2
        assert eyes_y < lm[MOUTH_TOP, 1] < lm[CHIN, 1], name
        assert lm[FOREHEAD, 1] < eyes_y, name
        # the person's right eye is on the image's left
        assert lm[list(RIGHT_EYE), 0].mean() < lm[list(LEFT_EYE), 0].mean(), name
        assert 0.12 < face.eyes.ear < 0.45, name  # open eyes


def test_pose_follows_rotation_and_mirroring(
    pipeline: FacePipeline, load: Callable[[str], BgrImage]
) -> None:
    from conftest import rotate

    image = load("obama2.jpg")
    upright = pipeline.observe(image)[0].pose
    ccw = pipeline.observe(rotate(image, 30))[0].pose
    cw = pipeline.observe(rotate(image, -30))[0].pose
    assert abs((ccw.roll - upright.roll) + 30) < 5
    assert abs((cw.roll - upright.roll) - 30) < 5
    mirrored = pipeline.observe(np.ascontiguousarray(image[:, ::-1]))[0].pose
    assert abs(upright.yaw) > 5  # obama2 looks a little to one side …
    assert np.sign(mirrored.yaw) == -np.sign(upright.yaw)  # … and the mirror image to the other
    assert abs(mirrored.yaw + upright.yaw) < 5
