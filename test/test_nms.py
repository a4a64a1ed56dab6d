"""NMS against a brute-force reference on random boxes."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.nms import brute_force

from yolo_trt_ros.core.pipeline.nms import nms


@st.composite
def box_sets(draw):
    n = draw(st.integers(0, 60))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 300, (n, 2))
    wh = rng.uniform(1, 120, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    # Distinct scores: with ties, "which of two equal boxes" is a convention, not NMS.
    scores = rng.permutation(np.linspace(0.05, 1.0, max(n, 1)))[:n].astype(np.float32)
    classes = rng.integers(0, draw(st.integers(1, 4)), n)
    return boxes, scores, classes


@settings(max_examples=200, deadline=None)
@given(data=box_sets(), thr=st.sampled_from([0.0, 0.3, 0.45, 0.7, 1.0]),
       agnostic=st.booleans(), max_det=st.sampled_from([1, 5, 300]))
def test_nms_equals_brute_force(data, thr, agnostic, max_det):
    boxes, scores, classes = data
    cls = None if agnostic else classes
    got = nms(boxes, scores, cls, thr, max_det).tolist()
    assert got == brute_force(boxes.tolist(), scores.tolist(), cls, thr, max_det)


def test_class_aware_keeps_overlapping_boxes_of_different_classes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert nms(boxes, scores, np.array([0, 1]), 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, np.array([0, 0]), 0.5).tolist() == [0]
    assert nms(boxes, scores, None, 0.5).tolist() == [0]


def test_empty_input():
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), None).size == 0


def test_same_as_opencv_batched_nms_where_it_exists():
    """Our class-offset NMS against OpenCV's own NMSBoxesBatched (OpenCV >= 4.7)."""
    import cv2
    if not hasattr(cv2.dnn, 'NMSBoxesBatched'):
        pytest.skip(f'OpenCV {cv2.__version__} has no NMSBoxesBatched')
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(1, 300))
        xy = rng.uniform(0, 1920, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(1, 400, (n, 2))], 1)
        scores = rng.permutation(np.linspace(0.05, 1.0, n))
        classes = rng.integers(0, 80, n)
        xywh = boxes.copy()
        xywh[:, 2:] -= xywh[:, :2]
        ref = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), classes.tolist(), 0.0, 0.45)
        ref = sorted(np.asarray(ref).reshape(-1).tolist(), key=lambda i: -scores[i])
        assert nms(boxes, scores, classes, 0.45, 1000).tolist() == ref
