"""Where frames come from: Raspberry Pi cameras, V4L2 (USB) cameras, and replays of files.

Every source is a :class:`FrameSource`: open it (``with source:``), read
:class:`Frame` objects (H×W×3 ``uint8`` BGR) until ``read()`` returns None
(only a finished, non-looping replay does that; a failing camera raises
:class:`~kiosk.errors.CameraError`), close it.

:func:`open_source` turns the ``camera.source`` setting (or ``--source``) into
a source. It builds the source but does not open it, so errors that need the
device (busy, no frames, no permission) come from ``open()``; a missing replay
path fails at once. Its choices:

* ``"auto"`` → :class:`PiCameraSource` when picamera2 imports and lists a
  camera; else :class:`V4L2Source` on ``/dev/video0`` when that node exists;
  else a looping, ``fps``-paced :class:`FolderSource` replay of ``demo_dir``
  in which each demo photo is held for :data:`DEMO_HOLD_SECONDS` (so the face
  flow has time to run on it); no demo images → CameraError telling the user to
  run ``kiosk samples fetch`` or pass ``--source``.
* ``"picamera2"`` → :class:`PiCameraSource`; ``"v4l2"`` → :class:`V4L2Source`
  on ``/dev/video0``; ``"v4l2:/dev/videoN"`` (or ``"v4l2:N"``, or any node such
  as a udev symlink) → that device.
* Anything else is a path: a folder → :class:`FolderSource` (one frame per
  image, at ``fps``: a folder may be a dumped frame sequence); a file ending in
  an image suffix → :class:`ImageSource` (paced at ``fps``); any other file →
  :class:`VideoSource` played at the file's own frame rate (``realtime=True``).
  ``loop`` applies to all replays (the ``camera.loop`` setting).

The chosen source is logged at INFO.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kiosk.camera import v4l2
from kiosk.camera.base import BaseFrameSource, BGRImage, Frame, FrameSource
from kiosk.camera.picam import PiCameraSource, picamera2_available
from kiosk.camera.replay import (
    IMAGE_SUFFIXES,
    FolderSource,
    ImageSource,
    VideoSource,
    decode_image,
    is_image_path,
    list_images,
)
from kiosk.camera.v4l2 import DEFAULT_DEVICE, V4L2Source
from kiosk.errors import CameraError

__all__ = [
    "DEFAULT_DEVICE",
    "DEMO_HOLD_SECONDS",
    "IMAGE_SUFFIXES",
    "BGRImage",
    "BaseFrameSource",
    "FolderSource",
    "Frame",
    "FrameSource",
    "ImageSource",
    "PiCameraSource",
    "V4L2Source",
    "VideoSource",
    "decode_image",
    "is_image_path",
    "list_images",
    "open_source",
    "picamera2_available",
]

logger = logging.getLogger(__name__)

#: Seconds each photo of the demo replay stays on screen (``"auto"`` without a camera).
DEMO_HOLD_SECONDS = 2.0

_SPEC_HELP = (
    "expected 'auto', 'picamera2', 'v4l2', 'v4l2:/dev/videoN', or a path to an image, "
    "a folder of images or a video file"
)


def _demo_source(demo_dir: Path | None, *, fps: float, loop: bool) -> FolderSource:
    fetch_hint = (
        "run `kiosk samples fetch` to get the demo images, or pass --source with an image, "
        "a folder of images or a video file"
    )
    if demo_dir is None:
        raise CameraError(f"no camera found and no demo images configured: {fetch_hint}")
    if not demo_dir.is_dir() or not list_images(demo_dir):
        raise CameraError(f"no camera found and no demo images in {demo_dir}: {fetch_hint}")
    repeat = max(1, round(fps * DEMO_HOLD_SECONDS))
    return FolderSource(demo_dir, fps=fps, loop=loop, repeat=repeat)


def _auto_source(
    *, width: int, height: int, fps: float, loop: bool, demo_dir: Path | None
) -> FrameSource:
    if picamera2_available():
        return PiCameraSource(width=width, height=height, fps=fps)
    if Path(v4l2.DEFAULT_DEVICE).exists():
        logger.info("no Raspberry Pi camera; using %s", v4l2.DEFAULT_DEVICE)
        return V4L2Source(v4l2.DEFAULT_DEVICE, width=width, height=height, fps=fps)
    logger.info("no Raspberry Pi camera and no %s: replaying the demo images", v4l2.DEFAULT_DEVICE)
    return _demo_source(demo_dir, fps=fps, loop=loop)


def _path_source(spec: str, *, fps: float, loop: bool) -> FrameSource:
    path = Path(spec).expanduser()
    if not path.exists():
        raise CameraError(f"no such file or folder: {path} ({_SPEC_HELP})")
    if path.is_dir():
        return FolderSource(path, fps=fps, loop=loop)
    if is_image_path(path):
        return ImageSource(path, fps=fps, loop=loop)
    return VideoSource(path, realtime=True, loop=loop)


def open_source(
    spec: str,
    *,
    width: int = 640,
    height: int = 480,
    fps: float = 15.0,
    loop: bool = True,
    demo_dir: Path | None = None,
) -> FrameSource:
    """Build the (unopened) frame source ``spec`` names; see the module docstring."""
    text = spec.strip()
    if not text:
        raise CameraError(f"empty camera source: {_SPEC_HELP}")
    kind = text.lower()
    source: FrameSource
    if kind == "auto":
        source = _auto_source(width=width, height=height, fps=fps, loop=loop, demo_dir=demo_dir)
    elif kind == "picamera2":
        source = PiCameraSource(width=width, height=height, fps=fps)
    elif kind == "v4l2" or kind.startswith("v4l2:"):
        device = text[len("v4l2:") :].strip() or DEFAULT_DEVICE
        source = V4L2Source(device, width=width, height=height, fps=fps)
    else:
        source = _path_source(text, fps=fps, loop=loop)
    logger.info(
        "frame source: %s (%s%s)",
        source.label,
        type(source).__name__,
        ", replay" if source.is_replay else "",
    )
    return source
