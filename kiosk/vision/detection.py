"""BlazeFace short-range detection (128×128): letterbox, anchors, decoding, weighted NMS.

The model's anchors follow MediaPipe's SSD anchor options for this model:
4 layers with strides 8, 16, 16, 16, two anchors per cell and per layer, fixed
anchor size — 16×16×2 + 8×8×6 = 896 anchors. Raw outputs are decoded in the
128-pixel input space and mapped back through the letterbox to frame pixels,
so any frame size works.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from kiosk.vision.frames import u8
from kiosk.vision.runtime import FloatArray, Model
from kiosk.vision.types import Detection

INPUT_SIZE = 128
_NUM_KEYPOINTS = 6


def ssd_anchors(size: int = INPUT_SIZE, strides: tuple[int, ...] = (8, 16, 16, 16)) -> FloatArray:
    """Anchor centres (N, 2) in [0, 1], in the order the model emits its candidates."""
    centres: list[tuple[float, float]] = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        repeats = 0
        # Consecutive layers with the same stride share one grid.
        while layer < len(strides) and strides[layer] == stride:
            repeats += 2  # one aspect-ratio-1 anchor and one interpolated-scale anchor
            layer += 1
        cells = int(np.ceil(size / stride))
        for y in range(cells):
            for x in range(cells):
                centres.extend([((x + 0.5) / cells, (y + 0.5) / cells)] * repeats)
    return np.asarray(centres, dtype=np.float32)


class Letterbox:
    """Scale a frame into a square keeping its aspect ratio; map points back."""

    def __init__(self, height: int, width: int, size: int) -> None:
        self.scale = size / max(height, width)
        self.pad_x = (size - width * self.scale) / 2.0
        self.pad_y = (size - height * self.scale) / 2.0
        self.size = size

    def apply(self, frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        matrix = np.array(
            [[self.scale, 0.0, self.pad_x], [0.0, self.scale, self.pad_y]], dtype=np.float64
        )
        interp = cv2.INTER_AREA if self.scale < 1.0 else cv2.INTER_LINEAR
        return u8(
            cv2.warpAffine(
                frame,
                matrix,
                (self.size, self.size),
                flags=interp,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=(0, 0, 0),
            )
        )

    def unmap(self, points: FloatArray) -> FloatArray:
        """Points in letterboxed pixels → frame pixels."""
        out = np.empty_like(points)
        out[..., 0] = (points[..., 0] - self.pad_x) / self.scale
        out[..., 1] = (points[..., 1] - self.pad_y) / self.scale
        return out


def _iou(box: FloatArray, boxes: FloatArray) -> FloatArray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


def weighted_nms(
    boxes: FloatArray, keypoints: FloatArray, scores: FloatArray, iou_threshold: float
) -> list[tuple[FloatArray, FloatArray, float]]:
    """MediaPipe's weighted NMS: overlapping candidates are blended, weighted by score.

    ``boxes`` (N, 4) as x0, y0, x1, y1; ``keypoints`` (N, K, 2). The kept score is
    the best candidate's; the box and keypoints are the score-weighted mean of
    every candidate overlapping it by more than ``iou_threshold``.
    """
    order = np.argsort(-scores)
    remaining = order
    kept: list[tuple[FloatArray, FloatArray, float]] = []
    while remaining.size:
        best = remaining[0]
        overlap = _iou(boxes[best], boxes[remaining])
        group = remaining[overlap > iou_threshold]
        weights = scores[group][:, None]
        total = float(weights.sum())
        box = (boxes[group] * weights).sum(axis=0) / total
        kps = (keypoints[group] * weights[:, :, None]).sum(axis=0) / total
        kept.append((box.astype(np.float32), kps.astype(np.float32), float(scores[best])))
        remaining = remaining[overlap <= iou_threshold]
    return kept


class FaceDetector:
    """Finds faces in a BGR frame of any size.

    The short-range model sees its input at 128×128, so a face smaller than about
    a tenth of the frame's long side is lost when the whole frame is shrunk. With
    ``grid`` > 1 (0: chosen by frame size) the detector also looks at ``grid``×``grid`` tiles
    (each 1.25/grid of the long side) and merges every candidate in one weighted
    NMS — a group photo then yields all its faces, at ``grid``² extra invokes of
    about a millisecond each.
    """

    def __init__(
        self, model: Model, *, min_score: float = 0.6, iou: float = 0.3, grid: int = 0
    ) -> None:
        if model.input_shape != (1, INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"detector expects a 1×128×128×3 model, got {model.input_shape}")
        self.model = model
        self.min_score = min_score
        self.iou = iou
        self.grid = grid
        self._anchors = ssd_anchors()
        #: Seconds inside the model's ``invoke()`` during the last :meth:`detect`.
        self.last_invoke_s = 0.0

    def detect(self, frame: npt.NDArray[np.uint8], *, grid: int | None = None) -> list[Detection]:
        """Faces in ``frame`` (H×W×3 BGR uint8), best score first.

        ``grid`` overrides the configured tiling for this call (1: whole frame only).
        """
        height, width = frame.shape[:2]
        self.last_invoke_s = 0.0
        parts = [self._candidates(frame, 0, 0)]
        grid = grid or self.grid or auto_grid(height, width)
        for x, y, side in tiles(height, width, grid):
            parts.append(self._candidates(frame[y : y + side, x : x + side], x, y))
        boxes = np.concatenate([p[0] for p in parts])
        kps = np.concatenate([p[1] for p in parts])
        scores = np.concatenate([p[2] for p in parts])
        out: list[Detection] = []
        for b, k, s in weighted_nms(boxes, kps, scores, self.iou):
            x0, y0, x1, y1 = (float(v) for v in b)
            if x1 - x0 < 2 or y1 - y0 < 2 or x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
                continue
            # Not clipped: a face partly outside the frame keeps its true extent.
            out.append(Detection(box=(x0, y0, x1, y1), score=s, keypoints=k))
        return out

    def _candidates(
        self, image: npt.NDArray[np.uint8], off_x: int, off_y: int
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Decoded candidates above the score threshold, in frame pixels (before NMS)."""
        height, width = image.shape[:2]
        box = Letterbox(height, width, INPUT_SIZE)
        rgb = cv2.cvtColor(box.apply(image), cv2.COLOR_BGR2RGB)
        tensor = (rgb.astype(np.float32) / 127.5 - 1.0)[None]
        raw_boxes, raw_scores = self.model.run(tensor)
        self.last_invoke_s += self.model.last_invoke_s
        scores = _sigmoid(raw_scores[0, :, 0])
        mask = scores >= self.min_score
        raw = raw_boxes[0][mask]
        anchors = self._anchors[mask] * INPUT_SIZE
        centre = raw[:, 0:2] + anchors
        half = raw[:, 2:4] / 2.0
        corners = box.unmap(np.stack([centre - half, centre + half], axis=1)).reshape(-1, 4)
        kps = box.unmap(
            raw[:, 4 : 4 + 2 * _NUM_KEYPOINTS].reshape(-1, _NUM_KEYPOINTS, 2) + anchors[:, None]
        )
        offset = np.array([off_x, off_y], dtype=np.float32)
        corners = corners + np.tile(offset, 2)
        kps = kps + offset
        return corners, kps, scores[mask]


def _sigmoid(logits: FloatArray) -> FloatArray:
    clipped = np.clip(logits.astype(np.float64), -100.0, 100.0)
    return (1.0 / (1.0 + np.exp(-clipped))).astype(np.float32)


def auto_grid(height: int, width: int) -> int:
    """Tile rows for a frame: one per 480 px of its long side, 1 to 4."""
    return int(min(4, max(1, np.ceil(max(height, width) / 480))))


def tiles(height: int, width: int, grid: int) -> list[tuple[int, int, int]]:
    """Overlapping square tiles (x, y, side) covering the frame on a ``grid``×``grid`` layout."""
    if grid <= 1:
        return []
    side = min(int(np.ceil(1.25 * max(height, width) / grid)), max(height, width))
    xs = np.linspace(0, max(width - side, 0), grid).round().astype(int) if width > side else [0]
    ys = np.linspace(0, max(height - side, 0), grid).round().astype(int) if height > side else [0]
    return [(int(x), int(y), side) for y in ys for x in xs]
