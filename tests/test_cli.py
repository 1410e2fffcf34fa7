"""The kiosk command as administrators and scripts use it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kiosk.cli import build_parser, main
from kiosk.config import Settings


@pytest.fixture(autouse=True)
def _env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("KIOSK_STATE_DIR", str(settings.state_dir))
    monkeypatch.setenv("KIOSK_MODELS_DIR", str(settings.models_path))
    monkeypatch.delenv("KIOSK_CONFIG", raising=False)
    yield


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_detect_reports_faces(
    capsys: pytest.CaptureFixture[str], sample_image: Callable[[str], Path]
) -> None:
    code, out = _run(capsys, "detect", str(sample_image("obama.jpg")), "--json")
    assert code == 0
    report = json.loads(out)
    assert len(report["faces"]) == 1
    face = report["faces"][0]
    assert set(face) >= {"box", "pose", "quality"}
    assert "embedding" not in out
    code, out = _run(capsys, "detect", str(sample_image("t1.jpg")))
    assert code == 0 and "face(s)" in out


def test_compare_answers_with_exit_code_and_score(
    capsys: pytest.CaptureFixture[str], sample_image: Callable[[str], Path]
) -> None:
    code, out = _run(
        capsys, "compare", str(sample_image("obama.jpg")), str(sample_image("obama3.jpg"))
    )
    assert code == 0 and out.startswith("same person (score")
    code, out = _run(
        capsys, "compare", str(sample_image("obama.jpg")), str(sample_image("biden.jpg")), "--json"
    )
    result = json.loads(out)
    assert code == 1 and result["same_person"] is False
    assert result["score"] < result["threshold"]


def test_bad_images_get_a_clear_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    sample_image: Callable[[str], Path],
) -> None:
    corrupt = tmp_path / "photo.jpg"
    corrupt.write_bytes(os.urandom(2048))
    assert main(["detect", str(corrupt)]) == 65
    assert "cannot decode" in caplog.text
    assert main(["detect", str(tmp_path / "missing.jpg")]) == 65
    assert "No such file" in caplog.text
    blank = tmp_path / "blank.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(blank), np.zeros((200, 200, 3), np.uint8))
    assert main(["detect", str(blank)]) == 1
    assert main(["compare", str(blank), str(sample_image("obama.jpg"))]) == 65
    assert "no face found" in caplog.text


def test_watch_prints_one_line_per_frame_of_a_replay(
    capsys: pytest.CaptureFixture[str], samples_dir: Path
) -> None:
    code, out = _run(
        capsys, "watch", "--source", str(samples_dir), "--frames", "4", "--json", "--fps", "100"
    )
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 4
    assert all(line["replay"] for line in lines)
    assert any(line["face"] is not None for line in lines)


def test_models_list_fails_when_a_model_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = _run(capsys, "models", "list")
    assert code == 0 and "ok" in out
    monkeypatch.setenv("KIOSK_MODELS_DIR", str(tmp_path / "empty"))
    code, out = _run(capsys, "models", "list", "--json")
    assert code == 72
    assert {m["state"] for m in json.loads(out)} == {"missing"}


def test_a_wrong_config_value_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setenv("KIOSK_VISION__THREADS", "many")
    assert main(["models", "list"]) == 78
    assert "vision.threads" in caplog.text
    monkeypatch.delenv("KIOSK_VISION__THREADS")
    config = tmp_path / "kiosk.toml"
    config.write_text("[verification]\nthreshhold = 0.5\n")
    monkeypatch.setenv("KIOSK_CONFIG", str(config))
    assert main(["models", "list"]) == 78
    assert "threshhold" in caplog.text


def _commands() -> list[list[str]]:
    parser = build_parser()
    found = [[]]
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for name, sub in action.choices.items():
            found.append([name])
            for sub_action in sub._actions:
                if getattr(sub_action, "choices", None) and isinstance(sub_action.choices, dict):
                    found.extend([name, leaf] for leaf in sub_action.choices)
    return found


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c) or "kiosk")
def test_every_command_has_help(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kiosk.cli", *command, "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "usage: kiosk" in result.stdout
