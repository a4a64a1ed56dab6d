"""`yolo-trt detect --json` and `--save` with obb, segment and pose models (constant-output
models planted with each head's layout): "angle" and "rbox_xywhr", "mask" as COCO RLE,
"keypoints" in source pixels, each equal to the CPU decoder's; bad outputs in one line."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from support.models import nan_protos_on_black
from support.task_reference import rle_decode

from yolo_trt_ros.core.models.synthetic import constant_output_model, task_output
from yolo_trt_ros.core.pipeline.decode import postprocess
from yolo_trt_ros.core.pipeline.preprocess import Letterbox
from yolo_trt_ros.core.pipeline.results import PostprocessConfig
from yolo_trt_ros.core.pipeline.tasks import read_head

SIZE = 320
NAMES = ['person', 'car', 'boat']


def run_cli(*args):
    return subprocess.run([sys.executable, '-m', 'yolo_trt_ros.cli', 'detect', *args,
                           '--backend', 'onnxruntime'], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope='module')
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp('img') / 'grey.png'
    cv2.imwrite(str(path), np.full((480, 640, 3), 90, np.uint8))
    return path


def planted(tmp_path, task: str):
    classes = 1 if task == 'pose' else len(NAMES)
    outputs = task_output(task, classes=classes, anchors=2100, size=SIZE, objects=6, seed=3)
    meta = {'task': task, **({'kpt_shape': '[17, 3]'} if task == 'pose' else {})}
    path = constant_output_model(tmp_path / f'{task}.onnx', outputs[0], (SIZE, SIZE),
                                 NAMES[:classes], more=outputs[1:], metadata=meta)
    head = read_head([((1, *o.shape), np.dtype(np.float32)) for o in outputs], meta, classes,
                     'auto', (SIZE, SIZE), 'm')
    expected = postprocess(outputs[0], head.fmt, Letterbox.fit(640, 480, SIZE, SIZE),
                           PostprocessConfig(), head, outputs[1] if task == 'segment' else None)
    assert len(expected) >= 3
    return path, expected


@pytest.mark.parametrize('task', ['obb', 'segment', 'pose'])
def test_json_per_task(tmp_path, photo, task):
    path, expected = planted(tmp_path, task)
    proc = run_cli(str(photo), '--model', str(path), '--json')
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)[0]['detections']
    assert len(found) == len(expected)
    for i, d in enumerate(found):
        if task == 'obb':
            assert set(d) == {'class_id', 'label', 'score', 'bbox_xyxy', 'angle', 'rbox_xywhr'}
            np.testing.assert_allclose(d['rbox_xywhr'], expected.rboxes[i], atol=0.06)
            assert d['angle'] == d['rbox_xywhr'][4]
        elif task == 'segment':
            assert set(d['mask']) == {'size', 'counts'} and d['mask']['size'] == [480, 640]
            np.testing.assert_array_equal(rle_decode(d['mask']), expected.masks.full(i))
        else:
            assert len(d['keypoints']) == 17
            np.testing.assert_allclose(d['keypoints'], expected.keypoints[i], atol=0.06)


def test_save_draws_masks_rotated_boxes_and_skeletons(tmp_path, photo):
    for task in ('segment', 'obb', 'pose'):
        path, expected = planted(tmp_path, task)
        out = tmp_path / task
        proc = run_cli(str(photo), '--model', str(path), '--save', str(out))
        assert proc.returncode == 0, proc.stderr
        drawn = cv2.imread(str(out / 'grey.jpg')).astype(int)
        changed = np.abs(drawn - 90).max(axis=2) > 40
        if task == 'segment':  # translucent masks: most of each mask's pixels tinted
            label = expected.masks.label_image()
            assert changed[label > 0].mean() > 0.8 and changed[label == 0].mean() < 0.2
        else:
            assert changed.mean() > 0.002


def test_a_frame_with_nan_masks_is_one_line_and_exit_1(tmp_path):
    outputs = task_output('segment', classes=3, anchors=2100, size=SIZE, objects=4, seed=1)
    path = nan_protos_on_black(tmp_path / 'nan.onnx', *outputs, (SIZE, SIZE), NAMES)
    black, grey = tmp_path / 'black.png', tmp_path / 'grey.png'
    cv2.imwrite(str(black), np.zeros((SIZE, SIZE, 3), np.uint8))
    cv2.imwrite(str(grey), np.full((SIZE, SIZE, 3), 90, np.uint8))
    proc = run_cli(str(black), str(grey), '--model', str(path), '--json')
    assert proc.returncode == 1
    assert [d['image'] for d in json.loads(proc.stdout)] == [str(grey)]
    assert proc.stderr.count('NaN mask values') == 1 and 'Traceback' not in proc.stderr


def test_an_inconsistent_model_is_refused_at_start(tmp_path, photo):
    outputs = task_output('segment', classes=3, anchors=2100, size=SIZE, objects=2, seed=1)
    path = constant_output_model(tmp_path / 'bad.onnx', outputs[0], (SIZE, SIZE), NAMES,
                                 more=(outputs[1][:16],), metadata={'task': 'segment'})
    proc = run_cli(str(photo), '--model', str(path))
    assert proc.returncode == 2
    assert proc.stderr.strip().count('\n') == 0 and '16 mask coefficients' in proc.stderr
