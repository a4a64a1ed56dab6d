"""Where detections are in 3D: aligned depth and the camera's intrinsics -> a position in
the camera's optical frame (x right, y down, z forward, metres) and an extent.

Depth follows the depth_image_proc convention: `16UC1` in millimetres, `32FC1` in metres,
registered to the colour image (same size, same pixels). Depth is read here as it is
(uint16 or float32): buffers.view_image turns 16-bit images into 8 bits for detection,
which would throw the depth away.

Per detection: the depth of the box's central region (or of a segmentation mask where one
is given), invalid pixels (0, NaN, out of range) ignored, its median as the distance, the
box centre back-projected through the pinhole model at that distance, and the size from
the box's size at that distance and the spread of the depths (10th to 90th percentile).
A box's region is read on a fixed 32 x 32 grid, every detection of a frame in one gather
and one sort: a box filling the frame costs what a small one does, and 20 detections cost
a few numpy calls, not 20 times a few.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yolo_trt_ros.core.errors import ImageError
from yolo_trt_ros.core.files import IMAGE_FILE_LIMIT, TEXT_FILE_LIMIT, FileError, read_regular
from yolo_trt_ros.core.image.buffers import Sized
from yolo_trt_ros.core.pipeline.masks import InstanceMasks

DEPTH_ENCODINGS = {'16UC1': ('u2', 0.001), 'mono16': ('u2', 0.001), '32FC1': ('f4', 1.0)}
CENTRAL = 0.5  # the central half of the box, in each direction: mostly the object itself
GRID = 32  # depth is read on a GRID x GRID grid over each box's central region
SAMPLES = GRID * GRID  # most depth pixels read per detection (masks: evenly thinned)
MIN_VALID = 0.1  # of the pixels read, at least this fraction must be valid depth
SPREAD = (10, 50, 90)  # percentiles: near side, distance, far side
# Depth outside this range is invalid by default: nearer than any depth camera measures,
# farther than a stereo or time-of-flight camera measures reliably.
MIN_M, MAX_M = 0.1, 20.0


@dataclass(frozen=True)
class DepthImage(Sized):
    """pixels: (H, W) uint16 or float32 as received; scale: metres per unit."""

    pixels: np.ndarray
    scale: float


@dataclass(frozen=True)
class CameraModel:
    """Pinhole intrinsics of the camera matrix K: focal lengths and principal point in
    pixels; width, height: the image size they are for (0: not stated)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int = 0
    height: int = 0

    @classmethod
    def from_matrix(cls, k, width: int = 0, height: int = 0) -> CameraModel:
        """k: the 9 values of K, row major (sensor_msgs/CameraInfo.k). ValueError with the
        cause for a matrix no pinhole camera has (zero or non-finite focal length)."""
        values = [float(v) for v in k]
        if len(values) != 9:
            raise ValueError(f'camera matrix has {len(values)} values, expected 9')
        fx, cx, fy, cy = values[0], values[2], values[4], values[5]
        if not all(math.isfinite(v) for v in (fx, fy, cx, cy)) or fx <= 0 or fy <= 0:
            raise ValueError(f'camera matrix has focal length fx {fx:g}, fy {fy:g} (must be '
                             f'positive: is the camera calibrated?)')
        return cls(fx, fy, cx, cy, int(width), int(height))

    def size_problem(self, width: int, height: int) -> str | None:
        """Why this calibration does not fit an image of width x height (a calibration
        taken at another resolution moves every object by metres); None where it fits or
        states no size."""
        if self.width and (self.width, self.height) != (width, height):
            return f'camera_info is for {self.width}x{self.height}, the image is {width}x{height}'
        return None


def depth_view(data, height: int, width: int, encoding: str, step: int,
               is_bigendian: bool = False) -> DepthImage:
    """A sensor_msgs/Image depth buffer as a zero-copy (H, W) view. ImageError with cause
    'depth_encoding' for an encoding that is not depth, 'depth_size' for a buffer that does
    not hold the image."""
    spec = DEPTH_ENCODINGS.get(encoding)
    if spec is None:
        raise ImageError(f"depth encoding '{encoding}' is not 16UC1 (mm) or 32FC1 (m)",
                         'depth_encoding')
    kind, scale = spec
    item = int(kind[1])
    if height <= 0 or width <= 0 or step < width * item:
        raise ImageError(f'depth image {width}x{height}, step {step}: not an image',
                         'depth_size')
    flat = np.frombuffer(data, np.uint8)
    if flat.size != height * step:
        raise ImageError(f'depth buffer holds {flat.size} bytes, expected {height * step}',
                         'depth_size')
    dtype = np.dtype(('>' if is_bigendian else '<') + kind)
    rows = flat.reshape(height, step)[:, :width * item]
    return DepthImage(rows.view(dtype).reshape(height, width), scale)


def read_depth_file(path: str | Path) -> DepthImage:
    """A depth image file: a 16-bit PNG in millimetres or a 32-bit float TIFF in metres.
    ValueError with the path and the reason otherwise (read as files.read_regular reads a
    file a user names: no FIFO, no device, no file above IMAGE_FILE_LIMIT)."""
    import cv2

    try:
        data = read_regular(path, IMAGE_FILE_LIMIT, 'depth image')
    except FileError as exc:
        raise ValueError(str(exc)) from None
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ValueError(f'{path}: cannot read it as an image')
    if pixels.ndim != 2:
        raise ValueError(f'{path}: {pixels.shape[2]} channels; depth has one')
    if pixels.dtype == np.uint16:
        return DepthImage(pixels, 0.001)
    if pixels.dtype == np.float32:
        return DepthImage(pixels, 1.0)
    raise ValueError(f'{path}: {pixels.dtype} pixels; depth is a 16-bit PNG (mm) or a 32-bit '
                     f'float TIFF (m)')


def read_camera_yaml(path: str | Path) -> CameraModel:
    """A camera_calibration / camera_info_manager YAML file (image_width, image_height,
    camera_matrix: {rows, cols, data}). ValueError with the path and the reason."""
    import yaml

    try:
        doc = yaml.safe_load(read_regular(path, TEXT_FILE_LIMIT, 'camera_info YAML'))
        data = doc['camera_matrix']['data']
        width, height = doc.get('image_width', 0), doc.get('image_height', 0)
        return CameraModel.from_matrix(data, width, height)
    except FileError as exc:
        raise ValueError(str(exc)) from None
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise ValueError(f'{path}: not a camera_info YAML (camera_matrix.data missing: '
                         f'{type(exc).__name__})') from exc
    except ValueError as exc:
        raise ValueError(f'{path}: {exc}') from exc


@dataclass(frozen=True)
class Positions:
    """For N detections: valid (N,) bool; centre (N, 3) and size (N, 3) in metres, in the
    optical frame (rows of invalid detections are NaN)."""

    valid: np.ndarray
    centre: np.ndarray
    size: np.ndarray


def _box_samples(depth: DepthImage, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, GRID*GRID) depth values on a regular grid over each box's central region, and
    (N,) bool: the region lies outside the image (no samples)."""
    h, w = depth.pixels.shape
    x1, y1, x2, y2 = boxes.T
    mx, my = (x2 - x1) * (1 - CENTRAL) / 2, (y2 - y1) * (1 - CENTRAL) / 2
    c0, c1 = np.maximum(np.floor(x1 + mx), 0), np.minimum(np.ceil(x2 - mx), w)
    r0, r1 = np.maximum(np.floor(y1 + my), 0), np.minimum(np.ceil(y2 - my), h)
    outside = (c1 <= c0) | (r1 <= r0)
    t = (np.arange(GRID) + 0.5) / GRID
    cols = (c0[:, None] + np.maximum(c1 - c0, 0)[:, None] * t).astype(np.intp)
    rows = (r0[:, None] + np.maximum(r1 - r0, 0)[:, None] * t).astype(np.intp)
    cols[outside] = rows[outside] = 0
    return depth.pixels[rows[:, :, None], cols[:, None, :]].reshape(len(boxes), -1), outside


def _mask_samples(depth: DepthImage, masks: InstanceMasks, invalid) -> np.ndarray:
    """(N, SAMPLES) depth values under each mask (evenly thinned), padded with `invalid`."""
    out = np.full((len(masks), SAMPLES), invalid, depth.pixels.dtype)
    for i in range(len(masks)):
        x0, y0 = masks.regions[i, :2].tolist()
        rows, cols = np.nonzero(masks.mask(i))
        step = max(1, -(-len(rows) // SAMPLES))
        values = depth.pixels[rows[::step] + y0, cols[::step] + x0]
        out[i, :len(values)] = values
    return out


def positions(depth: DepthImage, camera: CameraModel, boxes: np.ndarray,
              masks: InstanceMasks | None = None, min_m: float = MIN_M,
              max_m: float = MAX_M) -> Positions:
    """boxes: (N, 4) xyxy in pixels of the depth image; masks: the N instance masks of
    the image (a segmentation model's) or None for the box's central region.
    Depths outside (min_m, max_m), zero and NaN are ignored; a detection with too few valid
    pixels is not valid. All detections at once: one gather, one sort."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    n = len(boxes)
    invalid = np.inf if depth.pixels.dtype.kind == 'f' else np.iinfo(depth.pixels.dtype).max
    if masks is None:
        values, outside = _box_samples(depth, boxes)
    else:
        values, outside = _mask_samples(depth, masks, invalid), np.zeros(n, bool)
    lo, hi = max(min_m, 0.0) / depth.scale, max_m / depth.scale
    good = (values > lo) & (values < hi)  # NaN compares false: dropped too
    count = good.sum(axis=1)
    total = values.shape[1] if masks is None else np.maximum(
        masks.area().clip(max=SAMPLES), 1)
    valid = ~outside & (count >= np.maximum(1, MIN_VALID * total))
    # Nearest-rank percentiles of the valid values: invalid ones sort last.
    ordered = np.sort(np.where(good, values, invalid), axis=1)
    ranks = np.minimum(count[:, None] * np.array(SPREAD) // 100,
                       np.maximum(count - 1, 0)[:, None])
    near, z, far = np.where(valid[:, None], np.take_along_axis(ordered, ranks, axis=1)
                            .astype(np.float64) * depth.scale, np.nan).T
    u, v = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    centre = np.stack([(u - camera.cx) * z / camera.fx, (v - camera.cy) * z / camera.fy, z],
                      axis=1)
    size = np.stack([(boxes[:, 2] - boxes[:, 0]) * z / camera.fx,
                     (boxes[:, 3] - boxes[:, 1]) * z / camera.fy, far - near], axis=1)
    return Positions(valid, centre, size)
