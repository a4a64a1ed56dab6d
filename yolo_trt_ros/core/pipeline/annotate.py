"""Draw detections on a BGR image (for `--save` and the node's annotated topic)."""
from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from yolo_trt_ros.core.image.buffers import ImageView, to_bgr
from yolo_trt_ros.core.pipeline.results import Detections


def _colour(class_id: int) -> tuple[int, int, int]:
    # A fixed, well-spread colour per class (golden-ratio hue steps).
    hue = int((class_id * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 220, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw(bgr: np.ndarray, det: Detections, label: Callable[[int], str]) -> np.ndarray:
    """bgr: (H, W, 3) uint8, drawn on in place and returned. Tracked detections are
    labelled with their id (#7) and coloured by it, so an object keeps its colour."""
    thickness = max(1, round(min(bgr.shape[:2]) / 300))
    ids = det.track_ids.tolist() if det.track_ids is not None else [None] * len(det)
    for (x1, y1, x2, y2), score, cid, tid in zip(det.boxes, det.scores, det.class_ids, ids,
                                                 strict=True):
        colour = _colour(int(cid) if tid is None else tid)
        p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
        cv2.rectangle(bgr, p1, p2, colour, thickness, cv2.LINE_AA)
        text = f'{label(int(cid))} {score:.2f}' if tid is None else \
            f'#{tid} {label(int(cid))} {score:.2f}'
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        top = max(p1[1] - th - base - 2, 0)
        cv2.rectangle(bgr, (p1[0], top), (p1[0] + tw + 2, top + th + base + 2), colour, -1)
        cv2.putText(bgr, text, (p1[0] + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return bgr


# The annotated topic is for people and rviz: a few megapixels are plenty, and a 64 MP frame
# drawn at full size would be a 192 MB message.
ANNOTATED_MAX_PIXELS = 4_000_000


def annotated(image: ImageView, det: Detections, label: Callable[[int], str],
              max_pixels: int = ANNOTATED_MAX_PIXELS) -> np.ndarray:
    """A BGR copy of image, scaled down to at most max_pixels, with det drawn on it."""
    bgr = to_bgr(image)
    h, w = bgr.shape[:2]
    if h * w <= max_pixels:
        return draw(bgr, det, label)
    scale = (max_pixels / (h * w)) ** 0.5
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    small = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    boxes = det.boxes * np.array([size[0] / w, size[1] / h] * 2, np.float32)
    return draw(small, Detections(boxes, det.scores, det.class_ids, det.track_ids), label)
