"""Liveness: each challenge passes on a real moving face and fails on a photo of it.

Real clips come from ../shared/data (no redistribution rights: read in place,
never copied); tests that need them skip, saying why, when it is absent.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA

from kiosk.auth.liveness import LivenessStatus
from kiosk.liveness import attacks
from kiosk.liveness.challenge import ChallengeLiveness, Kind, LivenessPolicy
from kiosk.liveness.cues import RepeatDetector, depth_relief, planar_residual
from kiosk.liveness.evaluate import BONA_FIDE, Presenter, read_clip
from kiosk.vision import FacePipeline
from kiosk.vision.frames import BgrImage
from kiosk.vision.types import DepthFrame, EyeMouth, FaceObservation

needs_data = pytest.mark.skipif(
    not (SHARED_DATA / "videos").is_dir(),
    reason="the labelled clips in ../shared/data are absent (a fresh clone has no ../shared)",
)

BLINK_CLIP = "videos/blink_woman_frontal.webm"
SELFIE_CLIP = "attacks/replay_selfie_tranvanluyt/bona_fide.mp4"
WINDOW_FRAMES = 200


@pytest.fixture(scope="module")
def clips() -> dict[str, tuple[list[BgrImage], float]]:
    if not (SHARED_DATA / "videos").is_dir():
        pytest.skip("the labelled clips in ../shared/data are absent")
    return {name: read_clip(SHARED_DATA / name) for name in (BLINK_CLIP, SELFIE_CLIP)}


@pytest.fixture
def presenter(pipeline: FacePipeline) -> Presenter:
    return Presenter(pipeline, LivenessPolicy(), seed=3)


def _start(clip: str, kind: Kind) -> int:
    return next(start for k, start in BONA_FIDE[clip] if k is kind)


CASES = [
    (BLINK_CLIP, Kind.BLINK),
    (SELFIE_CLIP, Kind.TURN_LEFT),
    (SELFIE_CLIP, Kind.TURN_RIGHT),
    (SELFIE_CLIP, Kind.LOOK_UP),
]


@needs_data
@pytest.mark.parametrize(("clip", "kind"), CASES, ids=[k.value for _, k in CASES])
def test_each_challenge_passes_on_a_real_moving_face(
    clip: str, kind: Kind, clips: dict[str, tuple[list[BgrImage], float]], presenter: Presenter
) -> None:
    frames, fps = clips[clip]
    start = _start(clip, kind)
    passed, reason, _ = presenter.present(frames[start : start + WINDOW_FRAMES], fps, [kind])
    assert passed, reason


@needs_data
@pytest.mark.parametrize(("clip", "kind"), CASES, ids=[k.value for _, k in CASES])
def test_each_challenge_fails_on_a_photo_of_that_face(
    clip: str, kind: Kind, clips: dict[str, tuple[list[BgrImage], float]], presenter: Presenter
) -> None:
    """The clip's own first frame, printed and moved as a plane the way the challenge asks."""
    frames, _ = clips[clip]
    motion = {Kind.TURN_LEFT: "turn", Kind.TURN_RIGHT: "turn", Kind.LOOK_UP: "nod"}.get(
        kind, "hold"
    )
    for seed in range(3):
        photo = attacks.printed_photo(
            frames[_start(clip, kind)], motion=motion, frames=60, rng=random.Random(seed)
        )
        passed, _, _ = presenter.present(photo, 10.0, [kind])
        assert not passed, f"a photo passed {kind.value} (seed {seed})"


@needs_data
def test_a_face_swapped_mid_challenge_fails(
    clips: dict[str, tuple[list[BgrImage], float]], presenter: Presenter
) -> None:
    blink_frames, blink_fps = clips[BLINK_CLIP]
    selfie_frames, _ = clips[SELFIE_CLIP]
    # the woman's face for the baseline, then the man turns
    head = [attacks.letterbox(f) for f in blink_frames[100:125]]
    start = _start(SELFIE_CLIP, Kind.TURN_LEFT)
    tail = [attacks.letterbox(f) for f in selfie_frames[start : start + WINDOW_FRAMES]]
    passed, reason, _ = presenter.present(head + tail, blink_fps, [Kind.TURN_LEFT])
    assert not passed
    assert "face" in reason


@needs_data
def test_a_replayed_loop_fails(
    clips: dict[str, tuple[list[BgrImage], float]], presenter: Presenter
) -> None:
    frames, fps = clips[BLINK_CLIP]
    still = frames[140:150]  # eyes open: nothing to answer a blink with, played round and round
    passed, reason, _ = presenter.present(attacks.looped(still, 6), fps, [Kind.BLINK])
    assert not passed
    assert "replayed" in reason


@needs_data
def test_planar_motion_separates_a_head_from_a_photo(
    clips: dict[str, tuple[list[BgrImage], float]], pipeline: FacePipeline
) -> None:
    frames, _ = clips[SELFIE_CLIP]
    pipeline.reset()
    observed = [pipeline.track(f) for f in frames[30:100]]
    faces = [o for o in observed if o is not None]
    turned = max(faces, key=lambda o: o.pose.yaw)
    assert turned.pose.yaw - faces[0].pose.yaw > 18
    assert planar_residual(faces[0].landmarks, turned.landmarks) > 0.045
    photo = attacks.printed_photo(frames[30], motion="turn", frames=30, rng=random.Random(1))
    pipeline.reset()
    flat = [o for o in (pipeline.track(f) for f in photo) if o is not None]
    worst = max(planar_residual(flat[0].landmarks, o.landmarks) for o in flat)
    assert worst < 0.045


def test_a_still_photo_cannot_sign_in_with_default_liveness(
    pipeline: FacePipeline, load: Callable[[str], BgrImage]
) -> None:
    checker = ChallengeLiveness()
    session = checker.start(0.0)
    image = load("obama.jpg")
    pipeline.reset()
    update = None
    for i in range(200):
        update = session.update(pipeline.track(image, embed=True), i / 15)
        if update.status is not LivenessStatus.PENDING:
            break
    assert update is not None and update.status is LivenessStatus.FAILED


def test_plans_draw_different_challenges_at_random() -> None:
    checker = ChallengeLiveness(rng=random.Random(5))
    plans = [tuple(checker.plan()) for _ in range(200)]
    assert all(len(set(p)) == len(p) == 2 for p in plans)
    assert len(set(plans)) > 8
    assert {k for p in plans for k in p} == set(Kind) - {Kind.OPEN_MOUTH}  # not drawn by default


def _obs(base: FaceObservation, *, mouth: float, t_id: int = 1) -> FaceObservation:
    eyes = EyeMouth(ear_right=0.3, ear_left=0.3, mouth=mouth)
    return replace(base, eyes=eyes, track_id=t_id)


def test_open_mouth_is_a_rise_and_fall_of_the_lips(
    pipeline: FacePipeline, load: Callable[[str], BgrImage]
) -> None:
    """No clip in the data opens its mouth, so this drives the verifier with measured values."""
    face = pipeline.observe(load("obama.jpg"))[0]
    checker = ChallengeLiveness(LivenessPolicy(no_blink_s=1e9))
    mouths = [0.05, 0.05, 0.05, 0.1, 0.25, 0.4, 0.42, 0.3, 0.1, 0.05]
    session = checker.start_with([Kind.OPEN_MOUTH], 0.0)
    rng = np.random.default_rng(0)
    statuses = []
    for i, m in enumerate(mouths):
        aligned = rng.integers(0, 255, face.aligned.shape, dtype=np.uint8)  # distinct frames
        statuses.append(
            session.update(replace(_obs(face, mouth=m), frame_digest=aligned.tobytes()), i * 0.1)
        )
    closed = mouths.index(0.1, 4)  # passes when the opened mouth closes again
    assert statuses[closed].status is LivenessStatus.PASSED
    assert all(s.status is LivenessStatus.PENDING for s in statuses[:closed])
    session = checker.start_with([Kind.OPEN_MOUTH], 0.0)
    for i in range(80):  # a mouth that never opens times out
        aligned = rng.integers(0, 255, face.aligned.shape, dtype=np.uint8)
        last = session.update(
            replace(_obs(face, mouth=0.05), frame_digest=aligned.tobytes()), i * 0.1
        )
    assert last.status is LivenessStatus.FAILED and "in time" in last.reason


def test_repeat_detector_tells_a_loop_from_a_frozen_frame() -> None:
    a, b = b"frame-a", b"frame-b"
    frozen = RepeatDetector()
    assert not any(frozen.is_loop(a) for _ in range(5))
    loop = RepeatDetector()
    assert [loop.is_loop(x) for x in (a, b, a)] == [False, False, True]


# --- depth ----------------------------------------------------------------------------------


def _depth(
    face: FaceObservation,
    *,
    relief_mm: float,
    distance_mm: float = 600.0,
    tilt: tuple[float, float] = (0.0, 0.0),
    fx: float = 600.0,
    shape: tuple[int, int] = (0, 0),
) -> DepthFrame:
    """A depth map: a tilted plane, with a face-like bump of ``relief_mm`` at the nose."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = distance_mm + tilt[0] * (xs - w / 2) + tilt[1] * (ys - h / 2)
    nose = face.landmarks[1, :2]
    sigma = 0.22 * (face.box[2] - face.box[0])
    bump = np.exp(-(((xs - nose[0]) ** 2 + (ys - nose[1]) ** 2) / (2 * sigma**2)))
    return DepthFrame(depth_mm=(depth - relief_mm * bump).astype(np.float32), fx=fx)


@pytest.fixture(scope="module")
def face_and_shape(pipeline: FacePipeline, load: Callable[[str], BgrImage]):  # type: ignore[no-untyped-def]
    image = load("obama.jpg")
    return pipeline.observe(image)[0], image.shape[:2]


def test_depth_relief_passes_a_face_and_fails_planes(face_and_shape) -> None:  # type: ignore[no-untyped-def]
    face, shape = face_and_shape
    width_px = float(np.linalg.norm(face.landmarks[234, :2] - face.landmarks[454, :2]))
    fx = 600.0
    distance = 150.0 * fx / width_px  # a 15 cm wide face at this many pixels
    assert depth_relief(
        _depth(face, relief_mm=30, distance_mm=distance, fx=fx, shape=shape), face.landmarks
    ).ok
    flat = depth_relief(
        _depth(face, relief_mm=0, distance_mm=distance, fx=fx, shape=shape), face.landmarks
    )
    assert not flat.ok and "flat" in flat.reason
    tilted = _depth(face, relief_mm=0, distance_mm=distance, fx=fx, shape=shape, tilt=(0.4, 0.2))
    assert not depth_relief(tilted, face.landmarks).ok
    tiny = _depth(face, relief_mm=30, distance_mm=distance / 4, fx=fx, shape=shape)
    verdict = depth_relief(tiny, face.landmarks)
    assert not verdict.ok and "size" in verdict.reason  # a face-sized relief too near: a model head
    empty = DepthFrame(depth_mm=np.zeros(shape, np.float32), fx=fx)
    assert not depth_relief(empty, face.landmarks).ok


def test_a_flat_depth_fails_the_session(face_and_shape) -> None:  # type: ignore[no-untyped-def]
    face, shape = face_and_shape
    checker = ChallengeLiveness(LivenessPolicy(no_blink_s=1e9))
    session = checker.start_with([Kind.BLINK], 0.0)
    flat = _depth(face, relief_mm=0, shape=shape)
    update = session.update(face, 0.0, flat)
    assert update.status is LivenessStatus.FAILED and "depth" in update.reason


def test_required_depth_fails_without_a_sensor(face_and_shape) -> None:  # type: ignore[no-untyped-def]
    face, _ = face_and_shape
    checker = ChallengeLiveness(LivenessPolicy(no_blink_s=1e9, depth_required=True))
    session = checker.start_with([Kind.OPEN_MOUTH], 0.0)
    rng = np.random.default_rng(1)
    last = None
    for i, m in enumerate([0.05, 0.05, 0.05, 0.5, 0.05]):
        aligned = rng.integers(0, 255, face.aligned.shape, dtype=np.uint8)
        last = session.update(replace(_obs(face, mouth=m), frame_digest=aligned.tobytes()), i * 0.1)
    assert last is not None and last.status is LivenessStatus.FAILED
    assert "depth required" in last.reason


def test_evaluation_data_is_never_in_the_repository() -> None:
    repo = Path(__file__).resolve().parents[1]
    media = [
        p
        for p in repo.rglob("*")
        if p.suffix.lower() in {".webm", ".mp4", ".avi", ".gif"}
        and ".venv" not in p.parts
        and ".cache" not in p.parts
    ]
    assert media == []
