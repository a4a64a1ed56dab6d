"""What the pipeline produces per image, and the settings that decide it."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from yolo_trt_ros.core.defaults import CONF_THRESHOLD, IOU_THRESHOLD, MAX_DETECTIONS
from yolo_trt_ros.core.pipeline.masks import InstanceMasks, rle


@dataclass(frozen=True)
class Detections:
    """boxes: (N, 4) float32 xyxy, original-image pixels; scores: (N,) float32;
    class_ids: (N,) int32. Sorted by score, best first (tracked: in the order of the
    detections they came from). track_ids: (N,) int64 from a tracker, or None.

    What the other heads add (None for a detection model):
      rboxes: (N, 5) float32 oriented boxes cx cy w h angle (radians, [0, pi/2)),
        original pixels; `boxes` then holds each one's axis-aligned enclosing box;
      keypoints: (N, K, 3) float32 x y score, original pixels (score 1 where the model
        gives none);
      masks: each detection's instance mask at the source resolution (InstanceMasks).
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    track_ids: np.ndarray | None = None
    rboxes: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    masks: InstanceMasks | None = None

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    def take(self, index: np.ndarray, track_ids: np.ndarray | None = None) -> Detections:
        """The detections at index (in that order), every field along; track_ids given
        replace the current ones."""
        index = np.asarray(index, np.intp)
        return Detections(
            self.boxes[index], self.scores[index], self.class_ids[index],
            track_ids if track_ids is not None else
            None if self.track_ids is None else self.track_ids[index],
            None if self.rboxes is None else self.rboxes[index],
            None if self.keypoints is None else self.keypoints[index],
            None if self.masks is None else self.masks.take(index))

    def scaled(self, sx: float, sy: float) -> Detections:
        """The detections drawn on an image scaled by (sx, sy): boxes, oriented boxes
        and keypoints scaled (masks stay: drawing scales them itself)."""
        boxes = self.boxes * np.array([sx, sy, sx, sy], np.float32)
        rboxes = keypoints = None
        if self.rboxes is not None:  # the drawing scale keeps the aspect ratio (sx ~ sy)
            rboxes = self.rboxes * np.array([sx, sy, sx, sy, 1], np.float32)
        if self.keypoints is not None:
            keypoints = self.keypoints * np.array([sx, sy, 1], np.float32)
        return replace(self, boxes=boxes, rboxes=rboxes, keypoints=keypoints)


@dataclass(frozen=True)
class PostprocessConfig:
    conf_threshold: float = CONF_THRESHOLD
    iou_threshold: float = IOU_THRESHOLD
    max_detections: int = MAX_DETECTIONS
    classes: tuple[int, ...] | None = None  # keep only these class ids; None keeps all
    agnostic: bool = False  # class-agnostic NMS

    def __post_init__(self) -> None:
        if not 0.0 <= self.conf_threshold <= 1.0:
            raise ValueError(f'conf_threshold must be in [0, 1], got {self.conf_threshold}')
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise ValueError(f'iou_threshold must be in [0, 1], got {self.iou_threshold}')
        if self.max_detections < 1:
            raise ValueError(f'max_detections must be at least 1, got {self.max_detections}')


def detections_to_dicts(det: Detections, label: Callable[[int], str]) -> list[dict]:
    """JSON-ready detections: class_id, label, score, bbox_xyxy (original pixels), and
    track_id where a tracker gave one; per head: "angle" (radians) and "rbox_xywhr",
    "keypoints" [[x, y, score], ...], "mask" as COCO uncompressed RLE."""
    out = [{'class_id': int(c), 'label': label(int(c)), 'score': round(float(s), 4),
            'bbox_xyxy': [round(float(v), 1) for v in b]}
           for b, s, c in zip(det.boxes, det.scores, det.class_ids, strict=True)]
    if det.track_ids is not None:
        for entry, track_id in zip(out, det.track_ids.tolist(), strict=True):
            entry['track_id'] = track_id
    if det.rboxes is not None:
        for entry, (x, y, w, h, angle) in zip(out, det.rboxes.tolist(), strict=True):
            entry['angle'] = round(angle, 6)
            entry['rbox_xywhr'] = [round(x, 1), round(y, 1), round(w, 1), round(h, 1),
                                   round(angle, 6)]
    if det.keypoints is not None:
        for entry, points in zip(out, det.keypoints.tolist(), strict=True):
            entry['keypoints'] = [[round(x, 1), round(y, 1), round(s, 4)] for x, y, s in points]
    if det.masks is not None:
        for i, entry in enumerate(out):
            entry['mask'] = rle(det.masks.full(i))
    return out
