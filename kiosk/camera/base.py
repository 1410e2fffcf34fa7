"""Frames and the :class:`FrameSource` protocol every camera and replay implements.

Choices made here:

* A :class:`Frame` is always an H×W×3 ``uint8`` BGR image (OpenCV's layout),
  whatever the source delivered: :func:`kiosk.vision.frames.as_bgr` turns grey, BGRA and 16-bit
  images into that one layout, so no consumer has to check.
* Every frame owns its pixels: a consumer may draw on ``frame.image`` (the
  screen overlays boxes) without changing later frames, even when a replay
  repeats one still image.
* ``Frame.timestamp`` is :func:`time.monotonic` seconds at the moment the
  source handed the frame over (after any replay pacing), ``Frame.index``
  counts frames from 0 since the source was opened.
* A source is opened explicitly (``open()`` or ``with source:``). ``read()`` on a
  source that is not open raises :class:`~kiosk.errors.CameraError`; ``read()``
  returns ``None`` once a finite source has ended and keeps returning ``None``;
  a camera that stops delivering raises instead. ``close()`` is idempotent, and
  a closed source may be opened again (a replay then starts from the beginning).
* :class:`BaseFrameSource` holds this shared behaviour; a source writes only
  ``_open`` / ``_grab`` / ``_close``. ``_close`` must cope with a half-finished
  ``_open``: when ``_open`` raises, ``_close`` is called before the error
  propagates, so no device stays held.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self, TypeAlias, runtime_checkable

import numpy as np
import numpy.typing as npt

from kiosk.errors import CameraError

logger = logging.getLogger(__name__)

#: An H×W×3 ``uint8`` image in OpenCV's BGR channel order.
BGRImage: TypeAlias = npt.NDArray[np.uint8]


@dataclass(frozen=True, eq=False)
class Frame:
    """One image from a :class:`FrameSource`."""

    image: BGRImage = field(repr=False)
    """H×W×3 ``uint8`` pixels in BGR order; owned by this frame."""
    timestamp: float
    """:func:`time.monotonic` seconds when the frame was captured or replayed."""
    index: int
    """0-based count of frames delivered by the source since it was opened."""
    source: str
    """Human label of the source (``FrameSource.label``)."""

    @property
    def height(self) -> int:
        """Rows of the image."""
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        """Columns of the image."""
        return int(self.image.shape[1])


@runtime_checkable
class FrameSource(Protocol):
    """Anything that delivers :class:`Frame` objects: a camera or a replay."""

    label: str
    """Human label, e.g. ``"camera: /dev/video0"`` or ``"replay: demo"``."""
    is_replay: bool
    """True for files, folders and videos; the screen marks such a source as a replay."""

    def open(self) -> None:
        """Acquire the device or file; raises CameraError saying what to do."""
        ...

    def read(self) -> Frame | None:
        """The next frame, or None when a finite source has ended."""
        ...

    def close(self) -> None:
        """Release the device or file; safe to call more than once."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def __iter__(self) -> Iterator[Frame]: ...


class BaseFrameSource(ABC):
    """Context manager, iteration, frame numbering and idempotent close for a source.

    Subclasses set :attr:`label` (and :attr:`is_replay` for replays) and
    implement :meth:`_open`, :meth:`_grab` and :meth:`_close`.
    """

    is_replay: bool = False

    def __init__(self, label: str) -> None:
        self.label = label
        self._is_open = False
        self._ended = False
        self._next_index = 0

    # -- what a source implements -------------------------------------------------

    @abstractmethod
    def _open(self) -> None:
        """Acquire resources; raise CameraError on failure."""

    @abstractmethod
    def _grab(self) -> BGRImage | None:
        """The next image (already H×W×3 uint8, owned by the caller), or None at the end."""

    @abstractmethod
    def _close(self) -> None:
        """Release resources; must tolerate a partly completed ``_open``."""

    # -- shared behaviour ---------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """True between a successful :meth:`open` and :meth:`close`."""
        return self._is_open

    def open(self) -> None:
        """Acquire the device or file; opening an open source does nothing."""
        if self._is_open:
            return
        try:
            self._open()
        except BaseException:
            self._close_quietly()
            raise
        self._is_open = True
        self._ended = False
        self._next_index = 0
        logger.debug("opened %s", self.label)

    def read(self) -> Frame | None:
        """The next frame, or None once the source has ended."""
        if not self._is_open:
            raise CameraError(f"{self.label} is not open: use `with source:` or call open() first")
        if self._ended:
            return None
        image = self._grab()
        if image is None:
            self._ended = True
            logger.debug("%s ended after %d frames", self.label, self._next_index)
            return None
        frame = Frame(
            image=image, timestamp=time.monotonic(), index=self._next_index, source=self.label
        )
        self._next_index += 1
        return frame

    def close(self) -> None:
        """Release the device or file; closing twice is harmless."""
        if not self._is_open:
            return
        self._is_open = False
        self._close()
        logger.debug("closed %s", self.label)

    def _close_quietly(self) -> None:
        try:
            self._close()
        except Exception:
            logger.warning(
                "error while releasing %s after a failed open", self.label, exc_info=True
            )

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        """Frames until the source ends (forever for a camera or a looping replay)."""
        while (frame := self.read()) is not None:
            yield frame

    def __repr__(self) -> str:
        state = "open" if self._is_open else "closed"
        return f"<{type(self).__name__} {self.label!r} {state}>"
