"""The default model: our darknet->ONNX conversion against OpenCV 4's darknet reader (an
independent implementation), and its detections on a real photo."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from support.needs import reference_install
from support.truth import BUS, PEOPLE, iou

from yolo_trt_ros.core.errors import ModelError
from yolo_trt_ros.core.image.decode import read_image
from yolo_trt_ros.core.models import paths
from yolo_trt_ros.core.models.darknet import convert, parse_cfg
from yolo_trt_ros.core.pipeline.preprocess import Preprocessor
from yolo_trt_ros.core.runtime.detector import Detector, DetectorConfig

OPENCV4 = Path(sys.prefix) / 'opt' / 'opencv4'
REFERENCE = '''
import sys, numpy as np, cv2
assert cv2.__version__.startswith('4.'), cv2.__version__
cfg, weights, blob, out = sys.argv[1:]
net = cv2.dnn.readNetFromDarknet(cfg, weights)
net.setInput(np.load(blob))
np.save(out, np.concatenate(net.forward(net.getUnconnectedOutLayersNames()), 0))
'''
def test_onnx_matches_opencv4_darknet(default_model, bus_jpg, tmp_path):
    reference_install(OPENCV4 / 'cv2', 'the OpenCV 4 reference')
    pre = Preprocessor(416, 416)
    pre(read_image(str(bus_jpg)))
    np.save(tmp_path / 'blob.npy', pre.buffer)
    src = paths.darknet_dir()
    env = dict(os.environ, PYTHONPATH=str(OPENCV4))
    subprocess.run([sys.executable, '-c', REFERENCE, str(src / 'yolov3-tiny.cfg'),
                    str(src / 'yolov3-tiny.weights'), str(tmp_path / 'blob.npy'),
                    str(tmp_path / 'ref.npy')], check=True, env=env, timeout=120)
    ref = np.load(tmp_path / 'ref.npy')  # (2535, 85): cx cy w h / 416, obj, obj*cls
    ours = ort.InferenceSession(str(default_model)).run(None, {'images': pre.buffer})[0][0]
    assert ours.shape == (84, 2535) and ref.shape == (2535, 85)
    np.testing.assert_allclose(ours[:4].T / 416, ref[:, :4], atol=2e-4)
    scores = ours[4:].T
    # OpenCV zeroes class scores at or below its 0.2 threshold; compare where it does not.
    shown = ref[:, 5:] > 0
    assert shown.sum() >= 5
    np.testing.assert_allclose(scores[shown], ref[:, 5:][shown], atol=1e-3)
    assert (scores[~shown] <= 0.2 + 1e-3).all()


def test_default_model_finds_the_bus_and_the_people(default_model, bus_jpg):
    config = DetectorConfig(model=default_model, backend='onnxruntime')
    with Detector.open(config) as det:
        assert det.names[:3] == ['person', 'bicycle', 'car'] and len(det.names) == 80
        result = det.detect([read_image(str(bus_jpg))])[0]
    found = [(det.names[c], b.tolist()) for c, b in zip(result.class_ids, result.boxes, strict=True)]
    buses = [b for name, b in found if name == 'bus']
    people = [b for name, b in found if name == 'person']
    assert any(iou(b, BUS) > 0.8 for b in buses), found
    for truth in PEOPLE:
        assert any(iou(b, truth) > 0.6 for b in people), (truth, found)


def test_converter_refuses_mismatched_weights_and_bad_cfg():
    cfg = paths.darknet_dir() / 'yolov3-tiny.cfg'
    text = cfg.read_text()
    header = np.array([0, 2, 0], np.int32).tobytes() + np.zeros(1, np.int64).tobytes()
    with pytest.raises(ModelError, match='weights file ends early'):
        convert(text, header + np.zeros(100, np.float32).tobytes())
    with pytest.raises(ModelError, match='must start with a \\[net\\] section'):
        parse_cfg('[convolutional]\nfilters=1\n')
    with pytest.raises(ModelError, match='cfg line 2: expected'):
        parse_cfg('[net]\nthis is not a key value\n')
    with pytest.raises(ModelError, match=r'darknet layer type \[lstm\] is not supported'):
        convert('[net]\nwidth=32\nheight=32\n[lstm]\n', header)
