"""Instance masks of a segmentation model, at the source image's resolution (the CPU twin of
core/gpu/masks.py, which gives byte for byte the same masks).

Ultralytics' documented math (`retina_masks=True`): a detection's mask is
sigmoid(coefficients x prototypes), upsampled bilinearly to the source image, cropped to
the detection's box, thresholded at 0.5. sigmoid(v) > 0.5 exactly when v > 0, so the
logit is thresholded at 0 and no exp is taken. Upsampling goes straight from the
prototype map to each source pixel through the letterbox: source pixel (c, r) samples the
prototypes at ((c + 0.5) * scale_x + pad_x) / stride - 0.5 (and y alike), half-pixel
centres as a bilinear resize without aligned corners, clamped to the prototype rows and
columns that cover the image (the letterbox padding is never read). Where the padding and
the image band are whole prototype pixels (1920x1080 into 640x640: 35 rows of padding)
that is exactly Ultralytics' crop-the-padding-then-resize. A pixel c belongs to the box
when x1 <= c < x2 (y alike), as Ultralytics crops.

Only each box's pixels are computed: a detection's mask is stored as its box's region
(InstanceMasks), not as a full frame. Every step is a float32 operation in a fixed
order (the dot product over the coefficients in index order, each product and sum
rounded, no fused multiply-add), so the GPU kernel can match it exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from yolo_trt_ros.core.errors import OutputError
from yolo_trt_ros.core.pipeline.preprocess import Letterbox

F32 = np.float32


@dataclass(frozen=True)
class MaskGeometry:
    """How source pixels map onto the prototype map: the image's letterbox, the stride
    (model input pixels per prototype pixel) and the prototype map's (height, width)."""

    box: Letterbox
    stride: float
    proto_hw: tuple[int, int]

    def band(self, axis: int) -> tuple[int, int]:
        """The first and last prototype row (axis 0) or column (axis 1) that covers the
        image rather than the letterbox padding."""
        pad, new = ((self.box.pad_y, self.box.new_height) if axis == 0 else
                    (self.box.pad_x, self.box.new_width))
        size = self.proto_hw[axis]
        lo = min(max(int(np.floor(pad / self.stride)), 0), size - 1)
        hi = min(max(int(np.ceil((pad + new) / self.stride)) - 1, lo), size - 1)
        return lo, hi

    def samples(self, axis: int, start: int, stop: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For source pixels start..stop-1 along axis: the two prototype indices each
        samples between ((n,) intp) and the weight of the second ((n,) float32)."""
        scale, pad = ((self.box.scale_y, self.box.pad_y) if axis == 0 else
                      (self.box.scale_x, self.box.pad_x))
        lo, hi = self.band(axis)
        pixel = np.arange(start, stop, dtype=F32)
        coord = ((pixel + F32(0.5)) * F32(scale) + F32(pad)) / F32(self.stride) - F32(0.5)
        coord = np.minimum(np.maximum(coord, F32(lo)), F32(hi))
        first = np.floor(coord)
        weight = coord - first
        first = first.astype(np.intp)
        return first, np.minimum(first + 1, hi), weight


def mask_regions(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """boxes: (N, 4) float32 xyxy, source pixels -> (N, 4) int32 x0 y0 x1 y1, the pixels
    c with x1 <= c < x2 (y alike), within the image (x0 <= x1: possibly empty)."""
    boxes = np.asarray(boxes, F32).reshape(-1, 4)
    limits = np.array([width, height, width, height])
    start = np.clip(np.ceil(boxes[:, :2]), 0, limits[:2])
    stop = np.maximum(np.clip(np.ceil(boxes[:, 2:]), 0, limits[2:]), start)
    return np.concatenate([start, stop], axis=1).astype(np.int32)


class InstanceMasks:
    """N instance masks of a (height, width) image, each stored over its box's region.

    regions: (N, 4) int32 x0 y0 x1 y1 (mask_regions); data: (total,) uint8 0/1, the
    regions' masks row-major, back to back; starts: (N,) int64 where each begins in data.
    label: the label image of exactly these masks, where it was made already (the GPU
    makes it beside the masks)."""

    def __init__(self, height: int, width: int, regions: np.ndarray, data: np.ndarray,
                 starts: np.ndarray, label: np.ndarray | None = None) -> None:
        self.height, self.width = int(height), int(width)
        self.regions, self.data, self.starts = regions, data, starts
        self._label = label

    @classmethod
    def empty(cls, height: int, width: int) -> InstanceMasks:
        return cls(height, width, np.zeros((0, 4), np.int32), np.zeros(0, np.uint8),
                   np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.regions)

    def mask(self, i: int) -> np.ndarray:
        """(y1 - y0, x1 - x0) bool: mask i over its region (a view)."""
        x0, y0, x1, y1 = self.regions[i].tolist()
        n = (y1 - y0) * (x1 - x0)
        start = int(self.starts[i])
        return self.data[start:start + n].view(bool).reshape(y1 - y0, x1 - x0)

    def full(self, i: int) -> np.ndarray:
        """(height, width) bool: mask i over the whole image."""
        out = np.zeros((self.height, self.width), bool)
        x0, y0, x1, y1 = self.regions[i].tolist()
        out[y0:y1, x0:x1] = self.mask(i)
        return out

    def area(self) -> np.ndarray:
        """(N,) int64 pixels of each mask."""
        return np.array([int(np.count_nonzero(self.mask(i))) for i in range(len(self))],
                        np.int64)

    def take(self, index: np.ndarray) -> InstanceMasks:
        """The masks at index, in that order (the data is shared, not copied)."""
        index = np.asarray(index, np.intp)
        return InstanceMasks(self.height, self.width, self.regions[index], self.data,
                             self.starts[index])

    def label_image(self) -> np.ndarray:
        """(height, width) uint8 (uint16 for more than 254 masks): value i + 1 where mask
        i is set, 0 elsewhere; where masks overlap the lower index (the higher score) wins."""
        if self._label is not None:
            return self._label
        label = np.zeros((self.height, self.width), label_dtype(len(self)))
        for i in range(len(self) - 1, -1, -1):  # lower indices drawn last: they win
            x0, y0, x1, y1 = self.regions[i].tolist()
            np.copyto(label[y0:y1, x0:x1], i + 1, where=self.mask(i))
        return label


def label_dtype(n: int) -> np.dtype:
    """mono8 holds 254 instances and the background; mono16 beyond that."""
    return np.dtype(np.uint8 if n <= 254 else np.uint16)


NOT_FINITE = ('the model gave NaN mask values (NaN or infinite prototypes or coefficients): '
              'frame refused')


def check_finite(coefficients: np.ndarray, protos_finite: bool) -> None:
    """OutputError unless the kept detections' coefficients and the image's prototypes are
    all finite (the GPU path scans its prototypes on the device): a NaN in a prototype that
    no mask samples today still says the model's output cannot be trusted."""
    if not protos_finite or not np.isfinite(coefficients).all():
        raise OutputError(NOT_FINITE)


def assemble(coefficients: np.ndarray, protos: np.ndarray, boxes: np.ndarray,
             geometry: MaskGeometry) -> InstanceMasks:
    """The instance masks of N kept detections.

    coefficients: (N, M) float32; protos: (M, Hp, Wp) float32, one image's prototypes;
    boxes: (N, 4) float32 xyxy in source pixels. OutputError where a prototype or a kept
    detection's coefficient is NaN or infinite (check_finite), or a mask comes out NaN: the
    frame cannot be trusted."""
    box = geometry.box
    coefficients = np.asarray(coefficients, F32)
    if len(coefficients):
        check_finite(coefficients, bool(np.isfinite(protos).all()))
    regions = mask_regions(boxes, box.src_width, box.src_height)
    sizes = (regions[:, 2] - regions[:, 0]).astype(np.int64) * (regions[:, 3] - regions[:, 1])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    data = np.empty(int(sizes.sum()), np.uint8)
    for i, (x0, y0, x1, y1) in enumerate(regions.tolist()):
        if x1 == x0 or y1 == y0:
            continue
        r0, r1, wy = geometry.samples(0, y0, y1)
        c0, c1, wx = geometry.samples(1, x0, x1)
        top, left = int(r0.min()), int(c0.min())
        window = protos[:, top:int(r1.max()) + 1, left:int(c1.max()) + 1]
        logits = coefficients[i, 0] * window[0]
        for m in range(1, len(window)):  # index order, each step rounded: as the kernel
            logits = logits + coefficients[i, m] * window[m]
        across = (F32(1) - wx) * logits[:, c0 - left] + wx * logits[:, c1 - left]
        values = ((F32(1) - wy)[:, None] * across[r0 - top] +
                  wy[:, None] * across[r1 - top])
        if np.isnan(values).any():
            raise OutputError(NOT_FINITE)  # finite inputs whose sums overflowed
        data[starts[i]:starts[i] + sizes[i]] = (values > 0).reshape(-1)
    return InstanceMasks(box.src_height, box.src_width, regions, data, starts)


def rle(mask: np.ndarray) -> dict:
    """(H, W) bool -> COCO uncompressed RLE {"size": [H, W], "counts": [...]}: run
    lengths over the pixels in column-major order, starting with a run of zeros (0 where
    the first pixel is set), as pycocotools reads it."""
    flat = np.asarray(mask, bool).reshape(-1, order='F')
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {'size': [int(mask.shape[0]), int(mask.shape[1])], 'counts': counts}
