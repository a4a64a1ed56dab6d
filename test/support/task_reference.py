"""An independent numpy reference of YOLO's obb, segment and pose decoding, written from the
math Ultralytics documents (not from its code, and not sharing ours): plain loops and
matrices where the package vectorises, so a shared mistake is unlikely.

- obb: boxes as Gaussians N((cx, cy), R diag(w^2/12, h^2/12) R^T); probabilistic IoU =
  1 - Hellinger distance, from the Bhattacharyya distance B = 1/8 d^T S^-1 d +
  1/2 ln(det S / sqrt(det S1 det S2)), S = (S1 + S2) / 2, clamped to [1e-7, 100]; NMS
  drops a box whose IoU with any higher-scored box of its class (suppressed or not) is
  the threshold or more; angles then brought into [0, pi/2) by swapping the sides.
- segment: mask = sigmoid(coefficients @ prototypes) > 0.5, the prototypes' image band
  (the letterbox padding cropped) resized bilinearly to the source image, cropped to the
  box (pixel c inside when x1 <= c < x2).
- pose: keypoints mapped back through the letterbox, clipped to the image.
"""
from __future__ import annotations

import math

import cv2
import numpy as np


def gaussian(box) -> tuple[np.ndarray, np.ndarray]:
    cx, cy, w, h, angle = (float(v) for v in box)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return np.array([cx, cy]), rot @ np.diag([w * w / 12, h * h / 12]) @ rot.T


def probiou(a, b) -> float:
    mu1, s1 = gaussian(a)
    mu2, s2 = gaussian(b)
    s = (s1 + s2) / 2
    d = mu1 - mu2
    dist = d @ np.linalg.inv(s) @ d / 8 + 0.5 * math.log(
        np.linalg.det(s) / math.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    dist = min(max(dist, 1e-7), 100.0)
    return 1 - math.sqrt(1 - math.exp(-dist) + 1e-7)


def candidates(output: np.ndarray, classes: int, conf: float):
    """yolov8-layout output (4+C+E, A) -> list of (score, class, anchor) above conf."""
    found = []
    for a in range(output.shape[1]):
        scores = output[4:4 + classes, a]
        c = int(np.argmax(scores))
        if scores[c] > conf:
            found.append((float(scores[c]), c, a))
    return found


def obb_decode(output, classes: int, conf: float, iou: float, box):
    """-> list of (score, class, (cx, cy, w, h, angle) in source pixels), best first."""
    found = sorted(candidates(output, classes, conf), key=lambda f: -f[0])
    rboxes = [output[[0, 1, 2, 3, -1], a].astype(np.float64) for _, _, a in found]
    kept = []
    for j, (_, c, _) in enumerate(found):
        if all(found[i][1] != c or probiou(rboxes[i], rboxes[j]) < iou for i in range(j)):
            kept.append(j)
    out = []
    gain = min(box.scale_x, box.scale_y)
    for j in kept:
        cx, cy, w, h, angle = rboxes[j]
        if angle % math.pi >= math.pi / 2:
            w, h = h, w
        angle %= math.pi / 2
        out.append((found[j][0], found[j][1], ((cx - box.pad_x) / box.scale_x,
                                                (cy - box.pad_y) / box.scale_y,
                                                w / gain, h / gain, angle)))
    return out


def enclosing_box(rbox) -> tuple[float, float, float, float]:
    cx, cy, w, h, angle = rbox
    pts = []
    for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        dx, dy = sx * w / 2, sy * h / 2
        pts.append((cx + dx * math.cos(angle) - dy * math.sin(angle),
                    cy + dx * math.sin(angle) + dy * math.cos(angle)))
    xs, ys = zip(*pts, strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def masks(coefficients: np.ndarray, protos: np.ndarray, boxes: np.ndarray, box,
          stride: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """-> ((N, H, W) bool masks, (N, H, W) float32 logits) for N detections, boxes xyxy
    in source pixels. The letterbox band must be whole prototype pixels."""
    m, ph, pw = protos.shape
    logits = (coefficients.astype(np.float64) @ protos.reshape(m, -1).astype(np.float64))
    logits = logits.reshape(-1, ph, pw).astype(np.float32)
    top, left = box.pad_y / stride, box.pad_x / stride
    rows, cols = box.new_height / stride, box.new_width / stride
    assert top == int(top) and left == int(left) and rows == int(rows) and cols == int(cols)
    band = logits[:, int(top):int(top + rows), int(left):int(left + cols)]
    height, width = box.src_height, box.src_width
    full = np.stack([cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR)
                     for plane in band]) if len(band) else np.zeros((0, height, width))
    c = np.arange(width)[None, :]
    r = np.arange(height)[:, None]
    out = np.zeros(full.shape, bool)
    for i, (x1, y1, x2, y2) in enumerate(boxes.astype(np.float64)):
        inside = (c >= x1) & (c < x2) & (r >= y1) & (r < y2)
        out[i] = inside & (1 / (1 + np.exp(-full[i].astype(np.float64))) > 0.5)
    return out, full


def keypoints(points: np.ndarray, box) -> np.ndarray:
    """(..., K, D) in model-input pixels -> (..., K, 2) source pixels, clipped."""
    x = np.clip((points[..., 0] - box.pad_x) / box.scale_x, 0, box.src_width)
    y = np.clip((points[..., 1] - box.pad_y) / box.scale_y, 0, box.src_height)
    return np.stack([x, y], axis=-1)


def rle_decode(rle: dict) -> np.ndarray:
    """COCO uncompressed RLE -> (H, W) bool, as pycocotools decodes it: alternating runs
    of 0 and 1 over the pixels in column-major order."""
    h, w = rle['size']
    flat = np.zeros(h * w, bool)
    at, value = 0, False
    for count in rle['counts']:
        flat[at:at + count] = value
        at, value = at + count, not value
    assert at == h * w
    return flat.reshape((h, w), order='F')
