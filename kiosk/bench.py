"""``kiosk bench``: where the time of a verification goes, and how it compares with dlib.

Protocol. Every image in the frames folder is scaled to 640 px wide (what a
kiosk camera delivers; the dlib pipeline's HOG detector would otherwise be
timed on multi-megapixel photos). One warm-up pass is not counted; then
``repeat`` passes time, per frame, a whole verification as the kiosk does it
— detect, mesh on the largest face, align, embed — with each stage's wall time
and, beside it, the time spent inside the model's ``invoke()``. What is not
invoke time is glue (pre- and post-processing in Python/OpenCV). Peak RSS is
the process's high-water mark. With ``--dlib`` the same frames, in the same
process, go through Howdy's dlib pipeline, and the ratio of the medians is
printed. Figures are printed, never asserted.
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from kiosk.config import Settings
from kiosk.errors import FrameError, KioskError
from kiosk.vision import FacePipeline
from kiosk.vision.frames import BgrImage, decode_image, u8

log = logging.getLogger(__name__)

BENCH_WIDTH = 640
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass(frozen=True)
class Stat:
    """Median and 95th percentile of a list of durations, in milliseconds."""

    median_ms: float
    p95_ms: float
    n: int

    @classmethod
    def of(cls, seconds: list[float]) -> Stat:
        if not seconds:
            return cls(float("nan"), float("nan"), 0)
        arr = np.asarray(seconds) * 1000.0
        return cls(float(np.median(arr)), float(np.percentile(arr, 95)), len(seconds))


@dataclass
class BenchReport:
    """What ``kiosk bench`` measured."""

    frames: int
    faces_found: int
    runtime: str
    threads: int
    stages: dict[str, Stat] = field(default_factory=dict)
    invoke: dict[str, Stat] = field(default_factory=dict)
    glue_overhead: float = 0.0
    peak_rss_mb: float = 0.0
    dlib: dict[str, Stat] | None = None
    dlib_faces_found: int = 0

    @property
    def speedup(self) -> float | None:
        if not self.dlib or "verification" not in self.dlib:
            return None
        ours = self.stages["verification"].median_ms
        return self.dlib["verification"].median_ms / ours if ours > 0 else None

    def lines(self) -> list[str]:
        out = [
            f"kiosk bench: {self.frames} frame(s) at {BENCH_WIDTH} px wide, face found in "
            f"{self.faces_found}; runtime {self.runtime}, {self.threads} thread(s)",
            f"{'stage':<14}{'median ms':>11}{'p95 ms':>10}{'invoke ms':>11}{'n':>6}",
        ]
        for name, stat in self.stages.items():
            inv = self.invoke.get(name)
            inv_s = f"{inv.median_ms:>11.2f}" if inv else f"{'-':>11}"
            out.append(f"{name:<14}{stat.median_ms:>11.2f}{stat.p95_ms:>10.2f}{inv_s}{stat.n:>6}")
        out.append(f"glue overhead over model invoke time: {self.glue_overhead * 100:.1f} %")
        if self.dlib is not None:
            out.append(f"dlib (Howdy's pipeline), face found in {self.dlib_faces_found}:")
            for name, stat in self.dlib.items():
                out.append(
                    f"{'  ' + name:<14}{stat.median_ms:>11.2f}{stat.p95_ms:>10.2f}"
                    f"{'-':>11}{stat.n:>6}"
                )
            if self.speedup is not None:
                out.append(f"verification speed-up over dlib: {self.speedup:.1f}×")
        out.append(f"peak RSS: {self.peak_rss_mb:.0f} MB")
        return out

    def as_dict(self) -> dict[str, Any]:
        def stats(d: dict[str, Stat]) -> dict[str, Any]:
            return {
                k: {"median_ms": v.median_ms, "p95_ms": v.p95_ms, "n": v.n} for k, v in d.items()
            }

        return {
            "frames": self.frames,
            "faces_found": self.faces_found,
            "runtime": self.runtime,
            "threads": self.threads,
            "width": BENCH_WIDTH,
            "stages": stats(self.stages),
            "invoke": stats(self.invoke),
            "glue_overhead": self.glue_overhead,
            "peak_rss_mb": self.peak_rss_mb,
            "dlib": stats(self.dlib) if self.dlib is not None else None,
            "speedup_vs_dlib": self.speedup,
        }


def load_frames(folder: Path, width: int = BENCH_WIDTH) -> list[BgrImage]:
    """The images of ``folder`` scaled to ``width`` pixels wide; unreadable files skipped."""
    if not folder.is_dir():
        raise KioskError(f"no frames folder {folder}: run `kiosk samples fetch` or pass --frames")
    frames = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in _IMAGE_SUFFIXES:
            continue
        try:
            image = decode_image(path.read_bytes(), name=str(path))
        except (FrameError, OSError) as exc:
            log.warning("skipping %s: %s", path, exc)
            continue
        height = max(1, round(image.shape[0] * width / image.shape[1]))
        frames.append(u8(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)))
    if not frames:
        raise KioskError(f"no readable images in {folder}")
    return frames


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_bench(
    settings: Settings, frames_dir: Path, *, repeat: int = 5, with_dlib: bool = False
) -> BenchReport:
    """Time the pipeline (and optionally dlib's) on the frames of ``frames_dir``."""
    from kiosk.vision.runtime import runtime_name

    frames = load_frames(frames_dir)
    pipeline = FacePipeline.from_settings(settings)
    names = ("detect", "mesh", "align", "embed", "verification")
    walls: dict[str, list[float]] = {n: [] for n in names}
    invokes: dict[str, list[float]] = {n: [] for n in ("detect", "mesh", "embed", "verification")}
    found = 0
    for rep in range(repeat + 1):
        for frame in frames:
            pipeline.reset()
            start = time.perf_counter()
            obs = pipeline.track(frame, embed=True)
            total = time.perf_counter() - start
            if rep == 0:
                continue  # warm-up
            if obs is None:
                continue
            found += 1
            t = pipeline.times
            for name, wall, inv in (
                ("detect", t.detect_s, t.detect_invoke_s),
                ("mesh", t.mesh_s, t.mesh_invoke_s),
                ("embed", t.embed_s, t.embed_invoke_s),
            ):
                walls[name].append(wall)
                invokes[name].append(inv)
            walls["align"].append(t.align_s)
            walls["verification"].append(total)
            invokes["verification"].append(t.detect_invoke_s + t.mesh_invoke_s + t.embed_invoke_s)
    total_wall = sum(walls["verification"])
    total_invoke = sum(invokes["verification"])
    report = BenchReport(
        frames=len(frames),
        faces_found=found // max(repeat, 1),
        runtime=runtime_name(),
        threads=settings.vision.threads,
        stages={n: Stat.of(walls[n]) for n in names},
        invoke={n: Stat.of(v) for n, v in invokes.items()},
        glue_overhead=(total_wall - total_invoke) / total_invoke if total_invoke > 0 else 0.0,
    )
    if with_dlib:
        report.dlib, report.dlib_faces_found = _bench_dlib(frames, repeat)
    report.peak_rss_mb = _peak_rss_mb()
    return report


def _bench_dlib(frames: list[BgrImage], repeat: int) -> tuple[dict[str, Stat], int]:
    from kiosk.dlib_baseline import DlibBaseline

    baseline = DlibBaseline()
    times: dict[str, list[float]] = {"detect": [], "landmarks": [], "embed": [], "verification": []}
    found = 0
    for rep in range(repeat + 1):
        for frame in frames:
            result = baseline.verify(frame)
            if rep == 0 or result is None:
                continue
            found += 1
            times["detect"].append(result.detect_s)
            times["landmarks"].append(result.landmarks_s)
            times["embed"].append(result.embed_s)
            times["verification"].append(result.total_s)
    return {k: Stat.of(v) for k, v in times.items()}, found // max(repeat, 1)
