"""obb, segment and pose decoding on the CPU against the independent numpy reference
(test/support/task_reference.py), the head read from a model, and bad outputs refused."""
from __future__ import annotations

import math

import numpy as np
import pytest
from support import task_reference as ref

from yolo_trt_ros.core.errors import ModelError, OutputError
from yolo_trt_ros.core.models.synthetic import task_output
from yolo_trt_ros.core.pipeline import obb
from yolo_trt_ros.core.pipeline.decode import postprocess
from yolo_trt_ros.core.pipeline.head import Head
from yolo_trt_ros.core.pipeline.masks import InstanceMasks, label_dtype, mask_regions, rle
from yolo_trt_ros.core.pipeline.preprocess import Letterbox
from yolo_trt_ros.core.pipeline.results import Detections, PostprocessConfig, detections_to_dicts
from yolo_trt_ros.core.pipeline.tasks import read_head

# Letterbox bands of whole prototype pixels (the reference crops the padding by index).
BOXES = [Letterbox.fit(1920, 1080, 640, 640), Letterbox.fit(640, 480, 640, 640),
         Letterbox.fit(1280, 1280, 640, 640)]
CFG = PostprocessConfig(conf_threshold=0.25, iou_threshold=0.45)
OBB = Head('obb', 'yolov8', 1)
SEGMENT = Head('segment', 'yolov8', 32, mask_dim=32, proto_output=1)
POSE = Head('pose', 'yolov8', 51, kpt_shape=(17, 3))


# -- oriented boxes -------------------------------------------------------------------------
def test_probiou_equals_the_reference_on_random_pairs():
    rng = np.random.default_rng(0)
    a = np.column_stack([rng.uniform(0, 100, (40, 2)), rng.uniform(2, 60, (40, 2)),
                         rng.uniform(-math.pi, math.pi, 40)])
    b = a[rng.permutation(40)] + rng.normal(0, [5, 5, 3, 3, 0.3], (40, 5))
    b[:, 2:4] = np.abs(b[:, 2:4]) + 1
    got = obb.probiou(a, b)
    want = np.array([[ref.probiou(x, y) for y in b] for x in a])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert obb.probiou(a[:1], a[:1])[0, 0] > 0.99 and got.min() > -1e-6


def test_regularised_angles_are_the_same_rectangles():
    rng = np.random.default_rng(1)
    boxes = np.column_stack([rng.uniform(0, 100, (50, 2)), rng.uniform(2, 60, (50, 2)),
                             rng.uniform(-3 * math.pi, 3 * math.pi, 50)]).astype(np.float32)
    out = obb.regularize(boxes)
    assert (out[:, 4] >= 0).all() and (out[:, 4] < math.pi / 2).all()
    for before, after in zip(obb.corners(boxes), obb.corners(out), strict=True):
        # the same four corners, in any order round the rectangle
        dist = np.linalg.norm(before[:, None] - after[None], axis=2)
        assert dist.min(axis=1).max() < 1e-3


@pytest.mark.parametrize('seed', range(3))
@pytest.mark.parametrize('box', BOXES[:2])
def test_obb_decoding_equals_the_reference(seed, box):
    output, = task_output('obb', classes=3, objects=12, seed=seed)
    got = postprocess(output, 'yolov8', box, CFG, OBB)
    want = ref.obb_decode(output, 3, CFG.conf_threshold, CFG.iou_threshold, box)
    assert len(got) == len(want) > 5
    np.testing.assert_array_equal(got.class_ids, [c for _, c, _ in want])
    np.testing.assert_allclose(got.scores, [s for s, _, _ in want], rtol=1e-6)
    np.testing.assert_allclose(got.rboxes, [r for _, _, r in want], rtol=1e-4, atol=1e-3)
    enclosing = np.array([ref.enclosing_box(r) for _, _, r in want])
    enclosing[:, 0::2] = enclosing[:, 0::2].clip(0, box.src_width)
    enclosing[:, 1::2] = enclosing[:, 1::2].clip(0, box.src_height)
    np.testing.assert_allclose(got.boxes, enclosing, atol=1e-2)


def test_rotated_nms_suppresses_by_orientation():
    """Two long thin boxes crossing at right angles overlap little as rectangles: the same
    boxes, parallel, are one object."""
    crossed = np.array([[50, 50, 100, 10, 0], [50, 50, 100, 10, math.pi / 2]], np.float32)
    parallel = np.array([[50, 50, 100, 10, 0], [50, 51, 100, 10, 0.02]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert obb.rotated_nms(crossed, scores, None, 0.45, 10).tolist() == [0, 1]
    assert obb.rotated_nms(parallel, scores, None, 0.45, 10).tolist() == [0]
    assert obb.rotated_nms(parallel, scores, np.array([0, 1]), 0.45, 10).tolist() == [0, 1]


@pytest.mark.parametrize('angle', [np.nan, np.inf, 40.0])
def test_an_insane_angle_refuses_the_frame(angle):
    output, = task_output('obb', classes=3, objects=3, seed=0)
    best = np.argmax(output[4:7].max(axis=0))
    output[-1, best] = angle
    with pytest.raises(OutputError, match='angle'):
        postprocess(output, 'yolov8', BOXES[0], CFG, OBB)


# -- masks ----------------------------------------------------------------------------------
@pytest.mark.parametrize('seed', range(2))
@pytest.mark.parametrize('box', BOXES)
def test_masks_equal_the_reference(seed, box):
    output, protos = task_output('segment', classes=5, objects=10, seed=seed)
    got = postprocess(output, 'yolov8', box, CFG, SEGMENT, protos)
    assert len(got) > 4 and len(got.masks) == len(got)
    coefficients = _kept_coefficients(output, got, 5, box)
    want, logits = ref.masks(coefficients, protos, got.boxes, box)
    for i in range(len(got)):
        differ = got.masks.full(i) != want[i]
        # Only pixels whose logit is a rounding error from 0 may differ (the reference
        # multiplies in float64 and resizes with OpenCV).
        assert np.abs(logits[i][differ]).max(initial=0) < 1e-4 and differ.sum() <= 2
    areas = want.reshape(len(want), -1).sum(axis=1)
    assert (areas > 100).sum() >= len(got) // 2  # masks worth comparing


def _kept_coefficients(output, det: Detections, classes: int, box) -> np.ndarray:
    """The coefficients of each kept detection: the anchor whose score and box it has."""
    scores = output[4:4 + classes].max(axis=0)
    rows = []
    for score, xyxy in zip(det.scores, det.boxes, strict=True):
        anchors = np.flatnonzero(scores == score)
        xywh = output[:4, anchors].T
        mapped = box.to_original(np.column_stack([xywh[:, :2] - xywh[:, 2:] / 2,
                                                  xywh[:, :2] + xywh[:, 2:] / 2]))
        rows.append(output[4 + classes:, anchors[np.argmin(np.abs(mapped - xyxy).sum(1))]])
    return np.array(rows, np.float32)


@pytest.mark.parametrize('where', ['sampled', 'corner', 'inf'])
def test_nan_prototypes_refuse_the_frame(where):
    """Also where no mask samples the bad prototype today (a corner): the output cannot be
    trusted, and the GPU path, which scans every prototype, refuses the same frames."""
    output, protos = task_output('segment', classes=5, objects=4, seed=0)
    if where == 'sampled':
        protos[3, 50:120, 50:120] = np.nan
    else:
        protos[7, 0, 0] = np.nan if where == 'corner' else np.inf
    with pytest.raises(OutputError, match='NaN mask values'):
        postprocess(output, 'yolov8', BOXES[1], CFG, SEGMENT, protos)
    protos[np.isnan(protos) | np.isinf(protos)] = 0  # the same frame, finite: served
    assert len(postprocess(output, 'yolov8', BOXES[1], CFG, SEGMENT, protos).masks) == 4


def test_label_image_lower_index_wins_and_mono16_above_254():
    regions = np.array([[0, 0, 4, 4], [2, 2, 6, 6]], np.int32)
    data = np.ones(32, np.uint8)
    masks = InstanceMasks(8, 8, regions, data, np.array([0, 16]))
    label = masks.label_image()
    assert label.dtype == np.uint8
    assert label[3, 3] == 1 and label[5, 5] == 2 and label[0, 0] == 1 and label[7, 7] == 0
    assert label_dtype(254) == np.uint8 and label_dtype(255) == np.uint16
    assert mask_regions(np.array([[0.5, 1.0, 2.0, 2.5]]), 8, 8).tolist() == [[1, 1, 2, 3]]


@pytest.mark.parametrize('first', [False, True])
def test_rle_is_column_major_coco(first):
    rng = np.random.default_rng(3)
    mask = rng.uniform(size=(7, 5)) > 0.6
    mask[0, 0] = first
    encoded = rle(mask)
    assert encoded['size'] == [7, 5] and (encoded['counts'][0] == 0) == first
    np.testing.assert_array_equal(ref.rle_decode(encoded), mask)


# -- keypoints ------------------------------------------------------------------------------
@pytest.mark.parametrize('box', BOXES[:2])
def test_keypoints_equal_the_reference(box):
    output, = task_output('pose', classes=1, objects=6, seed=4)
    got = postprocess(output, 'yolov8', box, CFG, POSE)
    assert len(got) > 3 and got.keypoints.shape == (len(got), 17, 3)
    anchors = [np.flatnonzero(output[4] == s)[0] for s in got.scores]
    points = output[5:, anchors].T.reshape(-1, 17, 3)
    np.testing.assert_allclose(got.keypoints[:, :, :2], ref.keypoints(points, box), atol=1e-3)
    np.testing.assert_array_equal(got.keypoints[:, :, 2], points[:, :, 2])


def test_two_value_keypoints_score_one():
    output, = task_output('pose', classes=1, objects=3, seed=5, kpt_shape=(4, 2))
    got = postprocess(output, 'yolov8', BOXES[0], CFG, Head('pose', 'yolov8', 8,
                                                            kpt_shape=(4, 2)))
    assert len(got) and (got.keypoints[:, :, 2] == 1).all()


# -- end-to-end layouts ---------------------------------------------------------------------
def test_end2end_heads():
    box = BOXES[1]
    rows = np.zeros((10, 7), np.float32)
    rows[0] = [320, 240, 100, 20, 0.9, 2, 2.0]  # cx cy w h score class angle
    rows[1] = [100, 100, 50, 10, 0.1, 1, 0.3]  # under the threshold
    got = postprocess(rows, 'end2end', box, CFG, Head('obb', 'end2end', 1))
    assert len(got) == 1 and got.class_ids.tolist() == [2]
    np.testing.assert_allclose(got.rboxes[0], [320, 160, 20, 100, 2.0 - math.pi / 2],
                               atol=1e-4)
    pose = np.zeros((10, 6 + 6), np.float32)
    pose[0, :6] = [10, 90, 50, 190, 0.8, 0]
    pose[0, 6:] = [20, 100, 0.9, 40, 180, 0.2]
    got = postprocess(pose, 'end2end', box, CFG, Head('pose', 'end2end', 6, kpt_shape=(2, 3)))
    np.testing.assert_allclose(got.keypoints[0], [[20, 20, 0.9], [40, 100, 0.2]], atol=1e-4)
    output, protos = task_output('segment', classes=1, objects=1, seed=0)
    seg = np.zeros((5, 38), np.float32)
    seg[0, :6] = [100, 120, 300, 360, 0.7, 0]
    seg[0, 6:] = output[5:, 0]
    got = postprocess(seg, 'end2end', box, CFG, Head('segment', 'end2end', 32, mask_dim=32,
                                                     proto_output=1), protos)
    want, _ = ref.masks(seg[:1, 6:], protos, got.boxes, box)
    assert len(got) == 1 and (got.masks.full(0) != want[0]).sum() <= 2


# -- the head of a model --------------------------------------------------------------------
F = np.dtype(np.float32)


@pytest.mark.parametrize('outputs,meta,names,message', [
    ([((1, 4 + 80 + 32, 8400), F), ((1, 16, 160, 160), F)], {}, 80,
     r'116 values per anchor are 4 box values, 96 class scores and 16 mask coefficients'),
    ([((1, 4 + 1 + 50, 8400), F)], {'kpt_shape': '[17, 3]'}, 1,
     r'55 values per anchor leave no class score'),
    ([((1, 4 + 1 + 50, 8400), F)], {'kpt_shape': '[17, 3]'}, None,
     r'leave no class score after 4 box values and 51 keypoint values'),
    ([((1, 300, 6 + 50), F)], {'task': 'pose', 'kpt_shape': '[17, 3]'}, None,
     r'end-to-end rows hold 6 values .* and 51 keypoint values .*: 57, not 56'),
    ([((1, 4 + 1 + 50, 8400), F)], {'kpt_shape': '[17, 4]'}, 1, r'kpt_shape .* is not \[K, D\]'),
    ([((1, 85, 8400), F)], {'task': 'classify'}, None, r"task 'classify' is not served"),
    ([((1, 116, 8400), F)], {'task': 'segment'}, None, r'needs a second output'),
    ([((1, 116, 8400), F), ((1, 32, 100, 160), F)], {}, None, r'not the input 640x640 scaled'),
    ([((1, 85, 8400), np.dtype(np.int32))], {'task': 'obb'}, None, r'floating-point'),
])
def test_inconsistent_models_are_refused_in_one_line(outputs, meta, names, message):
    with pytest.raises(ModelError, match=message) as caught:
        read_head(outputs, meta, names, 'auto', (640, 640), 'm.onnx')
    assert '\n' not in str(caught.value) and str(caught.value).startswith('m.onnx')


def test_heads_are_read_from_metadata_and_shapes():
    seg = read_head([((1, 116, 8400), F), ((1, 32, 160, 160), F)], {}, 80, 'auto',
                    (640, 640), 'm')
    assert (seg.task, seg.mask_dim, seg.proto_output, seg.proto_stride) == ('segment', 32, 1, 4)
    pose = read_head([((1, 56, 8400), F)], {'kpt_shape': '[17, 3]'}, None, 'auto',
                     (640, 640), 'm')
    assert (pose.task, pose.kpt_shape, pose.extras) == ('pose', (17, 3), 51)
    assert pose.keypoint_names[0] == 'nose' and pose.skeleton
    guessed = read_head([((1, 56, 8400), F)], {'task': 'pose'}, None, 'auto', (640, 640), 'm')
    assert guessed.kpt_shape == (17, 3)
    assert read_head([((1, 20, 8400), F)], {'task': 'obb'}, None, 'auto', (640, 640),
                     'm').extras == 1
    e2e = read_head([((1, 300, 38), F), ((1, 32, 160, 160), F)], {}, None, 'auto',
                    (640, 640), 'm')
    assert (e2e.task, e2e.fmt) == ('segment', 'end2end')
    # Without `task`, an angle is indistinguishable from one more class: a detection head.
    assert read_head([((1, 20, 8400), F)], {}, None, 'auto', (640, 640), 'm').task == 'detect'


# -- JSON ---------------------------------------------------------------------------------
def test_json_fields_per_head():
    output, protos = task_output('segment', classes=2, objects=3, seed=1)
    det = postprocess(output, 'yolov8', BOXES[1], CFG, Head('segment', 'yolov8', 32,
                                                             mask_dim=32, proto_output=1),
                      protos)
    entries = detections_to_dicts(det, str)
    assert all(np.array_equal(ref.rle_decode(e['mask']), det.masks.full(i))
               for i, e in enumerate(entries))
    output, = task_output('obb', classes=2, objects=2, seed=1)
    entry = detections_to_dicts(postprocess(output, 'yolov8', BOXES[1], CFG, OBB), str)[0]
    assert entry['angle'] == entry['rbox_xywhr'][4] and 0 <= entry['angle'] < math.pi / 2
    output, = task_output('pose', classes=1, objects=2, seed=1)
    entry = detections_to_dicts(postprocess(output, 'yolov8', BOXES[1], CFG, POSE), str)[0]
    assert len(entry['keypoints']) == 17 and len(entry['keypoints'][0]) == 3
