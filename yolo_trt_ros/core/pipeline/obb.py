"""Oriented boxes: probabilistic IoU, rotated NMS, the angle convention, enclosing boxes.

Written from the math Ultralytics documents for its `obb` task:
- each box (cx, cy, w, h, angle) is a 2-D Gaussian with mean (cx, cy) and covariance
  R diag(w^2 / 12, h^2 / 12) R^T; two boxes' IoU is 1 - their Hellinger distance,
  sqrt(1 - exp(-B)), B the Bhattacharyya distance clamped to [1e-7, 100] (Llerena et al.,
  "Gaussian bounding boxes and probabilistic intersection-over-union", 2021);
- NMS keeps a box when its probabilistic IoU with every higher-scored box of its class,
  kept or not, is below the threshold (Ultralytics' rotated NMS compares with all of them);
- angles are regularised after NMS: taken modulo pi/2 into [0, pi/2), with width and
  height swapped where the angle modulo pi was at least pi/2 (the same rectangle).
"""
from __future__ import annotations

import math

import numpy as np

from yolo_trt_ros.core.errors import OutputError

EPS = 1e-7
# An angle a head regresses is in [-pi/4, 3pi/4) (Ultralytics); anything beyond a few
# turns is a broken model or output, not a rotation.
MAX_ANGLE = 4 * math.pi
CHUNK = 1024  # rows of the pairwise IoU matrix computed at once (bounded memory)


def _covariance(rboxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 5) -> the Gaussians' (var_x, var_y, cov_xy), each (N,) float64."""
    w2, h2 = rboxes[:, 2] ** 2 / 12, rboxes[:, 3] ** 2 / 12
    cos, sin = np.cos(rboxes[:, 4]), np.sin(rboxes[:, 4])
    return (w2 * cos ** 2 + h2 * sin ** 2, w2 * sin ** 2 + h2 * cos ** 2,
            (w2 - h2) * cos * sin)


def probiou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a: (N, 5), b: (M, 5) cx cy w h angle -> (N, M) float64 probabilistic IoU."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ax, ay, axy = (v[:, None] for v in _covariance(a))
    bx, by, bxy = (v[None, :] for v in _covariance(b))
    sx, sy, sxy = ax + bx, ay + by, axy + bxy  # twice the mean covariance
    det = sx * sy - sxy ** 2
    dx = a[:, None, 0] - b[None, :, 0]
    dy = a[:, None, 1] - b[None, :, 1]
    # 1/8 d^T ((Sa + Sb)/2)^-1 d, and 1/2 ln(det((Sa + Sb)/2) / sqrt(det Sa det Sb))
    mahalanobis = 0.25 * (sy * dx ** 2 + sx * dy ** 2 - 2 * sxy * dx * dy) / (det + EPS)
    own = np.sqrt(np.clip(ax * ay - axy ** 2, 0, None) * np.clip(bx * by - bxy ** 2, 0, None))
    log_term = 0.5 * np.log(det / (4 * own + EPS) + EPS)
    bhattacharyya = np.clip(mahalanobis + log_term, EPS, 100.0)
    return 1 - np.sqrt(1 - np.exp(-bhattacharyya) + EPS)


def rotated_nms(rboxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray | None,
                iou_threshold: float, max_detections: int) -> np.ndarray:
    """Indices kept, best score first. rboxes: (N, 5) cx cy w h angle; class_ids None:
    class-agnostic. A box is dropped when its probabilistic IoU with any higher-scored
    box of its class is iou_threshold or more (suppressed boxes suppress too)."""
    order = np.argsort(-np.asarray(scores), kind='stable')
    boxes = np.asarray(rboxes, np.float64)[order]
    classes = None if class_ids is None else np.asarray(class_ids)[order]
    worst = np.zeros(len(order))  # each box's highest IoU with a better box of its class
    for start in range(0, len(order), CHUNK):
        rows = slice(start, start + CHUNK)
        iou = probiou(boxes[rows], boxes)
        better = np.arange(len(order))[None, :] > np.arange(start, start + iou.shape[0])[:, None]
        if classes is not None:
            better &= classes[rows, None] == classes[None, :]
        worst = np.maximum(worst, np.where(better, iou, 0).max(axis=0, initial=0))
    return order[worst < iou_threshold][:max_detections]


def regularize(rboxes: np.ndarray) -> np.ndarray:
    """(N, 5) -> the same rectangles with angles in [0, pi/2) (float32)."""
    out = np.asarray(rboxes, np.float32).copy()
    half_turn = np.mod(out[:, 4], np.float32(math.pi))
    swap = half_turn >= np.float32(math.pi / 2)
    out[swap, 2], out[swap, 3] = out[swap, 3], out[swap, 2].copy()
    out[:, 4] = np.mod(out[:, 4], np.float32(math.pi / 2))
    return out


def enclosing(rboxes: np.ndarray) -> np.ndarray:
    """(N, 5) -> (N, 4) float32 xyxy: each oriented box's axis-aligned enclosing box."""
    r = np.asarray(rboxes, np.float64)
    cos, sin = np.abs(np.cos(r[:, 4])), np.abs(np.sin(r[:, 4]))
    half_w = (r[:, 2] * cos + r[:, 3] * sin) / 2
    half_h = (r[:, 2] * sin + r[:, 3] * cos) / 2
    return np.stack([r[:, 0] - half_w, r[:, 1] - half_h, r[:, 0] + half_w,
                     r[:, 1] + half_h], axis=1).astype(np.float32)


def corners(rboxes: np.ndarray) -> np.ndarray:
    """(N, 5) -> (N, 4, 2) float32: each oriented box's corners, in order round it."""
    r = np.asarray(rboxes, np.float64)
    cos, sin = np.cos(r[:, 4]), np.sin(r[:, 4])
    ux, uy = r[:, 2] / 2 * cos, r[:, 2] / 2 * sin  # half the width along the angle
    vx, vy = -r[:, 3] / 2 * sin, r[:, 3] / 2 * cos  # half the height across it
    signs = np.array([(1, 1), (1, -1), (-1, -1), (-1, 1)])
    x = r[:, None, 0] + signs[None, :, 0] * ux[:, None] + signs[None, :, 1] * vx[:, None]
    y = r[:, None, 1] + signs[None, :, 0] * uy[:, None] + signs[None, :, 1] * vy[:, None]
    return np.stack([x, y], axis=2).astype(np.float32)


def check_angles(angles: np.ndarray) -> None:
    """OutputError where a kept box's angle is not finite or beyond any rotation a head
    regresses (|angle| > 4 pi)."""
    bad = ~np.isfinite(angles) | (np.abs(angles) > MAX_ANGLE)
    if bad.any():
        raise OutputError(f'the model gave an oriented box the angle {float(angles[bad][0])} '
                          f'rad (expected radians within +-{MAX_ANGLE:.1f}): frame refused')
