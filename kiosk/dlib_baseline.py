"""The dlib face pipeline that Howdy uses, as a speed baseline for ``kiosk bench``.

Howdy (the Linux face-login PAM module) authenticates with three dlib models:
the HOG frontal face detector, the 5-point shape predictor and the ResNet face
embedding (128-d). :class:`DlibBaseline` runs that same chain on a frame and
times each stage, so ``kiosk bench`` can put our TFLite pipeline next to it on
the same frames in the same process.

It is a yardstick for speed only: nothing here ever takes part in an
authentication decision, and its embeddings are not comparable with ours.

dlib and the model files are not kiosk dependencies; they come with the
``bench`` extra (``pip install 'kiosk[bench]'``, in a checkout
``.venv/bin/pip install -e '.[bench]'``). Importing this module never needs
them: only constructing :class:`DlibBaseline` does, and without them it raises
:class:`~kiosk.errors.ModelError` saying how to install them.
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from kiosk.errors import ConfigError, FrameError, ModelError

#: What to tell a user whose environment lacks the ``bench`` extra.
BENCH_EXTRA_HINT = "the dlib baseline needs the bench extra: .venv/bin/pip install -e '.[bench]'"

#: Length of the dlib ResNet face descriptor.
EMBEDDING_SIZE = 128

# File names inside face_recognition_models' ``models/`` folder (package version 0.3.0).
_SHAPE_PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"
_RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"

# Howdy equalises the grey frame with CLAHE before detecting, with these settings.
_CLAHE_CLIP_LIMIT = 2.0
_CLAHE_TILE_GRID = (8, 8)
# Howdy calls compute_face_descriptor(frame, shape, 1); dlib jitters only when
# num_jitters > 1, so this is one deterministic pass.
_NUM_JITTERS = 1


@dataclass(frozen=True)
class DlibTimings:
    """Wall-clock seconds of one :meth:`DlibBaseline.verify`, and the embedding it made.

    ``detect_s`` covers the grey conversion, CLAHE and the HOG detector;
    ``landmarks_s`` the 5-point shape predictor; ``embed_s`` the RGB conversion
    and ``compute_face_descriptor``; ``total_s`` all of ``verify`` (including
    input validation and picking the largest face), so it is a little more than
    the sum of the three.
    """

    detect_s: float
    landmarks_s: float
    embed_s: float
    total_s: float
    #: The 128-d dlib descriptor (float64, read-only).
    embedding: npt.NDArray[np.float64] = field(repr=False, compare=False)


class DlibBaseline:
    """Howdy's dlib pipeline: HOG detect → 5-point landmarks → ResNet embedding.

    What mirrors Howdy (its ``compare.py``):

    * detector ``dlib.get_frontal_face_detector()`` called as ``detector(grey, 1)``,
      i.e. upsampled once, on the grey frame after CLAHE (clip limit 2.0, 8×8 tiles);
    * ``dlib.shape_predictor`` with ``shape_predictor_5_face_landmarks.dat`` run on
      the colour frame with the detector's rectangle;
    * ``dlib.face_recognition_model_v1`` with ``dlib_face_recognition_resnet_model_v1.dat``
      called as ``compute_face_descriptor(image, shape, 1)`` (one jitter = no jitter,
      default padding 0.25).

    Where it differs: Howdy embeds every detected face and hands dlib the BGR
    frame as it comes from the camera (an IR camera's frame is nearly grey);
    here only the largest face is embedded, from an RGB copy, which is the
    channel order the ResNet model was trained on. The shape predictor reads
    pixel intensity as the mean of the three channels, so channel order does
    not change the landmarks. Howdy's dark-frame check, resizing to a maximum
    height and frame rotation are camera handling, not part of the pipeline,
    and are left out: the caller chooses the frame size.

    The model files come from the ``face_recognition_models`` package.
    """

    def __init__(self, *, upsample: int = 1) -> None:
        if isinstance(upsample, bool) or not isinstance(upsample, int) or upsample < 0:
            raise ConfigError(f"upsample must be a whole number >= 0, got {upsample!r}")
        try:
            import dlib
        except ImportError as exc:
            raise ModelError(BENCH_EXTRA_HINT) from exc
        shape_path, resnet_path = _model_paths()

        self.upsample = upsample
        self._detector: Any = dlib.get_frontal_face_detector()
        self._predictor: Any = _load(dlib.shape_predictor, shape_path)
        self._encoder: Any = _load(dlib.face_recognition_model_v1, resnet_path)
        self._clahe = cv2.createCLAHE(clipLimit=_CLAHE_CLIP_LIMIT, tileGridSize=_CLAHE_TILE_GRID)

    def verify(self, bgr: npt.NDArray[Any]) -> DlibTimings | None:
        """Run detect → landmarks → embed on one BGR frame and time each stage.

        ``bgr`` is an H×W×3 uint8 array as OpenCV delivers it (pass other layouts
        through :func:`kiosk.vision.frames.as_bgr` first); anything else raises
        :class:`~kiosk.errors.FrameError`. Returns ``None`` when the detector
        finds no face.
        """
        start = time.perf_counter()
        frame = _checked_bgr(bgr)

        detect_start = time.perf_counter()
        grey = self._clahe.apply(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        rects = self._detector(grey, self.upsample)
        detected = time.perf_counter()
        if len(rects) == 0:
            return None
        rect = max(rects, key=lambda r: int(r.area()))

        landmarks_start = time.perf_counter()
        shape = self._predictor(frame, rect)
        landmarks_end = time.perf_counter()

        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        descriptor = self._encoder.compute_face_descriptor(rgb, shape, _NUM_JITTERS)
        embedding = np.asarray(descriptor, dtype=np.float64).reshape(-1)
        end = time.perf_counter()
        embedding.flags.writeable = False

        return DlibTimings(
            detect_s=detected - detect_start,
            landmarks_s=landmarks_end - landmarks_start,
            embed_s=end - landmarks_end,
            total_s=end - start,
            embedding=embedding,
        )


def _checked_bgr(bgr: Any) -> npt.NDArray[np.uint8]:
    # Kept local rather than reusing kiosk.vision.frames so that this module
    # imports nothing of the vision package (nor, through it, the configuration).
    if not isinstance(bgr, np.ndarray):
        raise FrameError(f"a frame must be a numpy array, got {type(bgr).__name__}")
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.shape[0] == 0 or bgr.shape[1] == 0:
        raise FrameError(f"the dlib baseline needs an H×W×3 BGR frame, got shape {bgr.shape}")
    if bgr.dtype != np.uint8:
        raise FrameError(f"the dlib baseline needs uint8 pixels, got {bgr.dtype}")
    return np.ascontiguousarray(bgr)


def _model_paths() -> tuple[Path, Path]:
    """Paths of the 5-point shape predictor and the ResNet model, checked to exist.

    face_recognition_models 0.3.0 finds its files through ``pkg_resources``,
    which recent setuptools no longer ships; then the files are looked up in the
    installed package's folder without importing it.
    """
    try:
        with warnings.catch_warnings():
            # pkg_resources announces its own deprecation on import.
            warnings.simplefilter("ignore")
            import face_recognition_models
    except ImportError as exc:
        if exc.name == "face_recognition_models":
            raise ModelError(BENCH_EXTRA_HINT) from exc
        models_dir = _package_models_dir()
        shape = models_dir / _SHAPE_PREDICTOR_FILE
        resnet = models_dir / _RESNET_FILE
    else:
        shape = Path(face_recognition_models.pose_predictor_five_point_model_location())
        resnet = Path(face_recognition_models.face_recognition_model_location())
    for path in (shape, resnet):
        if not path.is_file():
            raise ModelError(
                f"dlib model file {path} is missing; reinstall face-recognition-models "
                f"({BENCH_EXTRA_HINT})"
            )
    return shape, resnet


def _package_models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelError(BENCH_EXTRA_HINT)
    return Path(locations[0]) / "models"


def _load(loader: Any, path: Path) -> Any:
    try:
        return loader(str(path))
    except RuntimeError as exc:
        raise ModelError(f"dlib cannot load {path}: {exc}") from exc
