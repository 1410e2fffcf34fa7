"""Replay sources: a still image, a folder of images, or a video file, played as a camera.

They stand in for a camera in tests, demos and on machines without one. Every
replay has ``is_replay = True`` and a label ``"replay: <file or folder name>"``
so the screen can say that it is not showing a live camera.

Choices made here:

* **Pacing.** All replays take ``fps``: ``None`` delivers frames as fast as they
  are read; a number paces them to that rate with :func:`time.monotonic` and
  :func:`time.sleep` (the first frame comes at once, frame *k* is due *k/fps*
  seconds later; a consumer slower than that is never made to catch up with a
  burst). A video additionally takes ``realtime=True``, which, when ``fps`` is
  None, paces it at the file's own frame rate (unpaced, with a warning, when
  the file does not state a plausible one). ``fps`` wins over ``realtime``.
  Replays never drop frames: a slow consumer sees a video in slow motion.
* **Stills.** An image is decoded once, when the source is opened, and each
  still yields ``repeat`` frames (default 1); every frame gets its own copy of
  the pixels. Images are read with ``cv2.imdecode(np.fromfile(...))`` (so any
  path works) honouring EXIF orientation; grey, BGRA and 16-bit images are
  converted to H×W×3 ``uint8`` BGR (:func:`kiosk.vision.frames.decode_image`).
* **Folders.** Files ending in .jpg, .jpeg, .png, .bmp or .webp (any case,
  not hidden, not in sub-folders) are played in name order, numbers compared
  as numbers (``img2`` before ``img10``). The listing is taken on ``open()``.
  Images are decoded one at a time as they are reached, so a large folder
  costs no memory; a file that cannot be read or decoded is skipped with a
  logged warning (once), and a folder where nothing can be decoded raises
  :class:`~kiosk.errors.CameraError` from ``open()``.
* **Looping.** ``loop=False`` (the default) ends the source — ``read()``
  returns None and iteration stops — after the last frame; ``loop=True``
  starts again from the first image or frame, for ever.
* **Errors.** A path that does not exist, or is a file where a folder is
  expected (or the reverse), raises CameraError naming the path from the
  constructor; anything that can only be seen by reading raises from
  ``open()``. A non-positive ``fps`` or ``repeat`` is a
  :class:`~kiosk.errors.ConfigError`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from pathlib import Path

import cv2
import numpy as np

from kiosk.camera.base import BaseFrameSource, BGRImage
from kiosk.errors import CameraError, ConfigError, FrameError
from kiosk.vision import frames

logger = logging.getLogger(__name__)

#: File name endings a folder replay picks up (compared case-insensitively).
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})

# A video that claims a frame rate outside this range is replayed unpaced.
_PLAUSIBLE_VIDEO_FPS = (1.0, 240.0)


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` ends in one of :data:`IMAGE_SUFFIXES`."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def decode_image(path: str | os.PathLike[str]) -> BGRImage:
    """Read an image file as H×W×3 ``uint8`` BGR, raising CameraError saying why it cannot."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CameraError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    try:
        return frames.decode_image(data, name=f"image {path}")
    except FrameError as exc:
        raise CameraError(f"{exc} (use JPEG, PNG, BMP or WebP)") from exc


def _natural_key(path: Path) -> tuple[list[int | str], str]:
    parts: list[int | str] = [
        int(token) if token.isdigit() else token.casefold()
        for token in re.split(r"(\d+)", path.name)
    ]
    return parts, path.name


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files a :class:`FolderSource` would play, in play order (not decoded)."""
    folder = Path(folder)
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise CameraError(f"cannot list folder {folder}: {exc.strerror or exc}") from exc
    images = [
        entry
        for entry in entries
        if not entry.name.startswith(".") and is_image_path(entry) and entry.is_file()
    ]
    return sorted(images, key=_natural_key)


def _check_fps(fps: float | None) -> float | None:
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ConfigError(f"replay fps must be a positive number or None, got {fps!r}")
    return fps


def _check_repeat(repeat: int) -> int:
    if repeat < 1:
        raise ConfigError(f"repeat must be at least 1 (frames per still image), got {repeat!r}")
    return repeat


class _Pacer:
    """Sleeps so that successive calls to :meth:`wait` are at least 1/fps apart on average."""

    def __init__(self, fps: float | None) -> None:
        self._period = None if fps is None else 1.0 / fps
        self._due: float | None = None

    def reset(self) -> None:
        self._due = None

    def wait(self) -> None:
        if self._period is None:
            return
        now = time.monotonic()
        if self._due is None or now - self._due > self._period:
            # First frame, or the consumer fell more than a frame behind: start afresh
            # rather than delivering a burst of frames to catch up.
            self._due = now
        delay = self._due - now
        if delay > 0:
            time.sleep(delay)
        self._due += self._period


class _ReplaySource(BaseFrameSource):
    is_replay = True

    def __init__(
        self, path: str | os.PathLike[str], *, want_dir: bool, fps: float | None, loop: bool
    ) -> None:
        self.path = Path(path)
        self._want_dir = want_dir
        _require(self.path, want_dir=want_dir)
        super().__init__(f"replay: {self.path.name or self.path}")
        self.fps = _check_fps(fps)
        self.loop = loop
        self._pacer = _Pacer(self.fps)

    def _open(self) -> None:
        _require(self.path, want_dir=self._want_dir)  # it may have gone since
        self._pacer.reset()


def _require(path: Path, *, want_dir: bool) -> None:
    if not path.exists():
        kind = "folder" if want_dir else "file"
        raise CameraError(f"no such {kind}: {path}")
    if want_dir and not path.is_dir():
        raise CameraError(f"{path} is not a folder of images")
    if not want_dir and path.is_dir():
        raise CameraError(f"{path} is a folder, not a file: replay it as a folder of images")


class ImageSource(_ReplaySource):
    """One still image, yielded ``repeat`` times (for ever with ``loop=True``)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fps: float | None = None,
        loop: bool = False,
        repeat: int = 1,
    ) -> None:
        super().__init__(path, want_dir=False, fps=fps, loop=loop)
        self.repeat = _check_repeat(repeat)
        self._image: BGRImage | None = None
        self._emitted = 0

    def _open(self) -> None:
        super()._open()
        self._image = decode_image(self.path)
        self._emitted = 0

    def _grab(self) -> BGRImage | None:
        assert self._image is not None  # set by _open  # noqa: S101
        if self._emitted >= self.repeat and not self.loop:
            return None
        self._emitted += 1
        self._pacer.wait()
        return self._image.copy()

    def _close(self) -> None:
        self._image = None


class FolderSource(_ReplaySource):
    """The images of a folder in name order, each yielded ``repeat`` times."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fps: float | None = None,
        loop: bool = False,
        repeat: int = 1,
    ) -> None:
        super().__init__(path, want_dir=True, fps=fps, loop=loop)
        self.repeat = _check_repeat(repeat)
        self._files: list[Path] = []
        self._bad: set[Path] = set()
        self._position = 0  # index into _files of the next file to decode
        self._decoded_this_pass = 0
        self._current: BGRImage | None = None
        self._emitted = 0  # frames yielded from _current

    def _open(self) -> None:
        super()._open()
        self._files = list_images(self.path)
        if not self._files:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise CameraError(
                f"no images in folder {self.path}: expected files ending in {suffixes}"
            )
        self._bad = set()
        self._position = 0
        self._decoded_this_pass = 0
        self._emitted = 0
        self._current = self._next_image(wrap=False)
        if self._current is None:
            raise CameraError(
                f"no readable image in folder {self.path}: all {len(self._files)} image file(s) "
                "are corrupt or unreadable (see the warnings logged above)"
            )

    def _next_image(self, *, wrap: bool) -> BGRImage | None:
        """Decode the next readable file, skipping bad ones; None at the end of a pass."""
        while True:
            if self._position >= len(self._files):
                if not wrap:
                    return None
                if self._decoded_this_pass == 0:
                    raise CameraError(f"no readable image left in folder {self.path}")
                self._position = 0
                self._decoded_this_pass = 0
            path = self._files[self._position]
            self._position += 1
            if path in self._bad:
                continue
            try:
                image = decode_image(path)
            except CameraError as exc:
                logger.warning("skipping %s: %s", path.name, exc)
                self._bad.add(path)
                continue
            self._decoded_this_pass += 1
            return image

    def _grab(self) -> BGRImage | None:
        if self._current is None or self._emitted >= self.repeat:
            self._current = self._next_image(wrap=self.loop)
            self._emitted = 0
            if self._current is None:
                return None
        self._emitted += 1
        self._pacer.wait()
        return self._current.copy()

    def _close(self) -> None:
        self._current = None
        self._files = []


class VideoSource(_ReplaySource):
    """The frames of a video file (anything OpenCV's VideoCapture reads)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fps: float | None = None,
        realtime: bool = False,
        loop: bool = False,
    ) -> None:
        super().__init__(path, want_dir=False, fps=fps, loop=loop)
        self.realtime = realtime
        self._capture: cv2.VideoCapture | None = None
        self._pending: BGRImage | None = None
        #: The frame rate the file states (0.0 when unknown); set by open().
        self.native_fps = 0.0

    def _start(self) -> BGRImage:
        """(Re)open the file and return its first frame."""
        self._release()
        capture = cv2.VideoCapture(str(self.path))
        self._capture = capture
        if not capture.isOpened():
            raise CameraError(f"cannot open video {self.path}: not a video format OpenCV can read")
        first = self._read_frame()
        if first is None:
            raise CameraError(f"video {self.path} has no readable frames")
        return first

    def _open(self) -> None:
        super()._open()
        self._pending = self._start()
        assert self._capture is not None  # set by _start  # noqa: S101
        native = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.native_fps = native if math.isfinite(native) else 0.0
        if self.fps is None and self.realtime:
            low, high = _PLAUSIBLE_VIDEO_FPS
            if low <= self.native_fps <= high:
                self._pacer = _Pacer(self.native_fps)
            else:
                logger.warning(
                    "%s states a frame rate of %.3g; replaying it unpaced", self.path.name, native
                )
                self._pacer = _Pacer(None)
        self._pacer.reset()

    def _read_frame(self) -> BGRImage | None:
        assert self._capture is not None  # noqa: S101
        ok, image = self._capture.read()
        if not ok or image is None:
            return None
        try:
            return frames.as_bgr(np.asarray(image))
        except FrameError as exc:
            raise CameraError(f"cannot use a frame of video {self.path}: {exc}") from exc

    def _grab(self) -> BGRImage | None:
        image, self._pending = self._pending, None
        if image is None:
            image = self._read_frame()
        if image is None:
            if not self.loop:
                return None
            logger.debug("%s: end of video, starting again", self.label)
            image = self._start()
        self._pacer.wait()
        return image

    def _release(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def _close(self) -> None:
        self._pending = None
        self._release()
