"""Raspberry Pi camera modules (CSI ribbon cable) through picamera2.

Choices made here:

* picamera2 is imported inside ``open()`` only, so the package imports and
  tests run on machines without it. It is not on PyPI in a usable form for the
  Pi: Raspberry Pi OS ships it as the apt package ``python3-picamera2``, and the
  kiosk venv is created with ``--system-site-packages`` to see it.
* The main stream is configured as ``RGB888``, which picamera2 documents as
  24 bits per pixel ordered [B, G, R] — OpenCV's BGR layout, so frames need no
  channel swap. The frame rate is requested through the ``FrameRate`` control.
* Every failure is a :class:`~kiosk.errors.CameraError` that says what to do:
  install picamera2, check the ribbon cable (``rpicam-hello --list-cameras``),
  or stop the other program holding the camera.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from kiosk.camera.base import BaseFrameSource, BGRImage
from kiosk.errors import CameraError, FrameError
from kiosk.vision.frames import as_bgr

logger = logging.getLogger(__name__)

_NOT_INSTALLED = (
    "picamera2 is not installed: on Raspberry Pi OS run `sudo apt install python3-picamera2` "
    "and create the kiosk venv with --system-site-packages; on other machines use a USB "
    "camera (--source v4l2) or --source with a file"
)
_NO_CAMERA = (
    "no Raspberry Pi camera found: check that the ribbon cable is seated the right way round "
    "at both ends (power off first), then list cameras with `rpicam-hello --list-cameras`"
)


def _import_picamera2() -> Any:
    """The ``Picamera2`` class, or CameraError saying how to install it."""
    try:
        from picamera2 import Picamera2  # optional, Pi-only dependency
    except ImportError as exc:
        raise CameraError(_NOT_INSTALLED) from exc
    return Picamera2


def picamera2_available() -> bool:
    """True when picamera2 imports and lists at least one camera (never raises)."""
    try:
        picamera2_class = _import_picamera2()
        cameras = picamera2_class.global_camera_info()
    except CameraError:
        logger.debug("picamera2 is not installed")
        return False
    except Exception:
        logger.debug("picamera2 could not list cameras", exc_info=True)
        return False
    return bool(cameras)


class PiCameraSource(BaseFrameSource):
    """A Raspberry Pi camera module read with picamera2."""

    def __init__(
        self, *, width: int = 640, height: int = 480, fps: float = 15.0, camera_num: int = 0
    ) -> None:
        suffix = "" if camera_num == 0 else f" #{camera_num}"
        super().__init__(f"camera: picamera2{suffix}")
        self.width = width
        self.height = height
        self.fps = fps
        self.camera_num = camera_num
        self._camera: Any = None

    def _open(self) -> None:
        picamera2_class = _import_picamera2()
        try:
            cameras = picamera2_class.global_camera_info()
        except Exception as exc:
            raise CameraError(f"{_NO_CAMERA} ({exc})") from exc
        if len(cameras) <= self.camera_num:
            raise CameraError(_NO_CAMERA)
        try:
            camera = picamera2_class(self.camera_num)
            self._camera = camera
            config = camera.create_video_configuration(
                main={"size": (self.width, self.height), "format": "RGB888"},
                controls={"FrameRate": float(self.fps)},
            )
            camera.configure(config)
            camera.start()
        except Exception as exc:
            raise CameraError(
                f"cannot start the Raspberry Pi camera: {exc}. Is another program using it? "
                "Stop it, then check the camera with `rpicam-hello --list-cameras`"
            ) from exc
        logger.info("%s: %dx%d at %.3g fps", self.label, self.width, self.height, self.fps)

    def _grab(self) -> BGRImage:
        try:
            array = self._camera.capture_array("main")
        except Exception as exc:
            raise CameraError(
                f"the Raspberry Pi camera stopped delivering frames: {exc} "
                "(check the ribbon cable and `rpicam-hello --list-cameras`)"
            ) from exc
        try:
            return as_bgr(np.asarray(array))
        except FrameError as exc:
            raise CameraError(f"the Raspberry Pi camera delivered {exc}") from exc

    def _close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        for step in ("stop", "close"):
            try:
                getattr(camera, step)()
            except Exception:
                logger.warning("picamera2 %s() failed", step, exc_info=True)
