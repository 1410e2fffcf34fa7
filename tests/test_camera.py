"""Frame sources: replays of generated media, camera error messages, and source selection.

All media are generated into ``tmp_path``; no camera is needed. Timing checks
use lower bounds only (a loaded machine may always be slower).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import types
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest

from kiosk.camera import (
    DEMO_HOLD_SECONDS,
    BaseFrameSource,
    FolderSource,
    Frame,
    FrameSource,
    ImageSource,
    PiCameraSource,
    V4L2Source,
    VideoSource,
    open_source,
    v4l2,
)
from kiosk.errors import CameraError, ConfigError

# -- generated media ----------------------------------------------------------------

H, W = 48, 64
VIDEO_FRAMES = 10
VIDEO_FPS = 40.0


def solid(value: int) -> np.ndarray:
    """A BGR image whose blue channel encodes ``value`` (green/red fixed)."""
    image = np.zeros((H, W, 3), np.uint8)
    image[..., 0] = value
    image[..., 1] = 100
    image[..., 2] = 200
    return image


def write_png(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), image), f"could not write {path}"
    return path


def blue(frame: Frame) -> int:
    return round(float(frame.image[..., 0].mean()))


@pytest.fixture
def colour_folder(tmp_path: Path) -> Path:
    """img1, img2, img10 (natural order) with blue 10, 20, 30; a corrupt JPEG; a text file."""
    folder = tmp_path / "faces"
    folder.mkdir()
    write_png(folder / "img10.png", solid(30))
    write_png(folder / "img2.png", solid(20))
    write_png(folder / "img1.png", solid(10))
    rng = np.random.default_rng(0)
    (folder / "img3_corrupt.jpg").write_bytes(rng.integers(0, 256, 2000, np.uint8).tobytes())
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture
def video_file(tmp_path: Path) -> Path:
    """A short MJPG .avi whose frame i has grey level 20·i; checked readable."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), VIDEO_FPS, (W, H))
    assert writer.isOpened(), "OpenCV cannot write MJPG .avi here"
    for i in range(VIDEO_FRAMES):
        writer.write(np.full((H, W, 3), 20 * i, np.uint8))
    writer.release()
    check = cv2.VideoCapture(str(path))
    count = 0
    while check.read()[0]:
        count += 1
    check.release()
    assert count == VIDEO_FRAMES, f"the test video reads back {count} frames"
    return path


def assert_bgr8(frame: Frame) -> None:
    assert frame.image.dtype == np.uint8
    assert frame.image.ndim == 3 and frame.image.shape[2] == 3
    assert frame.image.flags["C_CONTIGUOUS"]


def assert_ordered(frames: list[Frame]) -> None:
    assert [f.index for f in frames] == list(range(len(frames)))
    stamps = [f.timestamp for f in frames]
    assert stamps == sorted(stamps)


# -- the protocol and the base class ------------------------------------------------


def test_every_source_is_a_frame_source(tmp_path: Path, colour_folder: Path) -> None:
    image = colour_folder / "img1.png"
    sources: list[object] = [
        ImageSource(image),
        FolderSource(colour_folder),
        V4L2Source("/dev/nonexistent"),
        PiCameraSource(),
    ]
    for source in sources:
        assert isinstance(source, FrameSource)
        assert isinstance(source, BaseFrameSource)


def test_read_before_open_says_how_to_open(colour_folder: Path) -> None:
    source = ImageSource(colour_folder / "img1.png")
    with pytest.raises(CameraError, match="not open"):
        source.read()


def test_close_twice_and_reopen_restarts(colour_folder: Path) -> None:
    source = FolderSource(colour_folder)
    source.open()
    first = source.read()
    second = source.read()
    assert first is not None and second is not None
    source.close()
    source.close()  # idempotent
    assert not source.is_open
    with pytest.raises(CameraError):
        source.read()
    with source:
        again = source.read()
        assert again is not None
        assert again.index == 0
        assert blue(again) == blue(first)
    assert not source.is_open


def test_context_manager_closes_on_error(colour_folder: Path) -> None:
    source = ImageSource(colour_folder / "img1.png", loop=True)
    with pytest.raises(RuntimeError), source:
        assert source.is_open
        raise RuntimeError("boom")
    assert not source.is_open


def test_image_source_repeats_then_ends(colour_folder: Path) -> None:
    with ImageSource(colour_folder / "img2.png", repeat=3) as source:
        frames = list(source)
        assert source.read() is None  # stays ended
    assert len(frames) == 3
    assert_ordered(frames)
    for frame in frames:
        assert_bgr8(frame)
        assert frame.image.shape == (H, W, 3)
        assert blue(frame) == 20
        assert frame.source == "replay: img2.png"


def test_frames_own_their_pixels(colour_folder: Path) -> None:
    with ImageSource(colour_folder / "img1.png", loop=True) as source:
        first = source.read()
        assert first is not None
        first.image[:] = 0  # e.g. the screen drawing an overlay
        second = source.read()
        assert second is not None
        assert blue(second) == 10


def test_image_source_loop_never_ends(colour_folder: Path) -> None:
    with ImageSource(colour_folder / "img1.png", loop=True) as source:
        frames = [source.read() for _ in range(25)]
    assert all(f is not None for f in frames)


def test_odd_image_layouts_become_bgr8(tmp_path: Path) -> None:
    grey = write_png(tmp_path / "grey.png", np.full((H, W), 90, np.uint8))
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 11, 22, 33, 40
    rgba_path = write_png(tmp_path / "rgba.png", rgba)
    deep_path = write_png(tmp_path / "deep.png", np.full((H, W, 3), 0x8080, np.uint16))
    jpg_path = tmp_path / "photo.jpg"
    assert cv2.imwrite(str(jpg_path), solid(60))
    expected = {grey: (90, 90, 90), rgba_path: (11, 22, 33), deep_path: (128, 128, 128)}
    for path, bgr in expected.items():
        with ImageSource(path) as source:
            frame = source.read()
        assert frame is not None
        assert_bgr8(frame)
        assert tuple(int(v) for v in frame.image[0, 0]) == bgr, path.name
    with ImageSource(jpg_path) as source:
        frame = source.read()
    assert frame is not None
    assert_bgr8(frame)
    assert abs(blue(frame) - 60) <= 3


def test_odd_path_names_work(tmp_path: Path) -> None:
    folder = tmp_path / "Bilder für Kiosk (alt) #1"
    folder.mkdir()
    write_png(folder / "gesicht ü.png", solid(40))
    with FolderSource(folder) as source:
        frame = source.read()
    assert frame is not None and blue(frame) == 40


def test_corrupt_single_image_is_an_error(colour_folder: Path) -> None:
    source = ImageSource(colour_folder / "img3_corrupt.jpg")
    with pytest.raises(CameraError, match=r"img3_corrupt\.jpg"):
        source.open()
    assert not source.is_open


def test_missing_paths_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "face.png"
    for make in (ImageSource, FolderSource, VideoSource):
        with pytest.raises(CameraError, match="nowhere") as info:
            make(missing)
        assert str(missing) in str(info.value)
    with pytest.raises(CameraError, match="no such file or folder") as info:
        open_source(str(missing))
    assert str(missing) in str(info.value)


def test_bad_settings_are_config_errors(colour_folder: Path) -> None:
    with pytest.raises(ConfigError):
        ImageSource(colour_folder / "img1.png", fps=0)
    with pytest.raises(ConfigError):
        FolderSource(colour_folder, repeat=0)


# -- folders ------------------------------------------------------------------------


def test_folder_plays_in_name_order_and_skips_corrupt(
    colour_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="kiosk.camera"),
        FolderSource(colour_folder) as source,
    ):
        frames = list(source)
    assert [blue(f) for f in frames] == [10, 20, 30]  # img1, img2, img10
    assert_ordered(frames)
    for frame in frames:
        assert_bgr8(frame)
    assert source.label == "replay: faces"
    assert source.is_replay
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("img3_corrupt.jpg" in message for message in warnings)


def test_folder_repeat_and_loop(colour_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="kiosk.camera"),
        FolderSource(colour_folder, repeat=2, loop=True) as source,
    ):
        frames = [source.read() for _ in range(14)]
    values = [blue(f) for f in frames if f is not None]
    assert values == [10, 10, 20, 20, 30, 30] * 2 + [10, 10]
    assert_ordered([f for f in frames if f is not None])
    # The corrupt file is reported once, not on every pass.
    skipped = [r for r in caplog.records if "img3_corrupt.jpg" in r.getMessage()]
    assert len(skipped) == 1


def test_folder_of_only_corrupt_files_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(os.urandom(500))
    (folder / "b.png").write_bytes(b"")
    source = FolderSource(folder, loop=True)
    with pytest.raises(CameraError, match="no readable image") as info:
        source.open()
    assert str(folder) in str(info.value)
    assert not source.is_open


def test_folder_without_images_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "readme.txt").write_text("hello")
    with pytest.raises(CameraError, match="no images in folder"):
        FolderSource(folder).open()


def test_fps_paces_frames(colour_folder: Path) -> None:
    fps, count = 50.0, 10
    with FolderSource(colour_folder, fps=fps, loop=True) as source:
        start = time.monotonic()
        frames = [source.read() for _ in range(count)]
        elapsed = time.monotonic() - start
    assert all(f is not None for f in frames)
    assert elapsed >= 0.8 * count / fps


# -- video --------------------------------------------------------------------------


def test_video_frames_in_order_then_end(video_file: Path) -> None:
    with VideoSource(video_file) as source:
        frames = list(source)
        assert source.read() is None
    assert len(frames) == VIDEO_FRAMES
    assert_ordered(frames)
    for frame in frames:
        assert_bgr8(frame)
        assert frame.image.shape == (H, W, 3)
    levels = [float(f.image.mean()) for f in frames]
    assert levels == sorted(levels)
    assert levels[-1] - levels[0] > 100
    assert source.label == "replay: clip.avi"
    assert source.is_replay
    assert source.native_fps == pytest.approx(VIDEO_FPS)


def test_video_loop_restarts(video_file: Path) -> None:
    with VideoSource(video_file, loop=True) as source:
        frames = [source.read() for _ in range(VIDEO_FRAMES + 3)]
    assert all(f is not None for f in frames)
    real = [f for f in frames if f is not None]
    assert_ordered(real)
    assert abs(float(real[VIDEO_FRAMES].image.mean()) - float(real[0].image.mean())) < 5
    assert real[VIDEO_FRAMES].index == VIDEO_FRAMES


def test_video_realtime_uses_its_own_rate(video_file: Path) -> None:
    with VideoSource(video_file, realtime=True) as source:
        start = time.monotonic()
        frames = list(source)
        elapsed = time.monotonic() - start
    assert len(frames) == VIDEO_FRAMES
    assert elapsed >= 0.8 * VIDEO_FRAMES / VIDEO_FPS


def test_not_a_video_is_an_error(tmp_path: Path) -> None:
    junk = tmp_path / "movie.mp4"
    junk.write_bytes(os.urandom(3000))
    with pytest.raises(CameraError, match=r"movie\.mp4"):
        VideoSource(junk).open()


# -- cameras: error messages --------------------------------------------------------


def test_v4l2_missing_device_says_what_to_do() -> None:
    source = V4L2Source("/dev/nonexistent")
    with pytest.raises(CameraError) as info:
        source.open()
    message = str(info.value)
    assert "no camera at /dev/nonexistent" in message
    assert "--source" in message
    assert not source.is_open


def test_v4l2_device_numbers_mean_dev_video() -> None:
    assert V4L2Source(7).label == "camera: /dev/video7"
    assert V4L2Source("3").device == Path("/dev/video3")
    assert not V4L2Source().is_replay


def test_v4l2_permission_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = tmp_path / "video9"
    node.touch()
    monkeypatch.setattr(os, "access", lambda *_args, **_kwargs: False)
    with pytest.raises(CameraError) as info:
        V4L2Source(node).open()
    message = str(info.value)
    assert "permission" in message
    assert "video group" in message
    assert "sudo usermod -aG video $USER" in message


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root may open a mode-000 file, so a real permission failure cannot be staged",
)
def test_v4l2_real_permission_failure(tmp_path: Path) -> None:
    node = tmp_path / "video9"
    node.touch()
    node.chmod(0)
    with pytest.raises(CameraError, match="usermod -aG video"):
        V4L2Source(node).open()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (PermissionError(13, "Permission denied"), "sudo usermod -aG video $USER"),
        (OSError(16, "Device or resource busy"), "is another program using it?"),
    ],
)
def test_v4l2_open_failure_is_diagnosed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError, expected: str
) -> None:
    """When OpenCV cannot open a node that looked usable, opening it directly says why.

    (As root ``os.access`` approves every file, so the failure itself must be examined.)
    """
    node = tmp_path / "video9"
    node.touch()

    def refuse(*_args: object, **_kwargs: object) -> int:
        raise error

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(CameraError) as info:
        V4L2Source(node).open()
    assert expected in str(info.value)


def test_v4l2_plain_file_is_not_a_camera(tmp_path: Path) -> None:
    node = tmp_path / "video9"
    node.write_bytes(b"")
    if not os.access(node, os.R_OK | os.W_OK):  # pragma: no cover - unusual umask
        pytest.skip("cannot make a read-write temporary file")
    with pytest.raises(CameraError, match="not a video device"):
        V4L2Source(node).open()


def test_picamera2_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes the import fail
    source = PiCameraSource(width=320, height=240, fps=10)
    with pytest.raises(CameraError) as info:
        source.open()
    assert "sudo apt install python3-picamera2" in str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert not source.is_open
    source.close()


class FakePicamera2:
    """Stands in for picamera2.Picamera2 with the calls PiCameraSource makes."""

    cameras: ClassVar[list[dict[str, Any]]] = [{"Model": "imx708", "Num": 0}]
    instances: ClassVar[list[FakePicamera2]] = []

    def __init__(self, camera_num: int = 0) -> None:
        self.calls: list[str] = []
        self.size = (0, 0)
        FakePicamera2.instances.append(self)

    @classmethod
    def global_camera_info(cls) -> list[dict[str, Any]]:
        return cls.cameras

    def create_video_configuration(self, main: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        assert main["format"] == "RGB888"
        self.size = main["size"]
        return {"main": main, **kwargs}

    def configure(self, config: dict[str, Any]) -> None:
        self.calls.append("configure")

    def start(self) -> None:
        self.calls.append("start")

    def capture_array(self, name: str = "main") -> np.ndarray:
        width, height = self.size
        return np.full((height, width, 3), 42, np.uint8)

    def stop(self) -> None:
        self.calls.append("stop")

    def close(self) -> None:
        self.calls.append("close")


@pytest.fixture
def fake_picamera2(monkeypatch: pytest.MonkeyPatch) -> type[FakePicamera2]:
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    monkeypatch.setattr(FakePicamera2, "cameras", [{"Model": "imx708", "Num": 0}])
    FakePicamera2.instances.clear()
    return FakePicamera2


def test_picamera_frames_and_release(fake_picamera2: type[FakePicamera2]) -> None:
    with PiCameraSource(width=320, height=240, fps=10) as source:
        frames = [source.read() for _ in range(3)]
    real = [f for f in frames if f is not None]
    assert len(real) == 3
    assert_ordered(real)
    assert real[0].image.shape == (240, 320, 3)
    assert not source.is_replay
    camera = fake_picamera2.instances[0]
    assert camera.calls == ["configure", "start", "stop", "close"]
    source.close()
    assert camera.calls.count("close") == 1


def test_picamera_without_camera_points_at_the_cable(
    fake_picamera2: type[FakePicamera2], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fake_picamera2, "cameras", [])
    with pytest.raises(CameraError) as info:
        PiCameraSource().open()
    assert "ribbon cable" in str(info.value)
    assert "rpicam-hello --list-cameras" in str(info.value)


# -- choosing a source --------------------------------------------------------------


def test_open_source_picks_by_path(colour_folder: Path, video_file: Path) -> None:
    folder = open_source(str(colour_folder))
    assert isinstance(folder, FolderSource)
    image = open_source(str(colour_folder / "img1.png"), fps=5)
    assert isinstance(image, ImageSource)
    video = open_source(str(video_file))
    assert isinstance(video, VideoSource)
    for source in (folder, image, video):
        assert source.is_replay
        assert source.label.startswith("replay: ")
    with video:
        frame = video.read()
    assert frame is not None and frame.source == "replay: clip.avi"


def test_open_source_v4l2_device(tmp_path: Path) -> None:
    source = open_source("v4l2:/dev/nonexistent", width=320, height=240, fps=10)
    assert isinstance(source, V4L2Source)
    assert not source.is_replay
    with pytest.raises(CameraError, match="no camera at /dev/nonexistent"):
        source.open()
    default = open_source("v4l2")
    assert isinstance(default, V4L2Source)
    assert default.device == Path("/dev/video0")


def test_open_source_picamera2(fake_picamera2: type[FakePicamera2]) -> None:
    assert isinstance(open_source("picamera2"), PiCameraSource)
    assert isinstance(open_source("auto"), PiCameraSource)


@pytest.fixture
def no_cameras(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """This machine as it is: no picamera2 and no /dev/video0, whatever the host has."""
    monkeypatch.setitem(sys.modules, "picamera2", None)
    monkeypatch.setattr(v4l2, "DEFAULT_DEVICE", str(tmp_path / "no-video0"))


@pytest.mark.usefixtures("no_cameras")
def test_auto_falls_back_to_demo_replay(
    colour_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fps = 20.0
    with caplog.at_level(logging.INFO, logger="kiosk.camera"):
        source = open_source("auto", fps=fps, demo_dir=colour_folder)
    assert isinstance(source, FolderSource)
    assert source.is_replay and source.loop
    assert source.repeat == round(fps * DEMO_HOLD_SECONDS)
    assert any("replay: faces" in r.getMessage() for r in caplog.records)
    with source:
        frame = source.read()
    assert frame is not None
    assert_bgr8(frame)


@pytest.mark.usefixtures("no_cameras")
def test_auto_without_demo_images_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="kiosk samples fetch"):
        open_source("auto", demo_dir=None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CameraError, match="kiosk samples fetch") as info:
        open_source("auto", demo_dir=empty)
    assert str(empty) in str(info.value)
    assert "--source" in str(info.value)
