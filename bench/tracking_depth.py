"""Tracks and 3D per camera-frame: the tracker update (ByteTrack, BoT-SORT) at 20 and 50
live tracks, BoT-SORT's camera-motion compensation, and depth -> Detection3DArray at 720p
with 20 detections beside the straightforward way (the whole depth image in metres,
np.nanmedian per box). The node's own code paths: DetectionTracker.update on Detections
(BoT-SORT: its tracker with the camera's motion given, the warp included; the motion
estimate is its own row), depth_view + positions + detection3d_array_cdr.

    python bench/tracking_depth.py [--frames 2000] [--json bench/results/tracking_depth_dev.json]
    (on a shared machine: nice -n -15 python bench/tracking_depth.py ..., as root)
"""
from __future__ import annotations

import itertools
import os
import sys

import cv2
import numpy as np
from stage_report import Log, run_stages

from yolo_trt_ros.benchmarks.stages import Report, camera_frame, measure
from yolo_trt_ros.core.pipeline.depth import CameraModel, depth_view, positions
from yolo_trt_ros.core.pipeline.results import Detections
from yolo_trt_ros.core.pipeline.tracking import DetectionTracker, TrackerConfig
from yolo_trt_ros.core.pipeline.tracking.cmc import SparseFlowCMC, grey_for_cmc
from yolo_trt_ros.core.serving.cdr import Stamped
from yolo_trt_ros.core.serving.cdr_writer import detection3d_array_cdr

LABELS = [f'class_{i}' for i in range(80)]


def scene(objects: int, frames: int, seed: int = 0) -> list[Detections]:
    """Objects moving on straight lines over a 1920x1080 frame, boxes with 1 px noise,
    scores 0.3-0.95, every object detected every frame: `objects` live tracks."""
    rng = np.random.default_rng(seed)
    start = rng.uniform([100, 100], [1800, 980], (objects, 2))
    speed = rng.uniform(-2, 2, (objects, 2))
    size = rng.uniform([20, 40], [80, 160], (objects, 2))
    out = []
    for f in range(frames):
        centre = start + speed * f + rng.normal(0, 1, (objects, 2))
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        scores = rng.uniform(0.3, 0.95, objects)
        order = np.argsort(scores)[::-1]
        out.append(Detections(boxes[order].astype(np.float32),
                              scores[order].astype(np.float32),
                              rng.integers(0, 80, objects).astype(np.int32)[order]))
    return out


def tracking(report: Report, frames: int, log: Log) -> None:
    for objects in (20, 50):
        frames_of = scene(objects, frames + 100)
        for kind in ('bytetrack', 'botsort'):
            tracker = DetectionTracker(TrackerConfig(kind=kind, gmc_method='none'))
            feed = itertools.cycle(frames_of)
            if kind == 'bytetrack':
                times = measure(lambda t=tracker, f=feed: t.update(next(f)), frames, 100)
            else:  # the camera's motion given (identity: the warp runs), CMC timed apart
                times = measure(lambda t=tracker, f=feed: t.tracker.update(
                    (d := next(f)).boxes, d.scores, np.eye(2, 3)), frames, 100)
            live = len(tracker.tracker)
            report.add(f'{kind} tracker update (Kalman, association, bookkeeping)',
                       f'{objects} tracks', times, f'{live} live tracks at the end')
    for h, w in ((720, 1280), (1080, 1920)):
        base = camera_frame(h + 64, w + 64)
        pan = itertools.cycle([np.ascontiguousarray(base[8 + (i % 16): 8 + (i % 16) + h,
                                                         2 * i % 64: 2 * i % 64 + w])
                               for i in range(32)])
        cmc = SparseFlowCMC()
        times = measure(lambda c=cmc, p=pan: c.estimate(*grey_for_cmc(next(p), 'bgr')),
                        frames // 4, 20)
        report.add('botsort camera-motion compensation (grey, 480 px, sparse flow, RANSAC)',
                   f'{w}x{h}', times)


def straightforward_3d(metres_of, camera: CameraModel, boxes: np.ndarray) -> np.ndarray:
    """The whole image in metres with NaN for invalid, then np.nanmedian per box centre."""
    depth = metres_of()
    out = []
    for x1, y1, x2, y2 in boxes:
        mx, my = (x2 - x1) / 4, (y2 - y1) / 4
        z = np.nanmedian(depth[int(y1 + my):int(y2 - my), int(x1 + mx):int(x2 - mx)])
        u, v = (x1 + x2) / 2, (y1 + y2) / 2
        out.append(((u - camera.cx) * z / camera.fx, (v - camera.cy) * z / camera.fy, z))
    return np.asarray(out)


def depth_3d(report: Report, frames: int, log: Log) -> None:
    h, w, n = 720, 1280, 20
    rng = np.random.default_rng(1)
    mm = rng.uniform(500, 6000, (h, w)).astype(np.uint16)
    mm[rng.random((h, w)) < 0.05] = 0  # holes
    camera = CameraModel(900.0, 900.0, w / 2, h / 2, w, h)
    xy = rng.uniform(0, [w - 300, h - 300], (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(40, 300, (n, 2))], axis=1).astype(np.float32)
    det = Detections(boxes, np.linspace(0.9, 0.3, n).astype(np.float32),
                     rng.integers(0, 80, n).astype(np.int32), np.arange(1, n + 1))
    stamp, label = Stamped(1, 2, 'camera_color_optical_frame'), LABELS.__getitem__
    data = mm.tobytes()

    def ours() -> bytes:
        depth = depth_view(data, h, w, '16UC1', w * 2)
        p = positions(depth, camera, det.boxes)
        keep = np.flatnonzero(p.valid)
        kept = Detections(det.boxes[keep], det.scores[keep], det.class_ids[keep],
                          det.track_ids[keep])
        return detection3d_array_cdr(kept, p.centre[keep], p.size[keep], stamp, label)

    def metres() -> np.ndarray:
        m = np.frombuffer(data, np.uint16).reshape(h, w).astype(np.float32) / 1000
        m[m == 0] = np.nan
        return m

    a = report.add('3D: depth view + positions + Detection3DArray as CDR bytes (ours)',
                   f'{w}x{h} 16UC1, {n} detections', measure(ours, frames, 20))
    b = report.add('3D: depth in metres + np.nanmedian per box (straightforward, no message)',
                   f'{w}x{h} 16UC1, {n} detections',
                   measure(lambda: straightforward_3d(metres, camera, boxes), frames, 20))
    a.note = f'{b.median_ms / a.median_ms:.1f}x faster than the straightforward way'


def run(report: Report, frames: int, log: Log) -> None:
    cv2.setNumThreads(1)  # as in the node's worker: one thread per camera batch
    # The dev machine is shared with other jobs: the results say at which priority they ran.
    log(f'process niceness {os.nice(0)}; cv2 threads 1')
    tracking(report, frames, log)
    depth_3d(report, frames, log)


if __name__ == '__main__':
    sys.exit(run_stages(__doc__.splitlines()[0], run))
