"""Frame → face observations, and a face tracked across frames.

``observe`` measures every face in a still frame. ``track`` follows one face
through a stream the way MediaPipe does: the mesh runs on the region the
previous frame's landmarks give, and the detector runs again only when the mesh
says the face is gone (presence below the threshold) — so a steady face costs
one mesh invoke per frame. Each new detection starts a new ``track_id``; a
liveness challenge requires one track from start to end.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kiosk.config import QualitySettings, Settings, VisionSettings
from kiosk.vision import measures
from kiosk.vision.antispoof import AntiSpoof
from kiosk.vision.detection import FaceDetector, auto_grid
from kiosk.vision.embedding import FaceEmbedder
from kiosk.vision.eyes import EyeLids
from kiosk.vision.frames import as_bgr
from kiosk.vision.geometry import align, roi_from_detection
from kiosk.vision.mesh import FaceMesh, roi_from_landmarks
from kiosk.vision.quality import assess
from kiosk.vision.runtime import Model
from kiosk.vision.types import Detection, FaceObservation, FloatArray, Roi


@dataclass
class StageTimes:
    """Seconds spent in each stage of the last call, and inside the models' ``invoke()``."""

    detect_s: float = 0.0
    detect_invoke_s: float = 0.0
    mesh_s: float = 0.0
    mesh_invoke_s: float = 0.0
    align_s: float = 0.0
    eyes_s: float = 0.0
    embed_s: float = 0.0
    embed_invoke_s: float = 0.0


def frame_digest(image: npt.NDArray[np.uint8]) -> bytes:
    """A fingerprint of the whole frame (taken once per frame, shared by its faces)."""
    return hashlib.blake2b(image.data, digest_size=16).digest()


class FacePipeline:
    """The on-device face pipeline: detector, mesh and embedder with their settings."""

    def __init__(
        self,
        detector: FaceDetector,
        mesh: FaceMesh,
        embedder: FaceEmbedder,
        *,
        eyelids: EyeLids | None = None,
        antispoof: AntiSpoof | None = None,
        vision: VisionSettings | None = None,
        quality: QualitySettings | None = None,
    ) -> None:
        self.detector = detector
        self.mesh = mesh
        self.embedder = embedder
        self.eyelids = eyelids
        self.antispoof = antispoof
        self.vision = vision or VisionSettings()
        self.gates = quality or QualitySettings()
        self.times = StageTimes()
        self._roi: Roi | None = None
        self._track_id = 0
        self._track_score = 0.0

    @classmethod
    def from_paths(
        cls,
        paths: dict[str, Path],
        *,
        vision: VisionSettings | None = None,
        quality: QualitySettings | None = None,
    ) -> FacePipeline:
        """Build from model files by role (detection, landmarks, embedding; iris and
        antispoof when given)."""
        vision = vision or VisionSettings()
        threads = vision.threads
        return cls(
            FaceDetector(
                Model(paths["detection"], threads=threads),
                min_score=vision.detection_min_score,
                iou=vision.detection_iou,
                grid=vision.detection_grid,
            ),
            FaceMesh(Model(paths["landmarks"], threads=threads)),
            FaceEmbedder(Model(paths["embedding"], threads=threads), flip=vision.flip_embedding),
            eyelids=EyeLids(Model(paths["iris"], threads=threads)) if "iris" in paths else None,
            antispoof=(
                AntiSpoof(Model(paths["antispoof"], threads=threads))
                if "antispoof" in paths
                else None
            ),
            vision=vision,
            quality=quality,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> FacePipeline:
        """Build from the verified models in the configured directory.

        Raises :class:`~kiosk.errors.ModelError` naming the file and the fixing
        command when a model is missing or does not verify.
        """
        from kiosk import supply  # models are verified here, not inside vision's compute

        artifacts = [
            a
            for a in supply.load_manifest(supply.default_manifest_path())
            if a.role in ("detection", "landmarks", "embedding", "iris")
            or (a.role == "antispoof" and settings.liveness.passive_threshold is not None)
        ]
        paths = supply.require(artifacts, settings.models_path, "kiosk models fetch")
        return cls.from_paths(paths, vision=settings.vision, quality=settings.quality)

    # --- stills ------------------------------------------------------------------------------

    def detect(self, frame: Any, *, grid: int | None = None) -> list[Detection]:
        """BlazeFace detections in ``frame``, best first (no landmarks).

        ``grid`` overrides the configured tiling (1: whole frame only).
        """
        image = as_bgr(frame)
        start = time.perf_counter()
        found = self.detector.detect(image, grid=grid)
        self.times.detect_s += time.perf_counter() - start
        self.times.detect_invoke_s += self.detector.last_invoke_s
        return found

    def observe(self, frame: Any, *, embed: bool = False) -> list[FaceObservation]:
        """Every face in ``frame`` with landmarks, pose and quality, largest first.

        Candidates the mesh does not confirm as faces (presence below the
        threshold) are dropped.
        """
        image = as_bgr(frame)
        digest = frame_digest(image)
        self.times = StageTimes()
        found = self.detect(image)
        out = []
        for det in found:
            obs = self._measure(image, roi_from_detection(det), det.score, 0, digest)
            if obs is not None:
                out.append(self.embed(obs) if embed else obs)
        out.sort(key=lambda o: -o.width)
        return out

    # --- streams -----------------------------------------------------------------------------

    def track(self, frame: Any, *, embed: bool = False) -> FaceObservation | None:
        """The tracked face in this frame of a stream, or None when there is none.

        Follows the current track while the mesh confirms it; otherwise detects
        again and starts a new track on the largest face.
        """
        image = as_bgr(frame)
        digest = frame_digest(image)
        self.times = StageTimes()
        obs = None
        if self._roi is not None:
            obs = self._measure(image, self._roi, self._track_score, self._track_id, digest)
        if obs is None:
            self._roi = None
            # The person at a kiosk is close: look at the whole frame first, and search the
            # tiles (faces further away) only when that finds nobody.
            obs = self._start_track(image, self.detect(image, grid=1), digest)
            if obs is None and (self.detector.grid or auto_grid(*image.shape[:2])) > 1:
                obs = self._start_track(image, self.detect(image), digest)
        if obs is None:
            return None
        self._roi = roi_from_landmarks(obs.landmarks)
        return self.embed(obs) if embed else obs

    def reset(self) -> None:
        """Forget the current track (the next frame detects afresh)."""
        self._roi = None

    # --- embedding ---------------------------------------------------------------------------

    def embed(self, obs: FaceObservation) -> FaceObservation:
        """``obs`` with its embedding computed from its aligned face."""
        start = time.perf_counter()
        vector = self.embedder.embed(obs.aligned)
        self.times.embed_s = time.perf_counter() - start
        self.times.embed_invoke_s = self.embedder.model.last_invoke_s
        return replace(obs, embedding=vector)

    def embedding_of(self, frame: Any) -> FloatArray | None:
        """The embedding of the largest face in a still frame, or None when there is no face."""
        faces = self.observe(frame)
        return self.embed(faces[0]).embedding if faces else None

    # --- internals ---------------------------------------------------------------------------

    def _start_track(
        self, image: npt.NDArray[np.uint8], found: list[Detection], digest: bytes
    ) -> FaceObservation | None:
        """A new track on the largest detection the mesh confirms, if any."""
        for det in sorted(found, key=lambda d: -d.width):
            obs = self._measure(
                image, roi_from_detection(det), det.score, self._track_id + 1, digest
            )
            if obs is not None:
                self._track_id += 1
                self._track_score = det.score
                return obs
        return None

    def _measure(
        self, image: npt.NDArray[np.uint8], roi: Roi, score: float, track_id: int, digest: bytes
    ) -> FaceObservation | None:
        start = time.perf_counter()
        landmarks, presence = self.mesh.landmarks(image, roi)
        self.times.mesh_s += time.perf_counter() - start
        self.times.mesh_invoke_s += self.mesh.model.last_invoke_s
        if presence < self.vision.mesh_min_presence:
            return None
        start = time.perf_counter()
        aligned = align(image, measures.five_points(landmarks))
        self.times.align_s += time.perf_counter() - start
        xs, ys = landmarks[:, 0], landmarks[:, 1]
        box = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
        pose = measures.head_pose(landmarks)
        keypoints = measures.five_points(landmarks)
        eyes = measures.eyes_and_mouth(landmarks)
        if self.eyelids is not None:
            start = time.perf_counter()
            right, left = self.eyelids.openness(image, landmarks)
            self.times.eyes_s += time.perf_counter() - start
            eyes = replace(eyes, ear_right=right, ear_left=left)
        obs = FaceObservation(
            frame_digest=digest,
            box=box,
            score=score,
            keypoints=keypoints,
            landmarks=landmarks,
            presence=presence,
            pose=pose,
            eyes=eyes,
            quality=assess(box, image.shape, aligned, pose, self.gates),
            track_id=track_id,
            roi=roi,
            aligned=aligned,
        )
        if self.antispoof is not None:
            obs = replace(obs, spoof_score=self.antispoof.score(image, obs))
        return obs
