"""Each output layout, decoded end to end through the Detector on a small ONNX model
(built here, with the layout planted) run by the real ONNX Runtime."""
from __future__ import annotations

import re

import numpy as np
import onnx
import pytest

from yolo_trt_ros.core.backends.onnxruntime import OnnxRuntimeBackend
from yolo_trt_ros.core.errors import ModelError
from yolo_trt_ros.core.image.buffers import ImageView
from yolo_trt_ros.core.models.synthetic import constant_output_model as make_constant_model
from yolo_trt_ros.core.pipeline.decode import detect_format
from yolo_trt_ros.core.pipeline.results import PostprocessConfig
from yolo_trt_ros.core.runtime.detector import Detector, DetectorConfig

NAMES = ['cat', 'dog', 'bird']
# One box in model-input pixels (64x64 input): cx cy w h = 32 32 16 8 -> xyxy 24 28 40 36.
# A 128x64 image is letterboxed at scale 0.5 with 16 px of padding above, so the box is
# at x (24-0)/0.5 .. (40-0)/0.5 and y (28-16)/0.5 .. (36-16)/0.5 in the original.
EXPECTED_BOX = [48.0, 24.0, 80.0, 40.0]
IMAGE = ImageView(np.zeros((64, 128, 3), np.uint8), 'bgr')

# (score, class, dx): the best box; a near-duplicate of the same class (suppressed by
# NMS); the same box as another class (kept: NMS is class-aware); one under threshold.
PLANTED = [(0.9, 1, 0.0), (0.8, 1, 1.0), (0.7, 2, 0.0), (0.1, 0, 0.0)]


def yolov8_output(anchors=8):
    out = np.zeros((4 + len(NAMES), anchors), np.float32)
    for a, (score, cls, dx) in enumerate(PLANTED):
        out[:4, a] = [32 + dx, 32, 16, 8]
        out[4 + cls, a] = score
    return out


def yolov5_output(anchors=8):
    out = np.zeros((anchors, 5 + len(NAMES)), np.float32)
    for a, (score, cls, dx) in enumerate(PLANTED):
        out[a, :5] = [32 + dx, 32, 16, 8, 1.0]  # objectness 1: score = class prob
        out[a, 5 + cls] = score
    return out


def end2end_output(k=10):
    out = np.zeros((k, 6), np.float32)
    rows = [(0.9, 1), (0.7, 2), (0.1, 0)]  # the graph did NMS already
    for i, (score, cls) in enumerate(rows):
        out[i] = [24, 28, 40, 36, score, cls]
    return out


LAYOUTS = {'yolov8': yolov8_output, 'yolov5': yolov5_output, 'end2end': end2end_output}


def open_detector(tmp_path, fmt, output_format='auto', names=NAMES, batch=1, **post):
    path = make_constant_model(tmp_path / f'{fmt}.onnx', LAYOUTS[fmt](), names=names, batch=batch)
    return Detector(OnnxRuntimeBackend(path), names, output_format, PostprocessConfig(**post))


@pytest.mark.parametrize('fmt', list(LAYOUTS))
def test_layout_detected_and_decoded_to_original_pixels(tmp_path, fmt):
    with open_detector(tmp_path, fmt) as det:
        assert det.output_format == fmt
        result = det.detect([IMAGE])[0]
    assert result.class_ids.tolist() == [1, 2]
    np.testing.assert_allclose(result.scores, [0.9, 0.7], atol=1e-6)
    np.testing.assert_allclose(result.boxes, [EXPECTED_BOX, EXPECTED_BOX], atol=1e-4)
    assert [det.label(c) for c in result.class_ids] == ['dog', 'bird']


@pytest.mark.parametrize('fmt', list(LAYOUTS))
def test_forced_format_matches_auto(tmp_path, fmt):
    with open_detector(tmp_path, fmt, output_format=fmt) as det:
        assert det.detect([IMAGE])[0].class_ids.tolist() == [1, 2]


@pytest.mark.parametrize('fmt', list(LAYOUTS))
def test_confidence_class_filter_and_max_detections(tmp_path, fmt):
    with open_detector(tmp_path, fmt, conf_threshold=0.05) as det:
        assert det.detect([IMAGE])[0].class_ids.tolist() == [1, 2, 0]
        det.set_post(classes=(2, 0))
        assert det.detect([IMAGE])[0].class_ids.tolist() == [2, 0]
        det.set_post(classes=None, max_detections=1)
        assert det.detect([IMAGE])[0].class_ids.tolist() == [1]
        det.set_post(max_detections=300, conf_threshold=0.95)
        assert len(det.detect([IMAGE])[0]) == 0


@pytest.mark.parametrize('fmt', ['yolov8', 'yolov5'])
def test_agnostic_nms_merges_classes(tmp_path, fmt):
    with open_detector(tmp_path, fmt, agnostic=True) as det:
        assert det.detect([IMAGE])[0].class_ids.tolist() == [1]


def test_dynamic_batch_runs_several_images_at_once(tmp_path):
    with open_detector(tmp_path, 'yolov8', batch='N') as det:
        assert det.max_batch is None
        tall = ImageView(np.zeros((128, 64, 3), np.uint8), 'rgb')  # other letterbox
        a, b = det.detect([IMAGE, tall])
        buffers = {n: det._pres[n].buffer for n in (1, 2) if n in det._pres}
        for images in ([IMAGE], [IMAGE, tall], [IMAGE]):  # a batch size that varies
            det.detect(images)
        assert sorted(det._pres) == [1, 2]  # one preprocessor per size, made once
        assert all(det._pres[n].buffer is buf for n, buf in buffers.items())
    np.testing.assert_allclose(a.boxes[0], EXPECTED_BOX, atol=1e-4)
    # 64x128 at scale 0.5, 16 px padding left: x (24-16)/0.5.., y 28/0.5..
    np.testing.assert_allclose(b.boxes[0], [16, 56, 48, 72], atol=1e-4)


def test_labels_that_disagree_with_the_model_are_refused(tmp_path):
    path = make_constant_model(tmp_path / 'm.onnx', yolov8_output())
    with pytest.raises(ModelError, match=r'model: output \(1, 7, 8\) float32: the yolov8 layout '
                                         'predicts 3 classes but 2 class names were given'):
        Detector(OnnxRuntimeBackend(path), ['a', 'b'], 'yolov8')


def test_unknown_format_is_refused(tmp_path):
    path = make_constant_model(tmp_path / 'm.onnx', yolov8_output())
    with pytest.raises(ModelError, match="unknown output format 'yolov9'"):
        Detector(OnnxRuntimeBackend(path), NAMES, 'yolov9')


def int_output_model(path, output):
    """A constant-output model whose output is int64 (the planted values cast)."""
    make_constant_model(path, output)
    model = onnx.load(str(path))
    model.graph.node[-1].output[0] = 'as_float'
    model.graph.node.append(onnx.helper.make_node('Cast', ['as_float'], ['output0'],
                                                  to=onnx.TensorProto.INT64))
    model.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.INT64
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize('output,names,fmt,message', [
    # Issue 11, failure 2: a model with zero classes started, then every frame failed.
    (np.zeros((4, 100), np.float32), None, 'auto',
     r'\(1, 4, 100\) float32: the yolov8 layout needs 4 box columns and at least one class'),
    (np.zeros((4, 100), np.float32), NAMES, 'auto', 'predicts no class'),
    (np.zeros((100, 5), np.float32), None, 'yolov5',
     r'\(1, 100, 5\) float32: the yolov5 layout needs 5 box columns and at least one class'),
    (yolov8_output(), ['a', 'b', 'c', 'd'], 'auto', 'predicts 3 classes but 4 class names'),
    (yolov5_output(), ['a'], 'yolov5', 'the yolov5 layout predicts 3 classes but 1 class names'),
    (yolov8_output(), NAMES, 'end2end', r'\(1, 7, 8\) float32: end2end rows must be 6 wide'),
    (np.zeros((2, 7, 8), np.float32), None, 'yolov8',
     r'\(1, 2, 7, 8\) float32: the yolov8 layout needs 3 dimensions'),
    (yolov8_output(), NAMES, 'int', r'\(1, 7, 8\) int64: expected a floating-point output'),
])
def test_undecodable_models_are_refused_at_start_up_naming_model_and_shape(
        tmp_path, output, names, fmt, message):
    path = tmp_path / 'bad.onnx'
    if fmt == 'int':
        int_output_model(path, output)
        fmt = 'auto'
    else:
        make_constant_model(path, output, names=names)
    config = DetectorConfig(model=path, backend='onnxruntime', output_format=fmt)
    with pytest.raises(ModelError, match=f'^{re.escape(str(path))}: output .*{message}'):
        Detector.open(config)


@pytest.mark.parametrize('shape,classes,fmt', [
    ((1, 84, 8400), None, 'yolov8'), ((1, 84, 2535), 80, 'yolov8'),
    ((1, 25200, 85), None, 'yolov5'), ((1, 25200, 85), 80, 'yolov5'),
    ((1, 300, 6), None, 'end2end'), ((1, 300, 6), 80, 'end2end'),
    ((1, 5, 8400), 1, 'yolov8'), ((1, 25200, 6), 1, 'yolov5'),
])
def test_detect_format_from_shape(shape, classes, fmt):
    assert detect_format(shape, classes) == fmt


def test_detect_format_rejects_other_ranks():
    with pytest.raises(ModelError, match=r'cannot decode an output of shape \[1, 84\]'):
        detect_format((1, 84))


@pytest.mark.parametrize('kwargs,message', [
    (dict(conf_threshold=1.5), r'conf_threshold must be in \[0, 1\]'),
    (dict(iou_threshold=-0.1), r'iou_threshold must be in \[0, 1\]'),
    (dict(max_detections=0), 'max_detections must be at least 1'),
])
def test_bad_postprocess_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PostprocessConfig(**kwargs)


def test_missing_and_corrupt_models_raise_model_error(tmp_path):
    with pytest.raises(ModelError, match='does not exist'):
        OnnxRuntimeBackend(tmp_path / 'nope.onnx')
    bad = tmp_path / 'bad.onnx'
    bad.write_bytes(b'\x08\x07garbage' * 10)
    with pytest.raises(ModelError, match='cannot load ONNX model'):
        OnnxRuntimeBackend(bad)
