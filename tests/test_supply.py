"""Model supply: every model verified by sha256; a missing or altered file stops start-up."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from kiosk import supply
from kiosk.config import Settings, default_cache_dir
from kiosk.errors import FetchError, ModelError
from kiosk.vision import FacePipeline


def test_manifest_records_what_a_fleet_manager_needs() -> None:
    models = supply.load_manifest(supply.default_manifest_path())
    roles = {m.role for m in models}
    assert {"detection", "landmarks", "embedding", "antispoof"} <= roles
    for m in models:
        assert m.licence and m.provenance and m.preprocessing and m.input_shape, m.name
    embedding = next(m for m in models if m.role == "embedding")
    assert embedding.sha256 == "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b"
    assert "MS1M" in embedding.licence  # the research-only training-data caveat


def test_installed_models_verify(models_dir: Path) -> None:
    statuses = supply.check(supply.load_manifest(supply.default_manifest_path()), models_dir)
    assert all(s.ok for s in statuses)


def _copy_models(models_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "models"
    shutil.copytree(models_dir, target)
    return target


def test_a_missing_model_stops_start_up_naming_file_and_fix(
    models_dir: Path, tmp_path: Path
) -> None:
    target = _copy_models(models_dir, tmp_path)
    (target / "face_landmark.tflite").unlink()
    with pytest.raises(ModelError) as err:
        FacePipeline.from_settings(Settings(state_dir=tmp_path, models_dir=target))
    assert "face_landmark.tflite" in str(err.value)
    assert "kiosk models fetch" in str(err.value)


def test_an_altered_model_stops_start_up(models_dir: Path, tmp_path: Path) -> None:
    target = _copy_models(models_dir, tmp_path)
    path = target / "MobileFaceNet.tflite"
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"MobileFaceNet\.tflite.*sha256.*kiosk models fetch"):
        FacePipeline.from_settings(Settings(state_dir=tmp_path, models_dir=target))


def test_fetch_repairs_an_altered_model(models_dir: Path, tmp_path: Path) -> None:
    target = _copy_models(models_dir, tmp_path)
    (target / "face_detection_short_range.tflite").write_bytes(b"garbage")
    models = supply.load_manifest(supply.default_manifest_path())
    assert [s.state for s in supply.check(models, target)].count("mismatch") == 1
    supply.fetch(models, target, default_cache_dir())
    assert all(s.ok for s in supply.check(models, target))


def test_a_download_that_does_not_match_is_never_installed(tmp_path: Path) -> None:
    model = next(
        m for m in supply.load_manifest(supply.default_manifest_path()) if m.role == "detection"
    )
    wrong = dataclasses.replace(model, sha256="0" * 64)
    with pytest.raises(FetchError, match="sha256"):
        supply.fetch([wrong], tmp_path / "models", default_cache_dir())
    assert not (tmp_path / "models" / model.file).exists()


def test_a_broken_manifest_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "manifest.toml"
    bad.write_text('[[model]]\nfile = "x.tflite"\nregistry = "ftp"\n')
    with pytest.raises(ModelError, match="missing"):
        supply.load_manifest(bad)
    bad.write_text("[[model]\n")
    with pytest.raises(ModelError, match="cannot read"):
        supply.load_manifest(bad)
