"""Detection2DArray: written straight to CDR bytes (core/cdr_writer.py) against the rclpy
message built field by field (ros/conversions.detection_array), alone and with the
serialization rclpy's publish then does. Same detections, same process, p50/p99.

    python bench/message_build.py [--frames 300] [--json bench/results/message_build.json]
"""
from __future__ import annotations

import sys

import numpy as np
from rclpy.serialization import serialize_message
from stage_report import Log, run_stages
from std_msgs.msg import Header

from yolo_trt_ros.benchmarks.stages import Report, measure
from yolo_trt_ros.core.pipeline.results import Detections
from yolo_trt_ros.core.serving.cdr import Stamped
from yolo_trt_ros.core.serving.cdr_writer import detection_array_cdr
from yolo_trt_ros.ros.conversions import detection_array

COUNTS = (0, 5, 20, 100, 300)
LABELS = [f'class_{i}' for i in range(80)]


def detections(n: int) -> Detections:
    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 1800, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(5, 100, (n, 2)).astype(np.float32)], axis=1)
    return Detections(boxes, np.sort(rng.uniform(0.25, 1, n).astype(np.float32))[::-1].copy(),
                      rng.integers(0, 80, n).astype(np.int32))


def run(report: Report, frames: int, log: Log) -> None:
    for n in COUNTS:
        compare(report, detections(n), frames)


def compare(report: Report, det: Detections, frames: int) -> None:
    stamp, label, size = Stamped(1, 2, 'camera_front'), LABELS.__getitem__, f'{len(det)} detections'
    header = Header(frame_id=stamp.frame_id)
    header.stamp.sec, header.stamp.nanosec = stamp.sec, stamp.nanosec
    ours = report.add('Detection2DArray as CDR bytes (cdr_writer)', size,
                      measure(lambda: detection_array_cdr(det, stamp, label), frames, 20))
    build = report.add('Detection2DArray rclpy message (conversions)', size,
                       measure(lambda: detection_array(det, header, label), frames, 20))
    both = report.add('  + serialize_message (what publish does)', size, measure(
        lambda: serialize_message(detection_array(det, header, label)), frames, 20))
    ours.note = (f'{build.median_ms / ours.median_ms:.1f}x faster than the message, '
                 f'{both.median_ms / ours.median_ms:.1f}x than message + serialization')


if __name__ == '__main__':
    sys.exit(run_stages(__doc__.splitlines()[0], run))
