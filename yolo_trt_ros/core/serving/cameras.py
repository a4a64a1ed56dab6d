"""What a detector node keeps per camera between frames: its tracker and its depth.

One CameraState per camera, never shared: cameras in one batch, or split over `workers`
processes, cannot see each other's tracks. The node's callbacks hand depth frames and
camera_info here (any thread); the worker thread tracks and computes positions.
"""
from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from yolo_trt_ros.core.errors import ImageError
from yolo_trt_ros.core.pipeline.depth import CameraModel, DepthImage, depth_view, positions
from yolo_trt_ros.core.pipeline.results import Detections
from yolo_trt_ros.core.pipeline.tracking import DetectionTracker, TrackerConfig
from yolo_trt_ros.core.serving.cdr import Stamped, parse_image

DEPTH_KEEP = 6  # recent depth frames kept per camera for pairing by stamp


def seconds(stamp: Stamped) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def nanoseconds(stamp: Stamped) -> int:
    return stamp.sec * 10**9 + stamp.nanosec


class Tracking:
    """The node's tracker settings, swapped whole when a parameter changes (the worker
    sees the old or the new, never half of each); reset_gap_s: a pause in a camera's
    stamps longer than this resets its tracks."""

    def __init__(self, config: TrackerConfig | None, reset_gap_s: float = 1.0) -> None:
        self.config, self.reset_gap_s = config, reset_gap_s

    def set(self, config: TrackerConfig | None, reset_gap_s: float) -> None:
        """New settings; a different tracker config resets each camera's tracks on its
        next frame (an equal one, e.g. after a threshold change elsewhere, does not)."""
        if config != self.config:
            self.config = config
        self.reset_gap_s = reset_gap_s


@dataclass(frozen=True)
class DepthProblem:
    """Why a frame got no 3D: cause (a counter key), reason (one line); bad: bad input
    (logged and counted as such) rather than a depth frame that did not arrive in time."""

    cause: str
    reason: str
    bad: bool = True


@dataclass(frozen=True)
class Depth3D:
    """The 3D result of a frame: the detections with valid depth and their positions, and
    how many were left out for lack of valid depth."""

    detections: Detections
    centres: np.ndarray
    sizes: np.ndarray
    left_out: int


class CameraState:
    """One camera: ids (one source for the node's lifetime: a tracker reset never gives an
    id twice), its tracker, recent depth frames and its camera model."""

    def __init__(self, tracking: Tracking, counts: dict[str, int] | None = None) -> None:
        self.tracking = tracking
        self.ids = itertools.count(1)
        self.tracker: DetectionTracker | None = None
        self.last_stamp: float | None = None
        # counts: the camera's diagnostics counters (health.CameraStats.counts)
        self.counts = counts if counts is not None else {}
        self._depth: deque[tuple[int, bytes]] = deque(maxlen=DEPTH_KEEP)
        self._lock = threading.Lock()
        self.camera: CameraModel | None = None
        self.camera_error: str | None = None

    @property
    def resets(self) -> int:
        """Tracker resets for a stamp jump or pause."""
        return self.counts.get('tracking.resets', 0)

    # -- tracking (worker thread) -------------------------------------------------------
    def track(self, det: Detections, stamp: Stamped,
              grey: Callable[[], tuple[np.ndarray, float] | None]) -> Detections:
        """det on this camera's tracks (or det as it is, tracker none). grey() gives the
        frame for camera-motion compensation when the tracker wants it."""
        config = self.tracking.config
        if config is None:
            self.tracker = None
            return det
        if self.tracker is None or self.tracker.config is not config:
            self.tracker = DetectionTracker(config, self.ids)  # a new tracker: tracks reset
        now = seconds(stamp)
        if self.last_stamp is not None and (now < self.last_stamp or
                                            now - self.last_stamp > self.tracking.reset_gap_s):
            self.tracker.reset()
            self.counts['tracking.resets'] = self.resets + 1
        self.last_stamp = now
        return self.tracker.update(det, grey() if self.tracker.needs_frame else None)

    # -- depth (callbacks put, the worker takes) -------------------------------------------
    def put_depth(self, data: bytes) -> None:
        """A serialized depth Image as received; its stamp is read now (a few bytes)."""
        try:
            stamp = parse_image(data).header
        except ImageError:
            stamp = Stamped(0, 0, '')  # never paired; counted as unpaired frames
        with self._lock:
            self._depth.append((nanoseconds(stamp), data))

    def camera_info(self, msg) -> None:
        """A sensor_msgs/CameraInfo (anything with k, width and height)."""
        self.set_camera_info(msg.k, msg.width, msg.height)

    def set_camera_info(self, k, width: int, height: int) -> None:
        try:
            self.camera, self.camera_error = CameraModel.from_matrix(k, width, height), None
        except ValueError as exc:
            self.camera, self.camera_error = None, str(exc)

    def depth_for(self, stamp: Stamped, slop_s: float) -> bytes | None:
        """The depth frame with this stamp, else the nearest within slop_s, else None."""
        want = nanoseconds(stamp)
        with self._lock:
            frames = list(self._depth)
        best = min(frames, key=lambda f: abs(f[0] - want), default=None)
        if best is None or abs(best[0] - want) > slop_s * 1e9:
            return None
        return best[1]

    def positions(self, det: Detections, stamp: Stamped, size: tuple[int, int],
                  slop_s: float, min_m: float, max_m: float) -> Depth3D | DepthProblem:
        """The detections' positions from the depth frame paired with this image (size:
        the image's (width, height)), or why there are none."""
        if self.camera_error is not None:
            return DepthProblem('camera_info', f'camera_info unusable: {self.camera_error}')
        data = self.depth_for(stamp, slop_s)
        if data is None:
            return DepthProblem('unpaired', f'no depth frame within {slop_s} s of the image '
                                            f'stamp {seconds(stamp):.3f}', bad=False)
        if self.camera is None:
            return DepthProblem('no_camera_info', 'depth without camera_info: no camera_info '
                                                  'received yet')
        try:
            raw = parse_image(data)
            depth: DepthImage = depth_view(raw.data, raw.height, raw.width, raw.encoding,
                                           raw.step, raw.is_bigendian)
        except ImageError as exc:
            cause = exc.cause if exc.cause.startswith('depth_') else 'depth_size'
            return DepthProblem(cause, str(exc))
        if (depth.width, depth.height) != size:
            return DepthProblem('depth_size', f'depth image {depth.width}x{depth.height} is '
                                              f'not the size of the colour image '
                                              f'{size[0]}x{size[1]} (it must be aligned to it)')
        cam = self.camera
        if problem := cam.size_problem(*size):
            return DepthProblem('camera_info', problem)
        # A segmentation model's masks: the depth under each object, not its box's centre.
        p = positions(depth, cam, det.boxes, det.masks, min_m=min_m, max_m=max_m)
        keep = np.flatnonzero(p.valid)
        return Depth3D(det.take(keep), p.centre[keep], p.size[keep], len(det) - len(keep))
