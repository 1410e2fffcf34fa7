"""``kiosk eval liveness``: APCER per attack type and BPCER, with the count behind each.

Protocol (ISO/IEC 30107-3 terms; every presentation runs the real pipeline and
the real :class:`~kiosk.liveness.challenge.ChallengeSession`, frame by frame):

* **Bona fide** — the real clips in ``../shared/data``, each challenge started
  just before the person does it, as a prompt would (the clips have no frame
  ground truth; the starts below were read off the frames and the signals).
  Each start is also tried 5 and 10 frames earlier. BPCER is the share of these
  presentations that fail. ``videos/headpose_interview.avi`` is not used: its
  head turns away and does not come back within the clip, so it cannot complete
  any out-and-back challenge. ``stage_performer`` and ``crowd_walking`` have no
  single person doing a challenge.
* **Printed photo** — every identity photo in ``identities/deepface`` (cropped
  around its face, as an attacker prints it), presented as a rigid plane
  (:func:`~kiosk.liveness.attacks.printed_photo`): turned for the turn
  challenges, nodded for look-up, held with small tilts for blink and mouth.
* **Replay loop** — each printed-photo presentation replayed in a loop, and
  each bona fide segment replayed in a loop against the default random plan of
  two challenges.
* **Face swap** — the baseline from one face and the move from another: another
  identity's photo for the first second, then a bona fide segment; or the
  first second of one person's clip, then another person doing the move.
* **Real attacks** — ``attacks/replay_*/replay_attack.*`` (a screen replay of
  a recorded person) against random two-challenge plans at each declared
  start, and the silent-face print and tablet photos held for a challenge.
  Reported beside them, as the worst case: the same replays when the attacker
  happens to know the challenge in advance (the recording shows that very move).

APCER is the share of attack presentations that pass liveness. The data has
no redistribution rights: it is read from ``../shared/data`` and never copied.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from kiosk.auth.liveness import LivenessStatus
from kiosk.errors import KioskError
from kiosk.liveness import attacks
from kiosk.liveness.challenge import ChallengeLiveness, Kind, LivenessPolicy
from kiosk.vision import FacePipeline
from kiosk.vision.frames import BgrImage, decode_image, u8

log = logging.getLogger(__name__)

ATTACK_FPS = 10.0
PASSIVE_THRESHOLD = 0.2

# clip (relative to the data folder) → (frames per second or None for the file's,
#                                        [(challenge, start frame), …])
BONA_FIDE: dict[str, list[tuple[Kind, int]]] = {
    "videos/blink_woman_frontal.webm": [
        (Kind.BLINK, 68),
        (Kind.BLINK, 100),
        (Kind.BLINK, 160),
        (Kind.BLINK, 195),
    ],
    "attacks/replay_selfie_tranvanluyt/bona_fide.mp4": [
        (Kind.TURN_LEFT, 30),
        (Kind.TURN_RIGHT, 190),
        (Kind.LOOK_UP, 420),
        (Kind.BLINK, 505),
    ],
    "attacks/replay_phone_zubair/bona_fide.webm": [(Kind.TURN_RIGHT, 84)],
}
_SELFIE, _ZUBAIR = "attacks/replay_selfie_tranvanluyt", "attacks/replay_phone_zubair"
REPLAYS: dict[str, str] = {
    f"{_SELFIE}/replay_attack.mp4": f"{_SELFIE}/bona_fide.mp4",
    f"{_ZUBAIR}/replay_attack.webm": f"{_ZUBAIR}/bona_fide.webm",
}
SILENT_FACE_SPOOFS = (
    "attacks/silentface_samples/upright_exif_applied/spoof/image_F1.jpg",
    "attacks/silentface_samples/upright_exif_applied/spoof/image_F2.jpg",
)
START_JITTER = (0, -5, -10)


@dataclass
class Row:
    """One line of the table: a presentation type, how many, how many were misclassified."""

    name: str
    attack: bool
    presentations: int = 0
    errors: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    passive: list[float] = field(default_factory=list)

    def add(self, passed: bool, reason: str, passive: float | None = None) -> None:
        self.presentations += 1
        if passive is not None:
            self.passive.append(passive)
        wrong = passed if self.attack else not passed
        if wrong:
            self.errors += 1
        if reason:
            self.reasons[reason] = self.reasons.get(reason, 0) + 1

    @property
    def rate(self) -> float:
        return self.errors / self.presentations if self.presentations else float("nan")


@dataclass
class LivenessReport:
    rows: list[Row]

    def lines(self) -> list[str]:
        out = [f"{'presentation':<56}{'metric':<7}{'rate':>8}{'errors':>8}{'n':>6}"]
        for row in self.rows:
            metric = "APCER" if row.attack else "BPCER"
            rate = f"{row.rate * 100:.1f} %" if row.presentations else "-"
            out.append(f"{row.name:<56}{metric:<7}{rate:>8}{row.errors:>8}{row.presentations:>6}")
        scored = [r for r in self.rows if r.passive]
        if scored:
            out.append(
                f"passive model (off by default), share of presentations it would call an "
                f"attack at {PASSIVE_THRESHOLD}:"
            )
            for row in scored:
                share = sum(s > PASSIVE_THRESHOLD for s in row.passive) / len(row.passive)
                out.append(
                    f"  {row.name:<54}{share * 100:6.1f} %  (mean score "
                    f"{sum(row.passive) / len(row.passive):.3f}, n={len(row.passive)})"
                )
        return out

    def as_dict(self) -> list[dict[str, object]]:
        return [
            {
                "presentation": r.name,
                "metric": "APCER" if r.attack else "BPCER",
                "rate": r.rate,
                "errors": r.errors,
                "n": r.presentations,
                "reasons": r.reasons,
            }
            for r in self.rows
        ]


def read_clip(path: Path) -> tuple[list[BgrImage], float]:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise KioskError(f"cannot read the clip {path}")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 25.0)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(u8(frame))
    capture.release()
    return frames, fps


class Presenter:
    """Runs presentations through the pipeline and a liveness session."""

    def __init__(
        self,
        pipeline: FacePipeline,
        policy: LivenessPolicy,
        seed: int,
    ) -> None:
        self.pipeline = pipeline
        self.policy = policy
        self.rng = random.Random(seed)  # noqa: S311 (reproducible evaluation, not secrets)
        self.checker = ChallengeLiveness(policy, rng=self.rng)

    def present(
        self, frames: Sequence[BgrImage], fps: float, kinds: Sequence[Kind]
    ) -> tuple[bool, str, float | None]:
        """(passed, reason, mean passive score or None) of one presentation."""
        session = self.checker.start_with(kinds, 0.0)
        self.pipeline.reset()
        scores: list[float] = []
        result: tuple[bool, str] = (False, "no decision before the presentation ended")
        for i, frame in enumerate(frames):
            obs = self.pipeline.track(frame, embed=i % 2 == 0)
            if obs is not None and obs.spoof_score is not None and i % 5 == 0:
                scores.append(obs.spoof_score)
            update = session.update(obs, i / fps)
            if update.status is LivenessStatus.PASSED:
                result = (True, "passed")
                break
            if update.status is LivenessStatus.FAILED:
                result = (False, update.reason)
                break
        return result[0], result[1], (sum(scores) / len(scores)) if scores else None


def _face_crop(pipeline: FacePipeline, photo: BgrImage) -> BgrImage | None:
    faces = pipeline.observe(photo)
    if not faces:
        return None
    x0, y0, x1, y1 = faces[0].box
    cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, 2.4 * max(x1 - x0, y1 - y0)
    h, w = photo.shape[:2]
    left, top = int(max(0, cx - side / 2)), int(max(0, cy - side * 0.55))
    right, bottom = int(min(w, cx + side / 2)), int(min(h, cy + side * 0.6))
    return photo[top:bottom, left:right].copy()


def _identity_photos(data: Path, limit: int | None) -> list[tuple[str, Path]]:
    root = data / "identities" / "deepface"
    photos = [
        (person.name, path)
        for person in sorted(root.iterdir())
        if person.is_dir() and not person.name.startswith("_")
        for path in sorted(person.iterdir())
        if path.suffix.lower() in (".jpg", ".jpeg", ".png")
    ]
    return photos[:limit] if limit else photos


_MOTION = {
    Kind.TURN_LEFT: "turn",
    Kind.TURN_RIGHT: "turn",
    Kind.LOOK_UP: "nod",
    Kind.BLINK: "hold",
    Kind.OPEN_MOUTH: "hold",
}


def evaluate(
    pipeline: FacePipeline,
    data: Path,
    *,
    policy: LivenessPolicy | None = None,
    limit: int | None = None,
    seed: int = 7,
    progress: Callable[[str], None] | None = None,
) -> LivenessReport:
    """Run the whole protocol on ``data`` (the shared data folder)."""
    if not (data / "identities").is_dir() or not (data / "videos").is_dir():
        raise KioskError(
            f"no evaluation data in {data}: pass --data with the shared data folder "
            "(identities/, videos/, attacks/)"
        )
    policy = policy or LivenessPolicy()
    presenter = Presenter(pipeline, policy, seed)
    note = progress or (lambda _msg: None)
    bona = Row("bona fide clips (declared challenge)", attack=False)
    printed = Row("printed photo, rigid plane (deepface identities)", attack=True)
    loop = Row("replay loop (photo attacks and bona fide clips)", attack=True)
    swap = Row("face swapped mid-challenge", attack=True)
    screen = Row("screen replay of a recording, random challenges", attack=True)
    stills = Row("silent-face print and tablet photos", attack=True)
    known = Row("screen replay, challenge known in advance (worst case)", attack=True)

    clips = {name: read_clip(data / name) for name in {*BONA_FIDE, *REPLAYS}}
    segments: list[tuple[list[BgrImage], float, Kind, str]] = []
    for name, starts in BONA_FIDE.items():
        frames, fps = clips[name]
        window = int(policy.window_s * fps) + 15
        for kind, start in starts:
            for jitter in START_JITTER:
                first = max(0, start + jitter)
                segment = frames[first : first + window]
                bona.add(*presenter.present(segment, fps, [kind]))
                if jitter == 0:
                    segments.append((segment, fps, kind, name))
    note(f"bona fide: {bona.presentations} presentations")

    photos = _identity_photos(data, limit)
    photo_frames = int(policy.window_s * ATTACK_FPS)
    faces: list[BgrImage] = []
    for i, (_person, path) in enumerate(photos):
        try:
            photo = decode_image(path.read_bytes(), name=str(path))
        except (OSError, KioskError) as exc:
            log.warning("skipping %s: %s", path, exc)
            continue
        crop = _face_crop(pipeline, photo)
        if crop is None:
            continue
        faces.append(crop)
        for kind in policy.kinds:
            clip = attacks.printed_photo(
                crop, motion=_MOTION[kind], frames=photo_frames, rng=presenter.rng
            )
            printed.add(*presenter.present(clip, ATTACK_FPS, [kind]))
            if kind in (Kind.TURN_LEFT, Kind.BLINK):
                loop.add(*presenter.present(attacks.looped(clip[:20], 4), ATTACK_FPS, [kind]))
        if i % 10 == 0:
            note(f"photo attacks: {i + 1}/{len(photos)}")
    for segment, fps, _kind, _clip in segments:
        loop.add(*presenter.present(attacks.looped(segment, 3), fps, presenter.checker.plan()))
    for j, (segment, fps, kind, clip_name) in enumerate(segments):
        # someone else's face for the baseline, then the real person does the move
        if faces:
            other = faces[(j * 7) % len(faces)]
            fake = attacks.printed_photo(other, motion="hold", frames=int(fps), rng=presenter.rng)
            frames = [attacks.letterbox(f) for f in segment]
            swap.add(*presenter.present(fake + frames, fps, [kind]))
        # one real person starts, another real person does the move
        others = [s for s in segments if s[3] != clip_name]  # another person's clip
        if not others:
            continue
        donor, donor_fps, donor_kind, _ = others[j % len(others)]
        head = [attacks.letterbox(f) for f in segment[: int(fps)]]
        tail = [attacks.letterbox(f) for f in donor]
        swap.add(*presenter.present(head + tail, donor_fps, [donor_kind]))
    note("photo, loop and swap attacks done")

    for name, bona_name in REPLAYS.items():
        frames, fps = clips[name]
        bona_frames, _ = clips[bona_name]
        scale = len(frames) / max(1, len(bona_frames))
        window = int(policy.window_s * fps) + 15
        for kind, start in BONA_FIDE[bona_name]:
            for jitter in START_JITTER:
                first = max(0, int((start + jitter) * scale))
                segment = frames[first : first + window]
                screen.add(*presenter.present(segment, fps, presenter.checker.plan()))
                # the worst case: search the replay for the moment that move is shown
                best: tuple[bool, str, float | None] = (False, "", None)
                centre = int(start * scale)
                around = range(max(0, centre - int(3 * fps)), centre + int(3 * fps), int(fps / 2))
                for offset in around:
                    result = presenter.present(frames[offset : offset + window], fps, [kind])
                    if result[0]:
                        best = result
                        break
                    best = result
                known.add(*best)
                break
    for rel in SILENT_FACE_SPOOFS:
        photo = decode_image((data / rel).read_bytes(), name=rel)
        for kind in policy.kinds:
            clip = attacks.printed_photo(
                attacks.letterbox(photo),
                motion=_MOTION[kind],
                frames=photo_frames,
                rng=presenter.rng,
            )
            stills.add(*presenter.present(clip, ATTACK_FPS, [kind]))
    note("real attacks done")
    return LivenessReport([bona, printed, loop, swap, screen, stills, known])


def summarize_reasons(rows: Iterable[Row]) -> list[str]:
    """Why presentations failed or passed, per row (for the closing note and debugging)."""
    out = []
    for row in rows:
        top = sorted(row.reasons.items(), key=lambda kv: -kv[1])[:4]
        out.append(f"{row.name}: " + "; ".join(f"{n}× {r}" for r, n in top))
    return out
