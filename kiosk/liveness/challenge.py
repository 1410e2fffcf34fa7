"""Active liveness: random challenges verified from landmarks over frames.

Each attempt draws one or two challenges at random (without repeating a kind)
from blink, turn left, turn right, look up and open mouth. Each has a prompt
for the screen and a time window. A challenge is verified against a baseline
taken from the first frames of that challenge (per attempt, per person — no
fixed constant):

* **blink**: the eye opening (iris model's lids) dips below 55 % of the
  baseline and recovers above 80 % of it;
* **turn left / right**: yaw moves at least ``turn_deg`` (18°) the asked way
  ("left" is the person's own left: the nose goes to the image's right on an
  unmirrored camera) and comes back within 8°; at the peak, the landmarks must
  not fit one homography to the baseline frame's (a photo moves as a plane);
* **look up**: pitch rises at least ``pitch_deg`` (12°) and comes back, with
  the same planar check;
* **open mouth**: the inner-lip opening rises by at least 0.25 of the mouth
  width and comes back.

A move the challenge did not ask for — turning the other way, or turning far
during a blink — fails it: a recorded clip that runs through its own moves does
not pass by luck. Around all challenges the session enforces one tracked face
from start to end (a cut to another face, or a different identity by
embedding, fails), no replay loop (a frame repeated after others), a blink at
some point in any attempt longer than ``no_blink_s``, and, when fitted, the
depth relief and the passive model.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from kiosk.auth.liveness import LivenessStatus, LivenessUpdate
from kiosk.liveness.cues import RepeatDetector, depth_relief, planar_residual
from kiosk.vision.types import DepthFrame, FaceObservation, FloatArray


class Kind(Enum):
    BLINK = "blink"
    TURN_LEFT = "turn_left"
    TURN_RIGHT = "turn_right"
    LOOK_UP = "look_up"
    OPEN_MOUTH = "open_mouth"


PROMPTS = {
    Kind.BLINK: "Blink your eyes",
    Kind.TURN_LEFT: "Turn your head to your left, then back",
    Kind.TURN_RIGHT: "Turn your head to your right, then back",
    Kind.LOOK_UP: "Look up, then back at the camera",
    Kind.OPEN_MOUTH: "Open your mouth, then close it",
}


@dataclass(frozen=True)
class LivenessPolicy:
    """Thresholds of the active check (the ``liveness`` settings)."""

    challenges: int = 2
    # open mouth is available but not drawn by default: no real clip here proves it yet
    kinds: tuple[Kind, ...] = (Kind.BLINK, Kind.TURN_LEFT, Kind.TURN_RIGHT, Kind.LOOK_UP)
    window_s: float = 6.0
    baseline_frames: int = 3
    turn_deg: float = 18.0
    pitch_deg: float = 12.0
    return_deg: float = 8.0
    wrong_deg: float = 15.0
    blink_dip: float = 0.55
    blink_recover: float = 0.8
    mouth_rise: float = 0.25
    min_planar_residual: float = 0.045
    same_person: float = 0.35
    no_blink_s: float = 10.0
    depth_required: bool = False
    passive_threshold: float | None = None  # None: the passive model is off


@dataclass
class _Baseline:
    yaw: float
    pitch: float
    ear: float
    mouth: float
    landmarks: FloatArray


@dataclass
class _Frame:
    t: float
    yaw: float
    pitch: float
    ear: float
    mouth: float
    landmarks: FloatArray


def _frame(obs: FaceObservation, t: float) -> _Frame:
    return _Frame(t, obs.pose.yaw, obs.pose.pitch, obs.eyes.ear, obs.eyes.mouth, obs.landmarks)


@dataclass
class ChallengeState:
    """One challenge being verified."""

    kind: Kind
    started: float
    policy: LivenessPolicy
    frames: list[_Frame] = field(default_factory=list)
    baseline: _Baseline | None = None
    peaked: bool = False
    peak: _Frame | None = None

    def update(self, f: _Frame) -> tuple[LivenessStatus, str]:
        """PENDING, PASSED, or FAILED with a reason, after one usable frame."""
        p = self.policy
        self.frames.append(f)
        if self.baseline is None:
            if len(self.frames) < p.baseline_frames:
                return LivenessStatus.PENDING, ""
            first = self.frames[: p.baseline_frames]
            self.baseline = _Baseline(
                yaw=float(np.median([x.yaw for x in first])),
                pitch=float(np.median([x.pitch for x in first])),
                ear=float(np.median([x.ear for x in first])),
                mouth=float(np.median([x.mouth for x in first])),
                landmarks=first[len(first) // 2].landmarks,
            )
            return LivenessStatus.PENDING, ""
        b = self.baseline
        dyaw, dpitch = f.yaw - b.yaw, f.pitch - b.pitch
        kind = self.kind
        if kind in (Kind.TURN_LEFT, Kind.TURN_RIGHT):
            sign = 1.0 if kind is Kind.TURN_LEFT else -1.0
            along = sign * dyaw
            if along <= -p.wrong_deg:
                return LivenessStatus.FAILED, "turned the other way"
            return self._out_and_back(f, along >= p.turn_deg, abs(dyaw) <= p.return_deg, along)
        if abs(dyaw) > p.wrong_deg + 10 and kind is not Kind.LOOK_UP:
            return LivenessStatus.FAILED, "turned away during the challenge"
        if kind is Kind.LOOK_UP:
            if abs(dyaw) > p.wrong_deg:
                return LivenessStatus.FAILED, "turned sideways instead of looking up"
            return self._out_and_back(f, dpitch >= p.pitch_deg, abs(dpitch) <= p.return_deg, dpitch)
        if kind is Kind.BLINK:
            if not self.peaked and f.ear <= b.ear * p.blink_dip:
                self.peaked = True
            if self.peaked and f.ear >= b.ear * p.blink_recover:
                return LivenessStatus.PASSED, ""
            return LivenessStatus.PENDING, ""
        # open mouth
        if not self.peaked and f.mouth - b.mouth >= p.mouth_rise:
            self.peaked = True
        if self.peaked and f.mouth - b.mouth <= p.mouth_rise / 2:
            return LivenessStatus.PASSED, ""
        return LivenessStatus.PENDING, ""

    def _out_and_back(
        self, f: _Frame, out: bool, back: bool, amount: float
    ) -> tuple[LivenessStatus, str]:
        assert self.baseline is not None  # noqa: S101 (set before)
        if out and (self.peak is None or amount > self._amount(self.peak)):
            self.peak = f
        if out:
            self.peaked = True
        if self.peaked and back and self.peak is not None:
            residual = planar_residual(self.baseline.landmarks, self.peak.landmarks)
            if residual < self.policy.min_planar_residual:
                return LivenessStatus.FAILED, "moved like a flat picture"
            return LivenessStatus.PASSED, ""
        return LivenessStatus.PENDING, ""

    def _amount(self, f: _Frame) -> float:
        assert self.baseline is not None  # noqa: S101
        if self.kind is Kind.LOOK_UP:
            return f.pitch - self.baseline.pitch
        sign = 1.0 if self.kind is Kind.TURN_LEFT else -1.0
        return sign * (f.yaw - self.baseline.yaw)

    def progress(self) -> float:
        return 0.5 if self.peaked else (0.1 if self.baseline is not None else 0.0)


class ChallengeSession:
    """One attempt's challenges and the cues around them (implements LivenessSession)."""

    def __init__(
        self,
        challenges: Sequence[Kind],
        policy: LivenessPolicy,
        t: float,
    ) -> None:
        self.kinds = list(challenges)
        self.policy = policy
        self.started = t
        self._index = 0
        self._current = ChallengeState(self.kinds[0], t, policy)
        self._track: int | None = None
        self._identity: FloatArray | None = None
        self._repeats = RepeatDetector()
        self._blinked = False
        self._ear_base: float | None = None
        self._depth_checked = 0
        self._passive_scores: list[float] = []
        self.done: LivenessUpdate | None = None

    @property
    def prompt(self) -> str:
        return PROMPTS[self._current.kind]

    def update(
        self, obs: FaceObservation | None, t: float, depth: DepthFrame | None = None
    ) -> LivenessUpdate:
        if self.done is not None:
            return self.done
        if t - self._current.started > self.policy.window_s:
            return self._fail(f"did not {self._current.kind.value.replace('_', ' ')} in time")
        if obs is None or not obs.quality.ok:
            return self._pending()
        if self._track is None:
            self._track = obs.track_id
        elif obs.track_id != self._track:
            return self._fail("the face changed during the check")
        if obs.embedding is not None:
            if self._identity is None:
                self._identity = obs.embedding
            elif float(np.dot(self._identity, obs.embedding)) < self.policy.same_person:
                return self._fail("a different face appeared during the check")
        if obs.frame_digest and self._repeats.is_loop(obs.frame_digest):
            return self._fail("the same frame came back: a replayed video")
        self._watch_blink(obs)
        if t - self.started > self.policy.no_blink_s and not self._blinked:
            return self._fail("no blink during a long check")
        if depth is not None:
            verdict = depth_relief(depth, obs.landmarks)
            if not verdict.ok:
                return self._fail(f"depth: {verdict.reason}")
            self._depth_checked += 1
        if obs.spoof_score is not None:
            self._passive_scores.append(obs.spoof_score)
        status, reason = self._current.update(_frame(obs, t))
        if status is LivenessStatus.FAILED:
            return self._fail(reason)
        if status is LivenessStatus.PASSED:
            self._index += 1
            if self._index >= len(self.kinds):
                return self._finish()
            self._current = ChallengeState(self.kinds[self._index], t, self.policy)
        return self._pending()

    def _watch_blink(self, obs: FaceObservation) -> None:
        ear = obs.eyes.ear
        if self._ear_base is None:
            self._ear_base = ear
        self._ear_base = max(ear, 0.9 * self._ear_base + 0.1 * ear)
        if ear <= self._ear_base * self.policy.blink_dip:
            self._blinked = True

    def _finish(self) -> LivenessUpdate:
        p = self.policy
        if p.depth_required and self._depth_checked == 0:
            return self._fail("depth required but no depth frame arrived")
        if (
            p.passive_threshold is not None
            and self._passive_scores
            and float(np.mean(self._passive_scores)) > p.passive_threshold
        ):
            return self._fail("passive check: looks like a presentation attack")
        self.done = LivenessUpdate(LivenessStatus.PASSED, progress=1.0)
        return self.done

    def _pending(self) -> LivenessUpdate:
        share = (self._index + self._current.progress()) / len(self.kinds)
        return LivenessUpdate(LivenessStatus.PENDING, self.prompt, share)

    def _fail(self, reason: str) -> LivenessUpdate:
        self.done = LivenessUpdate(LivenessStatus.FAILED, reason=reason)
        return self.done


class ChallengeLiveness:
    """The liveness checker the flow uses by default (implements LivenessChecker)."""

    def __init__(
        self,
        policy: LivenessPolicy | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy or LivenessPolicy()
        self._rng = rng or random.SystemRandom()

    def plan(self) -> list[Kind]:
        """The challenges of one attempt: distinct kinds, in random order."""
        kinds = list(self.policy.kinds)
        count = max(1, min(self.policy.challenges, len(kinds)))
        picked = self._rng.sample(kinds, count)
        if Kind.TURN_LEFT in picked and Kind.TURN_RIGHT in picked and len(kinds) > 2:
            # two opposite turns tell less than two different moves
            others = [k for k in kinds if k not in picked]
            if others:
                picked[picked.index(Kind.TURN_RIGHT)] = self._rng.choice(others)
        return picked

    def start(self, t: float) -> ChallengeSession:
        return ChallengeSession(self.plan(), self.policy, t)

    def start_with(self, kinds: Sequence[Kind], t: float) -> ChallengeSession:
        """A session with given challenges (evaluation and tests)."""
        return ChallengeSession(kinds, self.policy, t)
