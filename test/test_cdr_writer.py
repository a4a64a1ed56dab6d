"""Detection2DArray written straight to CDR: rclpy deserializes our bytes to exactly the
message ros.conversions.detection_array builds, whatever the counts, strings and alignments."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from yolo_trt_ros.core.pipeline.results import Detections
from yolo_trt_ros.core.serving.cdr import Stamped
from yolo_trt_ros.core.serving.cdr_writer import detection_array_cdr
from yolo_trt_ros.ros.conversions import detection_array


def detections(n: int, classes: int, seed: int) -> Detections:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 1900, (n, 2)).astype(np.float32)
    wh = rng.uniform(0.1, 300, (n, 2)).astype(np.float32)
    scores = np.sort(rng.uniform(0, 1, n).astype(np.float32))[::-1]
    return Detections(np.concatenate([xy, xy + wh], axis=1), scores.copy(),
                      rng.integers(0, classes, n).astype(np.int32))


def assert_written_as_rclpy_builds(det: Detections, stamp: Stamped, labels: list[str]) -> None:
    class_id_of = labels.__getitem__
    ours = detection_array_cdr(det, stamp, class_id_of)
    header = Header(frame_id=stamp.frame_id)
    header.stamp.sec, header.stamp.nanosec = stamp.sec, stamp.nanosec
    expected = detection_array(det, header, class_id_of)
    assert deserialize_message(ours, Detection2DArray) == expected
    # Same size as rclpy's own serialization: no missing or extra padding anywhere.
    assert len(ours) == len(serialize_message(expected))


@pytest.mark.parametrize('n', [0, 1, 2, 300])
@pytest.mark.parametrize('frame_id', ['', 'c', 'cam', 'camera', 'front_left_camera_optical',
                                      'f' * 300])
def test_counts_and_frame_ids(n, frame_id):
    labels = ['person', 'a', 'traffic light', 'x' * 257, 'zb', 'café', '', 'abcdefg']
    assert_written_as_rclpy_builds(detections(n, len(labels), n), Stamped(17, 999, frame_id),
                                   labels)


@settings(max_examples=80, deadline=None)
@given(n=st.integers(0, 12), frame_id=st.text(max_size=20),
       labels=st.lists(st.text(max_size=13), min_size=1, max_size=6),
       sec=st.integers(-2**31, 2**31 - 1), nanosec=st.integers(0, 2**32 - 1),
       seed=st.integers(0, 1000))
def test_any_strings_and_alignments(n, frame_id, labels, sec, nanosec, seed):
    """Every label length against every offset: each detection's score and box land on a
    different 8-byte alignment."""
    frame_id = frame_id.replace('\x00', '')  # ROS strings end at a NUL
    labels = [label.replace('\x00', '') for label in labels]
    assert_written_as_rclpy_builds(detections(n, len(labels), seed), Stamped(sec, nanosec,
                                                                             frame_id), labels)


def test_special_values_survive():
    boxes = np.array([[0, 0, 0, 0], [1e-30, 3.5, 1e30, 7.25]], np.float32)
    det = Detections(boxes, np.array([1.0, 0.0], np.float32), np.array([1, 0], np.int32))
    assert_written_as_rclpy_builds(det, Stamped(0, 0, 'cam'), ['0', '1'])
