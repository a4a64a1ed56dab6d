"""Detection2DArray and Detection3DArray written straight to CDR: rclpy deserializes our
bytes to exactly the message rclpy builds, whatever the counts, strings, track ids and
alignments."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header
from vision_msgs.msg import (
    Detection2DArray,
    Detection3D,
    Detection3DArray,
    ObjectHypothesisWithPose,
)

from yolo_trt_ros.core.pipeline.results import Detections
from yolo_trt_ros.core.serving.cdr import Stamped
from yolo_trt_ros.core.serving.cdr_writer import detection3d_array_cdr, detection_array_cdr
from yolo_trt_ros.ros.conversions import detection_array


def detections(n: int, classes: int, seed: int, tracked: bool = False) -> Detections:
    """tracked: with track ids of 1 to 12 digits, so the ids end at every alignment."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 1900, (n, 2)).astype(np.float32)
    wh = rng.uniform(0.1, 300, (n, 2)).astype(np.float32)
    scores = np.sort(rng.uniform(0, 1, n).astype(np.float32))[::-1]
    ids = (10 ** rng.integers(0, 12, n) + rng.integers(0, 9, n)).astype(np.int64) \
        if tracked else None
    return Detections(np.concatenate([xy, xy + wh], axis=1), scores.copy(),
                      rng.integers(0, classes, n).astype(np.int32), ids)


def assert_written_as_rclpy_builds(det: Detections, stamp: Stamped, labels: list[str]) -> None:
    class_id_of = labels.__getitem__
    ours = detection_array_cdr(det, stamp, class_id_of)
    header = Header(frame_id=stamp.frame_id)
    header.stamp.sec, header.stamp.nanosec = stamp.sec, stamp.nanosec
    expected = detection_array(det, header, class_id_of)
    assert deserialize_message(ours, Detection2DArray) == expected
    # Same size as rclpy's own serialization: no missing or extra padding anywhere.
    assert len(ours) == len(serialize_message(expected))


@pytest.mark.parametrize('tracked', [False, True])
@pytest.mark.parametrize('n', [0, 1, 2, 300])
@pytest.mark.parametrize('frame_id', ['', 'c', 'cam', 'camera', 'front_left_camera_optical',
                                      'f' * 300])
def test_counts_and_frame_ids(n, frame_id, tracked):
    labels = ['person', 'a', 'traffic light', 'x' * 257, 'zb', 'café', '', 'abcdefg']
    det = detections(n, len(labels), n, tracked)
    assert_written_as_rclpy_builds(det, Stamped(17, 999, frame_id), labels)
    if tracked and n:
        arr = deserialize_message(detection_array_cdr(det, Stamped(1, 2, frame_id),
                                                      labels.__getitem__), Detection2DArray)
        assert [d.id for d in arr.detections] == [str(i) for i in det.track_ids]


@settings(max_examples=80, deadline=None)
@given(n=st.integers(0, 12), frame_id=st.text(max_size=20),
       labels=st.lists(st.text(max_size=13), min_size=1, max_size=6),
       sec=st.integers(-2**31, 2**31 - 1), nanosec=st.integers(0, 2**32 - 1),
       seed=st.integers(0, 1000), tracked=st.booleans())
def test_any_strings_and_alignments(n, frame_id, labels, sec, nanosec, seed, tracked):
    """Every label length against every offset: each detection's score and box land on a
    different 8-byte alignment."""
    frame_id = frame_id.replace('\x00', '')  # ROS strings end at a NUL
    labels = [label.replace('\x00', '') for label in labels]
    assert_written_as_rclpy_builds(detections(n, len(labels), seed, tracked),
                                   Stamped(sec, nanosec, frame_id), labels)
    assert_3d_written_as_rclpy_builds(detections(n, len(labels), seed, tracked),
                                      Stamped(sec, nanosec, frame_id), labels)


def test_special_values_survive():
    boxes = np.array([[0, 0, 0, 0], [1e-30, 3.5, 1e30, 7.25]], np.float32)
    det = Detections(boxes, np.array([1.0, 0.0], np.float32), np.array([1, 0], np.int32))
    assert_written_as_rclpy_builds(det, Stamped(0, 0, 'cam'), ['0', '1'])


def detection3d_array(det: Detections, centres, sizes, header: Header, labels) -> Detection3DArray:
    """The message built field by field with rclpy, as a reader of detections_3d sees it."""
    out = Detection3DArray(header=header)
    for i in range(len(det)):
        d = Detection3D(header=header, id='' if det.track_ids is None else str(det.track_ids[i]))
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = labels[det.class_ids[i]]
        hyp.hypothesis.score = float(det.scores[i])
        for pose in (hyp.pose.pose, d.bbox.center):
            pose.position.x, pose.position.y, pose.position.z = (float(v) for v in centres[i])
            pose.orientation.w = 1.0
        d.bbox.size.x, d.bbox.size.y, d.bbox.size.z = (float(v) for v in sizes[i])
        d.results.append(hyp)
        out.detections.append(d)
    return out


def assert_3d_written_as_rclpy_builds(det: Detections, stamp: Stamped, labels: list[str]) -> None:
    rng = np.random.default_rng(len(det))
    centres, sizes = rng.normal(0, 3, (len(det), 3)), rng.uniform(0, 2, (len(det), 3))
    ours = detection3d_array_cdr(det, centres, sizes, stamp, labels.__getitem__)
    header = Header(frame_id=stamp.frame_id)
    header.stamp.sec, header.stamp.nanosec = stamp.sec, stamp.nanosec
    expected = detection3d_array(det, centres, sizes, header, labels)
    assert deserialize_message(ours, Detection3DArray) == expected
    assert len(ours) == len(serialize_message(expected))


@pytest.mark.parametrize('tracked', [False, True])
@pytest.mark.parametrize('n', [0, 1, 3, 20])
@pytest.mark.parametrize('frame_id', ['', 'cam', 'front_left_camera_optical'])
def test_3d_counts_frame_ids_and_ids(n, frame_id, tracked):
    labels = ['person', 'a', 'traffic light', 'café', '', 'abcdefg']
    assert_3d_written_as_rclpy_builds(detections(n, len(labels), n, tracked),
                                      Stamped(5, 6, frame_id), labels)


# -- the other heads ------------------------------------------------------------------------
def _header(stamp: Stamped) -> Header:
    header = Header(frame_id=stamp.frame_id)
    header.stamp.sec, header.stamp.nanosec = stamp.sec, stamp.nanosec
    return header


@pytest.mark.parametrize('n', [0, 1, 7])
def test_oriented_boxes_carry_centre_sides_and_theta(n):
    det = detections(n, 3, n)
    rng = np.random.default_rng(n)
    rboxes = np.column_stack([rng.uniform(0, 500, (n, 2)), rng.uniform(1, 90, (n, 2)),
                              rng.uniform(0, np.pi / 2, n)]).astype(np.float32)
    det = Detections(det.boxes, det.scores, det.class_ids, rboxes=rboxes)
    assert_written_as_rclpy_builds(det, Stamped(3, 4, 'cam'), ['a', 'b', 'c'])
    arr = deserialize_message(detection_array_cdr(det, Stamped(3, 4, 'cam'), str),
                              Detection2DArray)
    for d, (cx, cy, w, h, angle) in zip(arr.detections, rboxes.tolist(), strict=True):
        assert (d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.center.theta,
                d.bbox.size_x, d.bbox.size_y) == (cx, cy, angle, w, h)


@pytest.mark.parametrize('tracked', [False, True])
@pytest.mark.parametrize('n,k', [(0, 17), (1, 17), (3, 5)])
def test_keypoints_array_is_what_rclpy_builds(n, k, tracked):
    from yolo_trt_ros.core.serving.cdr_writer import keypoints_array_cdr

    det = detections(n, 2, n, tracked)
    points = np.random.default_rng(n).uniform(0, 600, (n, k, 3)).astype(np.float32)
    det = Detections(det.boxes, det.scores, det.class_ids, det.track_ids, keypoints=points)
    names = [f'kp{i}' * (i % 4) for i in range(k)]  # names of every alignment
    stamp = Stamped(5, 6, 'front')
    ours = keypoints_array_cdr(det, stamp, names)
    expected = Detection2DArray(header=_header(stamp))
    reference = detection_array(det, _header(stamp), str)
    for d, kp in zip(reference.detections, points.tolist(), strict=True):
        d.results = []
        for name, (x, y, score) in zip(names, kp, strict=True):
            hyp = ObjectHypothesisWithPose()
            hyp.hypothesis.class_id, hyp.hypothesis.score = name, score
            hyp.pose.pose.position.x, hyp.pose.pose.position.y = x, y
            d.results.append(hyp)
        expected.detections.append(d)
    assert deserialize_message(ours, Detection2DArray) == expected
    assert len(ours) == len(serialize_message(expected))


@pytest.mark.parametrize('dtype,encoding', [(np.uint8, 'mono8'), (np.uint16, 'mono16')])
@pytest.mark.parametrize('shape', [(1, 1), (3, 5), (480, 641)])
@pytest.mark.parametrize('frame_id', ['', 'cam', 'camer'])
def test_mask_image_is_what_rclpy_builds(dtype, encoding, shape, frame_id):
    from sensor_msgs.msg import Image

    from yolo_trt_ros.core.serving.cdr_writer import image_cdr

    pixels = np.random.default_rng(1).integers(0, 300 if dtype == np.uint16 else 255, shape)
    pixels = pixels.astype(dtype)
    stamp = Stamped(8, 9, frame_id)
    ours = image_cdr(pixels, encoding, stamp)
    expected = Image(header=_header(stamp), height=shape[0], width=shape[1],
                     encoding=encoding, is_bigendian=0, step=shape[1] * pixels.itemsize)
    expected.data = pixels.astype(pixels.dtype.newbyteorder('<')).tobytes()
    assert deserialize_message(ours, Image) == expected
    assert len(ours) == len(serialize_message(expected))
