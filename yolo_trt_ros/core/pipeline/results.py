"""What the pipeline produces per image, and the settings that decide it."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from yolo_trt_ros.core.defaults import CONF_THRESHOLD, IOU_THRESHOLD, MAX_DETECTIONS


@dataclass(frozen=True)
class Detections:
    """boxes: (N, 4) float32 xyxy, original-image pixels; scores: (N,) float32;
    class_ids: (N,) int32. Sorted by score, best first (tracked: in the order of the
    detections they came from). track_ids: (N,) int64 from a tracker, or None."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    track_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))


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
    track_id where a tracker gave one."""
    out = [{'class_id': int(c), 'label': label(int(c)), 'score': round(float(s), 4),
            'bbox_xyxy': [round(float(v), 1) for v in b]}
           for b, s, c in zip(det.boxes, det.scores, det.class_ids, strict=True)]
    if det.track_ids is not None:
        for entry, track_id in zip(out, det.track_ids.tolist(), strict=True):
            entry['track_id'] = track_id
    return out
