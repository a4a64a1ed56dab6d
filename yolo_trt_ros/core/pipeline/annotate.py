"""Draw detections on a BGR image (for `--save` and the node's annotated topic): boxes or
rotated boxes, translucent masks, keypoints and their skeleton."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from yolo_trt_ros.core.image.buffers import ImageView, to_bgr
from yolo_trt_ros.core.pipeline.obb import corners
from yolo_trt_ros.core.pipeline.results import Detections


def _colour(class_id: int) -> tuple[int, int, int]:
    # A fixed, well-spread colour per class (golden-ratio hue steps).
    hue = int((class_id * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 220, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw(bgr: np.ndarray, det: Detections, label: Callable[[int], str],
         skeleton: Sequence[tuple[int, int]] = ()) -> np.ndarray:
    """bgr: (H, W, 3) uint8, drawn on in place and returned. Tracked detections are
    labelled with their id (#7) and coloured by it, so an object keeps its colour.
    Oriented boxes are drawn rotated, masks translucent, keypoints as dots joined by the
    skeleton's limbs (pairs of keypoint indices)."""
    thickness = max(1, round(min(bgr.shape[:2]) / 300))
    ids = det.track_ids.tolist() if det.track_ids is not None else [None] * len(det)
    colours = [_colour(int(cid) if tid is None else tid)
               for cid, tid in zip(det.class_ids.tolist(), ids, strict=True)]
    if det.masks is not None and len(det):
        _draw_masks(bgr, det.masks.label_image(), colours)
    outlines = None if det.rboxes is None else corners(det.rboxes)
    for i, ((x1, y1, x2, y2), score, cid, tid) in enumerate(zip(
            det.boxes, det.scores, det.class_ids, ids, strict=True)):
        colour = colours[i]
        p1 = (int(x1), int(y1))
        if outlines is None:
            cv2.rectangle(bgr, p1, (int(x2), int(y2)), colour, thickness, cv2.LINE_AA)
        else:
            cv2.polylines(bgr, [np.round(outlines[i]).astype(np.int32)], True, colour,
                          thickness, cv2.LINE_AA)
        if det.keypoints is not None:
            _draw_keypoints(bgr, det.keypoints[i], skeleton, colour, thickness)
        text = f'{label(int(cid))} {score:.2f}' if tid is None else \
            f'#{tid} {label(int(cid))} {score:.2f}'
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        top = max(p1[1] - th - base - 2, 0)
        cv2.rectangle(bgr, (p1[0], top), (p1[0] + tw + 2, top + th + base + 2), colour, -1)
        cv2.putText(bgr, text, (p1[0] + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return bgr


MASK_ALPHA = 0.45  # the image shows through a mask
KEYPOINT_MIN_SCORE = 0.5  # keypoints less certain than this are not drawn (as Ultralytics)


def _draw_masks(bgr: np.ndarray, label: np.ndarray, colours: list) -> None:
    """Blend each detection's colour into its pixels of the label image."""
    if label.shape != bgr.shape[:2]:  # a scaled-down drawing
        label = cv2.resize(label, (bgr.shape[1], bgr.shape[0]),
                           interpolation=cv2.INTER_NEAREST)
    hit = label > 0
    if not hit.any():
        return
    lut = np.array([(0, 0, 0), *colours], np.float32)
    mixed = bgr[hit] * (1 - MASK_ALPHA) + lut[label[hit]] * MASK_ALPHA
    bgr[hit] = mixed.astype(np.uint8)


def _draw_keypoints(bgr: np.ndarray, points: np.ndarray, skeleton, colour,
                    thickness: int) -> None:
    """points: (K, 3) x y score of one detection."""
    shown = points[:, 2] >= KEYPOINT_MIN_SCORE
    for a, b in skeleton:
        if a < len(points) and b < len(points) and shown[a] and shown[b]:
            cv2.line(bgr, (int(points[a, 0]), int(points[a, 1])),
                     (int(points[b, 0]), int(points[b, 1])), colour, thickness, cv2.LINE_AA)
    radius = thickness + 2
    for x, y, _ in points[shown]:
        cv2.circle(bgr, (int(x), int(y)), radius, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(bgr, (int(x), int(y)), radius, colour, 1, cv2.LINE_AA)


# The annotated topic is for people and rviz: a few megapixels are plenty, and a 64 MP frame
# drawn at full size would be a 192 MB message.
ANNOTATED_MAX_PIXELS = 4_000_000


def annotated(image: ImageView, det: Detections, label: Callable[[int], str],
              max_pixels: int = ANNOTATED_MAX_PIXELS,
              skeleton: Sequence[tuple[int, int]] = ()) -> np.ndarray:
    """A BGR copy of image, scaled down to at most max_pixels, with det drawn on it."""
    bgr = to_bgr(image)
    h, w = bgr.shape[:2]
    if h * w <= max_pixels:
        return draw(bgr, det, label, skeleton)
    scale = (max_pixels / (h * w)) ** 0.5
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    small = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    return draw(small, det.scaled(size[0] / w, size[1] / h), label, skeleton)
