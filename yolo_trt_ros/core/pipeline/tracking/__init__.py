"""Multi-object tracking after NMS (ByteTrack, BoT-SORT), one tracker per camera.

DetectionTracker is what the CLI and the node both run, so the same frames give the same
ids either way: detections (down to track_low_thresh) and the frame in, the detections on
confirmed tracks with their ids out.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from yolo_trt_ros.core.pipeline.results import Detections
from yolo_trt_ros.core.pipeline.tracking.bytetrack import (
    GMC_METHODS,
    TRACKERS,
    Tracker,
    TrackerConfig,
)
from yolo_trt_ros.core.pipeline.tracking.cmc import SparseFlowCMC, grey_for_cmc

__all__ = ['GMC_METHODS', 'TRACKERS', 'DetectionTracker', 'TrackerConfig', 'detection_floor']


def detection_floor(conf_threshold: float, config: TrackerConfig | None) -> float:
    """The confidence the detector must keep for the tracker: ByteTrack's second stage
    works on the detections between track_low_thresh and track_high_thresh, which a higher
    conf_threshold would have dropped already."""
    return conf_threshold if config is None else min(conf_threshold, config.track_low_thresh)


class DetectionTracker:
    """One camera's tracker. ids: the camera's id source (it outlives reset())."""

    def __init__(self, config: TrackerConfig, ids: Iterator[int] | None = None) -> None:
        self.config = config
        self.tracker = Tracker(config, ids)
        self.cmc = SparseFlowCMC() if config.kind == 'botsort' and \
            config.gmc_method == 'sparseOptFlow' else None

    @property
    def needs_frame(self) -> bool:
        """Whether update() wants the frame (camera-motion compensation)."""
        return self.cmc is not None

    def reset(self) -> None:
        self.tracker.reset()
        if self.cmc is not None:
            self.cmc.reset()

    def update(self, det: Detections, grey: tuple[np.ndarray, float] | None = None
               ) -> Detections:
        """det: one frame's detections; grey: (small grey frame, scale) from grey_for_cmc
        for BoT-SORT's motion compensation (None: no compensation this frame). Returns the
        detections on confirmed tracks, in the order of det, with track_ids."""
        affine = None
        if self.cmc is not None and grey is not None:
            affine = self.cmc.estimate(*grey)
        out = self.tracker.update(det.boxes, det.scores, affine)
        return det.take(out.index, out.ids)  # masks, keypoints, angles along

    @staticmethod
    def grey(pixels: np.ndarray, order: str) -> tuple[np.ndarray, float]:
        return grey_for_cmc(pixels, order)
