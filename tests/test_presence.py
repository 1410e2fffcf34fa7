"""Continuous presence after a grant: the user stays, leaves, is replaced, is watched."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from conftest import SHARED_DATA

from kiosk.auth.clock import ManualClock
from kiosk.auth.events import DeviceInfo, UserRef
from kiosk.auth.model import Change
from kiosk.auth.session import CallbackLock, LockReason, PresencePolicy, SessionMonitor
from kiosk.liveness.attacks import letterbox
from kiosk.liveness.evaluate import read_clip
from kiosk.vision import FacePipeline
from kiosk.vision.frames import BgrImage
from kiosk.vision.types import FloatArray

DEVICE = DeviceInfo(device_id="kiosk-test", site="lab")


class Recorder:
    def __init__(self) -> None:
        self.locks: list[tuple[str, LockReason]] = []
        self.changes: list[Change] = []

    def lock(self, user: str, reason: LockReason) -> None:
        self.locks.append((user, reason))


def _monitor(clock: ManualClock, recorder: Recorder, **policy: object) -> SessionMonitor:
    return SessionMonitor(
        clock=clock,
        device=DEVICE,
        threshold=0.55,
        policy=PresencePolicy(**policy),  # type: ignore[arg-type]
        actions=[recorder, CallbackLock(lambda _u, _r: None)],
        commit=recorder.changes.append,
    )


def _faces(pipeline: FacePipeline, frame: BgrImage) -> list:  # type: ignore[type-arg]
    return [pipeline.embed(f) for f in pipeline.observe(frame)]


def _templates(pipeline: FacePipeline, frames: list[BgrImage]) -> list[FloatArray]:
    out = []
    for frame in frames:
        vector = pipeline.embedding_of(frame)
        assert vector is not None
        out.append(vector)
    return out


def _run(
    monitor: SessionMonitor, clock: ManualClock, pipeline: FacePipeline, frames: list[BgrImage]
) -> LockReason | None:
    for frame in frames:
        clock.advance(monitor.policy.interval_s)
        assert monitor.due()
        reason = monitor.check(_faces(pipeline, frame))
        if reason is not None:
            return reason
    return None


@pytest.fixture
def obama_session(pipeline: FacePipeline, load: Callable[[str], BgrImage]):  # type: ignore[no-untyped-def]
    clock, recorder = ManualClock(), Recorder()
    monitor = _monitor(clock, recorder)
    monitor.start(
        UserRef("user:1", "Obama"), _templates(pipeline, [load("obama.jpg"), load("obama2.jpg")])
    )
    return monitor, clock, recorder


def test_the_user_stays(
    obama_session, pipeline: FacePipeline, load: Callable[[str], BgrImage]
) -> None:  # type: ignore[no-untyped-def]
    monitor, clock, recorder = obama_session
    frames = [load("obama3.jpg"), load("obama.jpg")] * 20
    assert _run(monitor, clock, pipeline, frames) is None
    assert monitor.open and recorder.locks == []
    assert monitor.last_verified_at() == clock.since_boot()


def test_the_user_leaves(
    obama_session, pipeline: FacePipeline, load: Callable[[str], BgrImage]
) -> None:  # type: ignore[no-untyped-def]
    monitor, clock, recorder = obama_session
    assert _run(monitor, clock, pipeline, [load("obama3.jpg")] * 4) is None
    left_at = clock.since_boot()
    empty = np.full((480, 640, 3), 90, np.uint8)
    assert _run(monitor, clock, pipeline, [empty] * 30) is LockReason.ABSENT
    assert clock.since_boot() - left_at == pytest.approx(10.0, abs=0.6)
    assert recorder.locks == [("Obama", LockReason.ABSENT)]
    [change] = recorder.changes
    assert change.events[0].payload["activity_name"] == "Logoff"
    assert not monitor.open


def test_someone_else_sits_down(
    obama_session, pipeline: FacePipeline, load: Callable[[str], BgrImage]
) -> None:  # type: ignore[no-untyped-def]
    monitor, clock, recorder = obama_session
    assert _run(monitor, clock, pipeline, [load("obama3.jpg")] * 3) is None
    assert _run(monitor, clock, pipeline, [load("biden.jpg")] * 5) is LockReason.OTHER_PERSON
    assert len(recorder.locks) == 1  # after 3 checks in a row, not the first bad frame


def test_an_onlooker_locks_by_policy(
    pipeline: FacePipeline, load: Callable[[str], BgrImage]
) -> None:
    both = letterbox(np.hstack([load("obama2.jpg"), load("obama2.jpg")[:, ::-1]]))
    for lock_on_onlooker, expected in ((False, None), (True, LockReason.ONLOOKER)):
        clock, recorder = ManualClock(), Recorder()
        monitor = _monitor(clock, recorder, lock_on_onlooker=lock_on_onlooker)
        monitor.start(UserRef("user:1", "Obama"), _templates(pipeline, [load("obama.jpg")]))
        assert len(_faces(pipeline, both)) == 2
        assert _run(monitor, clock, pipeline, [both] * 8) is expected


needs_data = pytest.mark.skipif(
    not (SHARED_DATA / "videos").is_dir(),
    reason="the labelled clips in ../shared/data are absent (a fresh clone has no ../shared)",
)


@needs_data
def test_replayed_clips_stay_leave_and_are_replaced(pipeline: FacePipeline) -> None:
    woman, fps = read_clip(SHARED_DATA / "videos/blink_woman_frontal.webm")
    man, _ = read_clip(SHARED_DATA / "attacks/replay_selfie_tranvanluyt/bona_fide.mp4")
    step = int(fps / 2)  # a check every 0.5 s of the clip
    templates = _templates(pipeline, [woman[100], woman[200]])
    own = [letterbox(f) for f in woman[::step]]
    for tail, expected in (
        ([], None),
        ([np.zeros_like(own[0])] * 30, LockReason.ABSENT),
        ([letterbox(f) for f in man[:300:15]], LockReason.OTHER_PERSON),
    ):
        clock, recorder = ManualClock(), Recorder()
        monitor = _monitor(clock, recorder)
        monitor.start(UserRef("user:7", "Woman"), templates)
        assert _run(monitor, clock, pipeline, own + tail) is expected
