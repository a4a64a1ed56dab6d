"""Association costs between tracks and detections, and the assignment that minimises them.

The assignment is SciPy's `linear_sum_assignment` (a maintained solver of the linear
assignment problem); pairs whose cost is above the threshold are refused afterwards, so a
far-away detection never takes a track even when nothing better is left for it.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

_solver: Callable | None = None


def _linear_sum_assignment() -> Callable:
    """SciPy's solver, imported on first use (0.5 s: only where a tracker runs). A
    function-level `from scipy.optimize import ...` would cost 0.2 ms on every call."""
    global _solver
    if _solver is None:
        from scipy.optimize import linear_sum_assignment
        _solver = linear_sum_assignment
    return _solver


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a: (N, 4), b: (M, 4) xyxy -> (N, M) float64 intersection over union."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    iw = np.minimum.outer(a[:, 2], b[:, 2]) - np.maximum.outer(a[:, 0], b[:, 0])
    ih = np.minimum.outer(a[:, 3], b[:, 3]) - np.maximum.outer(a[:, 1], b[:, 1])
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b - inter, 1e-9)


def iou_cost(tracks: np.ndarray, dets: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
    """1 - IoU; with scores (fuse_score), 1 - IoU x detection score, so that among
    overlapping detections the confident one wins the track."""
    iou = iou_matrix(tracks, dets)
    if scores is not None:
        iou = iou * np.asarray(scores, np.float64)[None, :]
    return 1.0 - iou


def assign(cost: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-cost pairs of rows (tracks) and columns (detections), each cost at most
    threshold. Returns (pairs (K, 2) int, unmatched rows, unmatched columns)."""
    rows, cols = cost.shape
    if rows == 0 or cols == 0:
        return np.zeros((0, 2), np.intp), np.arange(rows), np.arange(cols)
    r, c = _linear_sum_assignment()(cost)
    keep = cost[r, c] <= threshold
    r, c = r[keep], c[keep]
    free_r = np.ones(rows, bool)
    free_r[r] = False
    free_c = np.ones(cols, bool)
    free_c[c] = False
    return np.stack([r, c], axis=1), np.flatnonzero(free_r), np.flatnonzero(free_c)
