"""USB (UVC) and other V4L2 cameras through OpenCV's VideoCapture.

Choices made here:

* ``device`` is a device node (``"/dev/video0"``, or a udev symlink such as
  ``/dev/v4l/by-id/…`` or ``/dev/kiosk-camera``), or a number N meaning
  ``/dev/videoN``. The node is resolved to ``/dev/videoN`` and opened *by index*
  with ``cv2.CAP_V4L2``: the V4L2 backend of some OpenCV wheels refuses to open
  by path ("can't be used to capture by name"). A node that does not resolve to
  ``/dev/videoN`` is passed to OpenCV by name.
* Before OpenCV is asked, the node is checked so the error says what to do:
  missing → connect a camera or replay a file; not readable and writable by
  this user → join the ``video`` group. When OpenCV still fails, the node is
  opened directly to tell a permission problem, a busy device and a node that
  is not a capture device apart (``os.access`` says yes to root for any file).
* Width, height and frame rate are requests; the camera may pick the nearest
  mode it has (logged at INFO). The driver buffer is set to one frame so a
  frame is as fresh as possible, which matters for liveness checks.
* ``open()`` waits up to ``first_frame_timeout`` seconds for a first frame and
  discards it (the first frames of many cameras are dark while exposure
  settles); none → "camera busy or not delivering frames". ``read()`` retries
  for up to ``frame_timeout`` seconds before raising CameraError: a camera
  never ends, so ``read()`` never returns None.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import time
from pathlib import Path

import cv2
import numpy as np

from kiosk.camera.base import BaseFrameSource, BGRImage
from kiosk.errors import CameraError, FrameError
from kiosk.vision.frames import as_bgr

logger = logging.getLogger(__name__)

#: The camera ``V4L2Source()`` and ``open_source("v4l2")`` use.
DEFAULT_DEVICE = "/dev/video0"

_VIDEO_NODE = re.compile(r"/dev/video(\d+)")
_RETRY_PAUSE = 0.01


def device_path(device: str | int | os.PathLike[str]) -> Path:
    """The device node a ``device`` argument names (``3`` and ``"3"`` mean ``/dev/video3``)."""
    if isinstance(device, int):
        return Path(f"/dev/video{device}")
    text = os.fspath(device)
    if text.isdigit():
        return Path(f"/dev/video{text}")
    return Path(text)


def _permission_error(path: Path) -> CameraError:
    return CameraError(
        f"permission denied for the camera at {path}: add this user to the video group "
        "(`sudo usermod -aG video $USER`), then log out and in again"
    )


def _busy_error(path: Path) -> CameraError:
    return CameraError(
        f"camera at {path}: camera busy or not delivering frames (is another program using it?)"
    )


class V4L2Source(BaseFrameSource):
    """A V4L2 camera (typically a USB webcam) read with OpenCV."""

    def __init__(
        self,
        device: str | int | os.PathLike[str] = DEFAULT_DEVICE,
        *,
        width: int = 640,
        height: int = 480,
        fps: float = 15.0,
        first_frame_timeout: float = 5.0,
        frame_timeout: float = 2.0,
    ) -> None:
        self.device = device_path(device)
        super().__init__(f"camera: {self.device}")
        self.width = width
        self.height = height
        self.fps = fps
        self.first_frame_timeout = first_frame_timeout
        self.frame_timeout = frame_timeout
        self._capture: cv2.VideoCapture | None = None

    def _check_node(self) -> None:
        path = self.device
        if not path.exists():
            raise CameraError(
                f"no camera at {path}: connect a USB camera or use --source with a file"
            )
        if not os.access(path, os.R_OK | os.W_OK):
            raise _permission_error(path)

    def _diagnose_open_failure(self) -> CameraError:
        """Why OpenCV could not open the node, found by opening it ourselves."""
        path = self.device
        try:
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        except PermissionError:
            return _permission_error(path)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                return _busy_error(path)
            return CameraError(f"cannot open the camera at {path}: {exc.strerror or exc}")
        os.close(fd)
        if not stat.S_ISCHR(os.stat(path).st_mode):
            return CameraError(
                f"{path} is not a video device: pass a camera node such as /dev/video0, "
                "or use --source with an image, a folder or a video file"
            )
        return CameraError(
            f"OpenCV cannot capture from {path}: it may be a metadata node rather than the "
            "camera's capture node; list the capture nodes with `v4l2-ctl --list-devices`"
        )

    def _open(self) -> None:
        self._check_node()
        resolved = os.path.realpath(self.device)
        match = _VIDEO_NODE.fullmatch(resolved)
        target: int | str = int(match.group(1)) if match else str(self.device)
        capture = cv2.VideoCapture(target, cv2.CAP_V4L2)
        self._capture = capture
        if not capture.isOpened():
            raise self._diagnose_open_failure()
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, float(self.width))
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, float(self.height))
        capture.set(cv2.CAP_PROP_FPS, float(self.fps))
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1.0)
        if self._read_within(self.first_frame_timeout) is None:
            raise _busy_error(self.device)
        logger.info(
            "%s: %dx%d at %.3g fps (asked for %dx%d at %.3g fps)",
            self.label,
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            capture.get(cv2.CAP_PROP_FPS),
            self.width,
            self.height,
            self.fps,
        )

    def _read_within(self, timeout: float) -> BGRImage | None:
        assert self._capture is not None  # noqa: S101
        deadline = time.monotonic() + timeout
        while True:
            ok, image = self._capture.read()
            if ok and image is not None:
                try:
                    return as_bgr(np.asarray(image))
                except FrameError as exc:
                    raise CameraError(f"camera at {self.device} delivered {exc}") from exc
            if time.monotonic() >= deadline:
                return None
            time.sleep(_RETRY_PAUSE)

    def _grab(self) -> BGRImage:
        image = self._read_within(self.frame_timeout)
        if image is None:
            raise CameraError(
                f"camera at {self.device} stopped delivering frames for {self.frame_timeout:g} s "
                "(unplugged, or taken by another program?)"
            )
        return image

    def _close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
