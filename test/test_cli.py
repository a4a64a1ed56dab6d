"""`yolo-trt detect`: the JSON contract, annotated output, and one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, '-m', 'yolo_trt_ros.cli', *args],
                          capture_output=True, text=True, timeout=timeout)


def test_detect_json_contract(bus_jpg, zidane_jpg):
    proc = run_cli('detect', str(bus_jpg), str(zidane_jpg), '--json', '--backend', 'onnxruntime')
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [d['image'] for d in doc] == [str(bus_jpg), str(zidane_jpg)]
    bus = doc[0]
    assert (bus['width'], bus['height']) == (810, 1080)
    assert set(bus) == {'image', 'width', 'height', 'detections'}
    for d in bus['detections']:
        assert set(d) == {'class_id', 'label', 'score', 'bbox_xyxy'}
        assert isinstance(d['class_id'], int) and isinstance(d['score'], float)
        x1, y1, x2, y2 = d['bbox_xyxy']
        assert 0 <= x1 <= x2 <= 810 and 0 <= y1 <= y2 <= 1080
    labels = [d['label'] for d in bus['detections']]
    assert 'bus' in labels and labels.count('person') >= 3
    assert 'person' in [d['label'] for d in doc[1]['detections']]


def test_thresholds_change_the_result(bus_jpg):
    loose = json.loads(run_cli('detect', str(bus_jpg), '--json', '--conf', '0.1').stdout)
    strict = json.loads(run_cli('detect', str(bus_jpg), '--json', '--conf', '0.9').stdout)
    assert len(loose[0]['detections']) > len(strict[0]['detections']) >= 1
    assert all(d['score'] > 0.9 for d in strict[0]['detections'])


def test_save_writes_annotated_images(bus_jpg, tmp_path):
    proc = run_cli('detect', str(bus_jpg), '--save', str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert 'bus' in proc.stdout
    out = cv2.imread(str(tmp_path / 'bus.jpg'))
    original = cv2.imread(str(bus_jpg))
    assert out.shape == original.shape
    assert (cv2.absdiff(out, original).max(axis=2) > 60).mean() > 0.005  # boxes drawn


def test_bad_image_exits_nonzero_with_a_one_line_reason(bus_jpg, tmp_path):
    bad = tmp_path / 'broken.jpg'
    bad.write_bytes(b'\xff\xd8 truncated')
    proc = run_cli('detect', str(bad), str(bus_jpg), '--json')
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith('yolo-trt:')]
    assert errors == [f'yolo-trt: {bad}: cannot decode compressed image (12 bytes, format \'\'): '
                      f'corrupt or unsupported codec']
    assert [d['image'] for d in json.loads(proc.stdout)] == [str(bus_jpg)]  # the rest served


def test_missing_image_and_model(tmp_path, bus_jpg):
    proc = run_cli('detect', str(tmp_path / 'none.jpg'))
    assert proc.returncode == 1
    assert 'cannot read image' in proc.stderr and 'none.jpg' in proc.stderr
    proc = run_cli('detect', str(bus_jpg), '--model', str(tmp_path / 'none.onnx'))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f'yolo-trt: model file not found: {tmp_path}/none.onnx'
    bad = tmp_path / 'bad.onnx'
    bad.write_bytes(b'not onnx')
    proc = run_cli('detect', str(bus_jpg), '--model', str(bad))
    assert proc.returncode == 2 and 'cannot load ONNX model' in proc.stderr
