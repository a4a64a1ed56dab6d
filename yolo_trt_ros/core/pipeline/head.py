"""What a model's outputs hold beyond boxes and scores (core/pipeline/tasks.py reads it
from a model): the task, its extra values per candidate, keypoint and prototype shapes."""
from __future__ import annotations

from dataclasses import dataclass

TASKS = ('detect', 'obb', 'segment', 'pose')
# The keypoint layout of COCO (17 x 3): names in index order, and the limbs drawn between
# them (pairs of indices), as the COCO keypoint annotations define them.
COCO_KEYPOINTS = ('nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder',
                  'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist',
                  'left_hip', 'right_hip', 'left_knee', 'right_knee', 'left_ankle',
                  'right_ankle')
COCO_SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
                 (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4),
                 (3, 5), (4, 6))


@dataclass(frozen=True)
class Head:
    """What a model's outputs hold beyond boxes and scores.

    fmt: the box layout (decode.FORMATS); extras: values per candidate after the class
    scores (yolov8) or after score and class (end2end): the angle, the mask coefficients
    or the keypoints; kpt_shape: (K, D); mask_dim: M; proto_output: which output holds
    the prototypes; proto_stride: model-input pixels per prototype pixel; box_output: which
    output holds the boxes."""

    task: str = 'detect'
    fmt: str = 'yolov8'
    extras: int = 0
    kpt_shape: tuple[int, int] | None = None
    mask_dim: int = 0
    proto_output: int | None = None
    proto_stride: float = 4.0
    box_output: int = 0

    @property
    def keypoint_names(self) -> tuple[str, ...]:
        k = self.kpt_shape[0] if self.kpt_shape else 0
        return COCO_KEYPOINTS if self.kpt_shape == (17, 3) else tuple(map(str, range(k)))

    @property
    def skeleton(self) -> tuple[tuple[int, int], ...]:
        return COCO_SKELETON if self.kpt_shape == (17, 3) else ()


DETECT = Head()
