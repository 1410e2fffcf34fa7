"""Settings from defaults, the environment and a TOML file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kiosk.config import load_settings
from kiosk.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KIOSK_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("KIOSK_CONFIG", raising=False)
    monkeypatch.delenv("KIOSK_MODELS_DIR", raising=False)


def test_models_default_to_the_state_directory(tmp_path: Path) -> None:
    assert load_settings().models_path == tmp_path / "models"


def test_environment_and_toml_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "kiosk.toml"
    config.write_text('[vision]\nthreads = 3\n[camera]\nsource = "v4l2:/dev/video2"\n')
    monkeypatch.setenv("KIOSK_CONFIG", str(config))
    monkeypatch.setenv("KIOSK_VISION__THREADS", "4")  # the environment wins over the file
    settings = load_settings()
    assert settings.vision.threads == 4
    assert settings.camera.source == "v4l2:/dev/video2"


@pytest.mark.parametrize(
    ("toml", "where"),
    [
        ("[quality]\nmin_face_px = 2\n", "quality.min_face_px"),
        ("[verification]\nthreshold = 3\n", "verification.threshold"),
        ("colour = 'red'\n", "colour"),
        ("[vision\n", "cannot read"),
    ],
)
def test_bad_values_name_the_setting(
    toml: str, where: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "kiosk.toml"
    config.write_text(toml)
    monkeypatch.setenv("KIOSK_CONFIG", str(config))
    with pytest.raises(ConfigError, match=re.escape(where)):
        load_settings()


def test_a_missing_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KIOSK_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_settings()
