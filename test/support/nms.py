"""Greedy NMS as its definition says, for checking ours against."""
from __future__ import annotations

from support.truth import iou


def brute_force(boxes, scores, classes, thr, max_det):
    """The definition, spelled out: walk boxes by falling score; keep one unless a kept
    box of the same class overlaps it by more than thr."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        if all(iou(boxes[i], boxes[k]) <= thr for k in kept
               if classes is None or classes[k] == classes[i]):
            kept.append(i)
    return kept[:max_det]
