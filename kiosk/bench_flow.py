"""``kiosk bench flow``: the whole daemon on a replayed camera, timed as a person meets it.

A scripted replay plays an empty scene at ``fps``; for each attempt the bench
types the staff number and PIN on the daemon's PIN pad, waits until the face
step is showing, then puts the face in front of the "camera" and times from
the capture of the first frame with the face in it to the decision. The
daemon runs as it does on a device: its own main loop, the camera thread, the
screen server with its preview, the real PIN hash and a real database in a
temporary state directory.

* Passive path: liveness mode ``continuity`` (no challenge), a sample photo of
  the enrolled person.
* One challenge: a blink, answered by the blink clip of ``../shared/data``
  when it is there (the figure includes the time until the clip blinks).

It prints the decision times, the frames processed per second against those
offered, the main loop's time per frame (its capacity), the process's CPU
share and its peak RSS.
"""

from __future__ import annotations

import logging
import resource
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from kiosk.app import enrol, open_services
from kiosk.auth.admin import UserAdmin
from kiosk.auth.liveness import LivenessChecker
from kiosk.bench import Stat
from kiosk.camera import FolderSource
from kiosk.camera.base import BaseFrameSource, BGRImage
from kiosk.config import Settings
from kiosk.daemon.engine import running_in_thread
from kiosk.errors import KioskError
from kiosk.secrets import create_secret
from kiosk.vision import FacePipeline
from kiosk.vision.frames import u8

log = logging.getLogger(__name__)

PIN = "274913"
STAFF_NO = "4242"


class SceneSource(BaseFrameSource):
    """A paced replay whose scene the bench changes while it runs.

    A scene is a list of frames, each an image or its JPEG encoding (decoded on the
    camera thread, as a camera's driver would, so a long clip does not sit in memory).
    """

    is_replay = True

    def __init__(self, scene: list[BGRImage | bytes], fps: float) -> None:
        super().__init__("replay: bench scenes")
        self.fps = fps
        self._lock = threading.Lock()
        self._scene = scene
        self._i = 0
        self._next = 0.0

    def show(self, scene: list[BGRImage | bytes]) -> None:
        with self._lock:
            self._scene, self._i = scene, 0

    def _open(self) -> None:
        self._next = time.monotonic()

    def _grab(self) -> BGRImage | None:
        self._next += 1.0 / self.fps
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            self._next = time.monotonic()
        with self._lock:
            item = self._scene[self._i % len(self._scene)]
            self._i += 1
        if isinstance(item, bytes):
            return u8(cv2.imdecode(np.frombuffer(item, np.uint8), cv2.IMREAD_COLOR))
        return item.copy()

    def _close(self) -> None:
        pass


@dataclass
class PathResult:
    name: str
    face_to_decision: Stat
    outcomes: dict[str, int]
    fps_offered: float
    fps_processed: float
    dropped: int
    busy_ms_per_frame: float
    face_ms_per_frame: float  # frames of the face step: tracked, embedded, checked
    cpu_share: float  # of one core
    peak_rss_mb: float  # of the whole process, at the end of this path

    @property
    def capacity_fps(self) -> float:
        """Frames per second the main loop could take during the face step."""
        ms = self.face_ms_per_frame
        return 1000.0 / ms if ms > 0 else float("inf")


@dataclass
class FlowReport:
    paths: list[PathResult]
    peak_rss_mb: float
    threads: int
    skipped: list[str]

    def lines(self) -> list[str]:
        out = [f"flow bench: the whole daemon on a replayed camera ({self.threads} threads)"]
        for p in self.paths:
            t = p.face_to_decision
            out.append(
                f"{p.name}: face appears → decision median {t.median_ms:.0f} ms, "
                f"p95 {t.p95_ms:.0f} ms (n={t.n}; {_counts(p.outcomes)})"
            )
            out.append(
                f"  frames: {p.fps_processed:.1f} fps processed of {p.fps_offered:.0f} offered "
                f"({p.dropped} dropped, while PINs are hashed); main loop "
                f"{p.busy_ms_per_frame:.1f} ms/frame, {p.face_ms_per_frame:.1f} ms in the face "
                f"step → capacity {p.capacity_fps:.0f} fps; "
                f"CPU {100 * p.cpu_share:.0f} % of one core"
            )
            out.append(f"  peak RSS so far: {p.peak_rss_mb:.0f} MB")
        out.extend(f"skipped: {why}" for why in self.skipped)
        out.append(f"peak RSS: {self.peak_rss_mb:.0f} MB")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "threads": self.threads,
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "skipped": self.skipped,
            "paths": [
                {
                    "name": p.name,
                    "face_to_decision_ms": {
                        "median": round(p.face_to_decision.median_ms, 1),
                        "p95": round(p.face_to_decision.p95_ms, 1),
                        "n": p.face_to_decision.n,
                    },
                    "outcomes": p.outcomes,
                    "fps_offered": p.fps_offered,
                    "fps_processed": round(p.fps_processed, 1),
                    "dropped": p.dropped,
                    "busy_ms_per_frame": round(p.busy_ms_per_frame, 2),
                    "face_step_ms_per_frame": round(p.face_ms_per_frame, 2),
                    "capacity_fps": round(p.capacity_fps, 1),
                    "cpu_share_of_one_core": round(p.cpu_share, 3),
                    "peak_rss_mb": round(p.peak_rss_mb, 1),
                }
                for p in self.paths
            ],
        }


def _counts(outcomes: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items()))


def side_view(image: BGRImage, k: float = 0.2) -> BGRImage:
    """The photo seen from a little to the side (a perspective warp): a third enrolment view."""
    h, w = image.shape[:2]
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    dst = np.array([[w * k, 0], [w, h * k / 2], [w, h * (1 - k / 2)], [w * k, h]], np.float32)
    return u8(cv2.warpPerspective(image, cv2.getPerspectiveTransform(src, dst), (w, h)))


def _read(path: Path) -> BGRImage:
    image = cv2.imread(str(path))
    if image is None:
        raise KioskError(f"cannot read {path}: run `kiosk samples fetch`")
    return u8(image)


def _clip_scene(
    clip: Path, keep: tuple[int, ...], limit: int = 400
) -> tuple[list[bytes], list[BGRImage], float]:
    """The clip's frames, letterboxed and JPEG-encoded one at a time (small in memory),
    the frames at the indices ``keep`` decoded (for enrolment), and the clip's frame rate."""
    capture = cv2.VideoCapture(str(clip))
    fps = float(capture.get(cv2.CAP_PROP_FPS)) or 25.0
    encoded: list[bytes] = []
    kept: list[BGRImage] = []
    while len(encoded) < limit:
        ok, frame = capture.read()
        if not ok:
            break
        fitted = _fit(u8(frame))
        if len(encoded) in keep:
            kept.append(fitted)
        encoded.append(cv2.imencode(".jpg", fitted, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
    capture.release()
    return encoded, kept, fps


def _frame_face(
    image: BGRImage, pipeline: FacePipeline, size: tuple[int, int] = (640, 480)
) -> BGRImage:
    """A camera's view of a photo: a 4:3 window round the face, as close as at a kiosk."""
    width, height = size
    found = pipeline.detect(image)
    if not found:
        raise KioskError("no face in the bench photo: run `kiosk samples fetch`")
    x0, y0, x1, y1 = found[0].box
    side = (x1 - x0) * 3.0  # the face fills a third of the frame's width
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    top, left, right = cy - side * 3 / 8, cx - side / 2, cx + side / 2
    src = np.array([[left, top], [right, top], [left, cy + side * 3 / 8]], np.float32)
    dst = np.array([[0, 0], [width, 0], [0, height]], np.float32)
    return u8(
        cv2.warpAffine(
            image, cv2.getAffineTransform(src, dst), (width, height), borderValue=(40, 40, 40)
        )
    )


def _fit(image: BGRImage, width: int = 640, height: int = 480) -> BGRImage:
    """Letterbox into the camera's frame size (a clip already framed like a camera's)."""
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    resized = u8(cv2.resize(image, (round(w * scale), round(h * scale))))
    canvas = np.full((height, width, 3), 40, np.uint8)
    y, x = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    canvas[y : y + resized.shape[0], x : x + resized.shape[1]] = resized
    return canvas


def _enrol(settings: Settings, pipeline: FacePipeline, photos: list[BGRImage], root: Path) -> None:
    folder = root / "enrol"
    folder.mkdir(parents=True, exist_ok=True)
    for i, photo in enumerate(photos):
        cv2.imwrite(str(folder / f"{i}.png"), photo)
    with open_services(settings) as services:
        admin = UserAdmin(
            services.repo, services.hasher, services.clock, services.device, actor="bench"
        )
        user = admin.add("Bench", PIN, staff_no=STAFF_NO)
        enrol(services, pipeline, user, FolderSource(folder), recorded_by="bench")


def _wait(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return False


def _run_path(
    name: str,
    settings: Settings,
    pipeline: FacePipeline,
    faces: list[list[BGRImage | bytes]],
    *,
    attempts: int,
    fps: float,
    liveness: LivenessChecker | None,
) -> PathResult:
    blank: list[BGRImage | bytes] = [np.full((480, 640, 3), 40, np.uint8)]
    source = SceneSource(blank, fps)
    with running_in_thread(settings, source, pipeline=pipeline, liveness=liveness) as kiosk:
        usage0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        frames0, busy0 = kiosk.stats.frames, kiosk.stats.busy_s
        face0, face_busy0 = kiosk.stats.face_frames, kiosk.stats.face_busy_s
        dropped0 = kiosk.feed.status().dropped
        for attempt in range(attempts):
            source.show(blank)
            for key in [*STAFF_NO, "enter", *PIN, "enter"]:
                kiosk.key(key).result(30)
            if not _wait(lambda: kiosk.broadcaster.view.screen == "face", 30):
                raise KioskError(f"the face step did not start: {kiosk.broadcaster.view.message}")
            time.sleep(0.3)
            decided = len(kiosk.stats.timings)
            source.show(faces[attempt % len(faces)])
            if not _wait(lambda n=decided: len(kiosk.stats.timings) > n, 40):
                raise KioskError("no decision within 40 s")
            # the timing is taken as the decision is made; let the screen show it
            _wait(lambda: kiosk.broadcaster.view.screen in ("session", "result", "lockout"), 10)
            if kiosk.broadcaster.view.screen == "session":
                kiosk.lock().result(30)
            source.show(blank)
            kiosk.dismiss().result(30)
            _wait(lambda: kiosk.broadcaster.view.screen == "idle", 10)
        usage1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        frames = kiosk.stats.frames - frames0
        busy = kiosk.stats.busy_s - busy0
        timings = kiosk.stats.timings[-attempts:]
        cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
        outcomes: dict[str, int] = {}
        for t in timings:
            outcomes[t.phase] = outcomes.get(t.phase, 0) + 1
        return PathResult(
            name=name,
            face_to_decision=Stat.of(
                [t.face_to_decision_s for t in timings if t.face_to_decision_s is not None]
            ),
            outcomes=outcomes,
            fps_offered=fps,
            fps_processed=frames / (wall1 - wall0),
            dropped=kiosk.feed.status().dropped - dropped0,
            busy_ms_per_frame=1000.0 * busy / max(1, frames),
            face_ms_per_frame=1000.0
            * (kiosk.stats.face_busy_s - face_busy0)
            / max(1, kiosk.stats.face_frames - face0),
            cpu_share=cpu / (wall1 - wall0),
            peak_rss_mb=_peak_rss_mb(),
        )


def run_flow_bench(
    settings: Settings,
    samples: Path,
    *,
    attempts: int = 10,
    fps: float = 30.0,
    clip: Path | None = None,
) -> FlowReport:
    """Time the daemon's face step; see the module docstring."""
    from kiosk.liveness.challenge import ChallengeLiveness, Kind, LivenessPolicy

    skipped: list[str] = []
    paths: list[PathResult] = []
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-flow-") as tmp:
        root = Path(tmp)
        base = settings.model_copy(
            update={
                "state_dir": root / "state",
                "models_dir": settings.models_path,
                "screen": settings.screen.model_copy(update={"port": 0}),
                "sync": settings.sync.model_copy(update={"enabled": False}),
                "stepup": settings.stepup.model_copy(update={"enabled": False}),
            }
        )
        create_secret(base.state_dir / "device-secret")
        pipeline = FacePipeline.from_settings(base)
        obama = _read(samples / "obama.jpg")
        _enrol(base, pipeline, [obama, _read(samples / "obama2.jpg"), side_view(obama)], root)
        passive = base.model_copy(
            update={"liveness": base.liveness.model_copy(update={"mode": "continuity"})}
        )
        face: list[BGRImage | bytes] = [_frame_face(_read(samples / "obama3.jpg"), pipeline)]
        paths.append(
            _run_path(
                "passive path",
                passive,
                pipeline,
                [face],
                attempts=attempts,
                fps=fps,
                liveness=None,
            )
        )
        if clip is not None and clip.is_file():
            encoded, enrol_from, clip_fps = _clip_scene(clip, (5, 60, 130, 200))
            # the person steps in at the labelled blink segments of the liveness evaluation
            scenes: list[list[BGRImage | bytes]] = [
                list(encoded[start - 10 :]) for start in (68, 100, 160, 195)
            ]
            blinker = base.model_copy(update={"state_dir": root / "state-blink"})
            create_secret(blinker.state_dir / "device-secret")
            _enrol(blinker, pipeline, enrol_from, root / "blink")
            paths.append(
                _run_path(
                    "one challenge (blink, real clip)",
                    blinker,
                    pipeline,
                    scenes,
                    attempts=max(1, attempts // 2),
                    fps=clip_fps,  # a person blinks in real time
                    liveness=ChallengeLiveness(LivenessPolicy(challenges=1, kinds=(Kind.BLINK,))),
                )
            )
        else:
            skipped.append(
                f"one challenge: no clip at {clip} (the blink clip of ../shared/data, or --clip)"
            )
    return FlowReport(paths, _peak_rss_mb(), settings.vision.threads, skipped)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
