"""kiosk bench prints its figures (it measures; it never asserts a speed)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from kiosk.bench import run_bench
from kiosk.config import Settings
from kiosk.errors import KioskError


def test_bench_reports_every_stage(
    settings: Settings, sample_image: Callable[[str], Path], tmp_path: Path
) -> None:
    for name in ("obama.jpg", "biden.jpg"):
        shutil.copy(sample_image(name), tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    report = run_bench(settings, tmp_path, repeat=1)
    assert report.frames == 2 and report.faces_found == 2
    text = "\n".join(report.lines())
    for stage in ("detect", "mesh", "align", "embed", "verification", "glue overhead", "peak RSS"):
        assert stage in text
    assert report.stages["verification"].n == 2
    assert report.as_dict()["dlib"] is None


def test_bench_without_frames_says_what_to_do(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(KioskError, match="kiosk samples fetch"):
        run_bench(settings, tmp_path / "none", repeat=1)


def test_flow_bench_times_the_whole_daemon(settings: Settings, samples_dir: Path) -> None:
    from kiosk.bench_flow import run_flow_bench

    report = run_flow_bench(settings, samples_dir, attempts=2, clip=None)
    [passive] = report.paths
    assert passive.outcomes == {"granted": 2}
    assert passive.face_to_decision.n == 2 and passive.fps_processed > 0
    assert report.skipped and report.peak_rss_mb > 0
    text = "\n".join(report.lines())
    assert "face appears → decision" in text and "peak RSS" in text
