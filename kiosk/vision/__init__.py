"""Pure compute on numpy frames: detection, landmarks, measures, alignment, embedding.

This package loads model files and nothing else: no camera, no storage, no
network. Frames are H×W×3 uint8 BGR arrays as OpenCV delivers them.
"""

from kiosk.vision.pipeline import FacePipeline
from kiosk.vision.types import Detection, FaceObservation, Pose, Quality, QualityIssue

__all__ = ["Detection", "FaceObservation", "FacePipeline", "Pose", "Quality", "QualityIssue"]
