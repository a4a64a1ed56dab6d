"""`yolo-trt detect`: the JSON contract, annotated output, and one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from support.images import corrupt_jpegs, png_with_size


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
    assert errors == [f'yolo-trt: {bad}: cannot decode compressed image (12 bytes): '
                      f'corrupt or unsupported codec (no readable JPEG header)']
    assert [d['image'] for d in json.loads(proc.stdout)] == [str(bus_jpg)]  # the rest served


def test_missing_image_and_model(tmp_path, bus_jpg):
    proc = run_cli('detect', str(tmp_path / 'none.jpg'))
    assert proc.returncode == 1
    assert 'cannot read image' in proc.stderr and 'none.jpg' in proc.stderr
    proc = run_cli('detect', str(bus_jpg), '--model', str(tmp_path / 'none.onnx'))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f'yolo-trt: model {tmp_path}/none.onnx does not exist'
    bad = tmp_path / 'bad.onnx'
    bad.write_bytes(b'not onnx')
    proc = run_cli('detect', str(bus_jpg), '--model', str(bad))
    assert proc.returncode == 2 and 'cannot load ONNX model' in proc.stderr


def error_lines(proc) -> list[str]:
    """stderr without the backend line; a traceback or raw decoder line would show here."""
    return [line for line in proc.stderr.splitlines() if not line.startswith('backend: ')]


def test_huge_png_is_one_line_not_a_traceback(tmp_path, bus_jpg):
    # Issue 11, failure 5: a 60000x60000 PNG gave a cv2.error traceback.
    huge = tmp_path / 'huge.png'
    huge.write_bytes(png_with_size(60000, 60000))
    proc = run_cli('detect', str(huge), str(bus_jpg), '--json')
    assert proc.returncode == 1
    assert error_lines(proc) == [
        f'yolo-trt: {huge}: image too large: PNG header says 60000x60000 = 3600000000 '
        f'pixels, more than max_image_pixels 64000000']
    assert [d['image'] for d in json.loads(proc.stdout)] == [str(bus_jpg)]


def test_max_image_pixels_option(bus_jpg):
    proc = run_cli('detect', str(bus_jpg), '--max-image-pixels', str(810 * 1080 - 1))
    assert proc.returncode == 1 and proc.stdout == ''
    assert error_lines(proc) == [f'yolo-trt: {bus_jpg}: image too large: JPEG header says '
                                 f'810x1080 = 874800 pixels, more than max_image_pixels 874799']
    proc = run_cli('detect', str(bus_jpg), '--max-image-pixels', str(810 * 1080))
    assert proc.returncode == 0 and 'bus' in proc.stdout
    proc = run_cli('detect', str(bus_jpg), '--max-image-pixels', '0')
    assert proc.returncode == 2
    assert "--max-image-pixels: expected a positive integer, got '0'" in proc.stderr


def test_save_naming_a_file_is_one_line(tmp_path, bus_jpg):
    # Issue 11, failure 5: FileExistsError traceback, after the model had run.
    taken = tmp_path / 'out.txt'
    taken.write_text('keep me')
    proc = run_cli('detect', str(bus_jpg), '--save', str(taken))
    assert proc.returncode == 2 and proc.stdout == ''
    assert proc.stderr.splitlines() == [f'yolo-trt: --save {taken}: exists and is not a directory']
    assert taken.read_text() == 'keep me'


def test_corrupt_jpegs_give_one_line_each_and_no_decoder_output(tmp_path, bus_jpg):
    paths = []
    for k, data in enumerate(corrupt_jpegs(bus_jpg.read_bytes(), 4)):
        paths.append(str(tmp_path / f'corrupt{k}.jpg'))
        Path(paths[-1]).write_bytes(data)
    proc = run_cli('detect', *paths, '--json')
    assert proc.returncode == 1 and json.loads(proc.stdout) == []
    lines = error_lines(proc)
    assert [line.split(': ')[1] for line in lines] == paths
    assert all('corrupt compressed image' in line and 'Corrupt JPEG data' in line
               for line in lines), lines


# -- issue 17: files that are not files, names that are not text, outputs that go away ------
YOLO_TRT = [sys.executable, '-m', 'yolo_trt_ros.cli']


@pytest.mark.parametrize('special', ['/dev/zero', 'fifo'])
@pytest.mark.parametrize('where', ['image', '--model', '--labels'])
def test_a_device_or_a_pipe_is_one_line_at_once(tmp_path, bus_jpg, where, special):
    """Issue 17, failure 4: /dev/zero read until a MemoryError at ~3 GB; a FIFO hung."""
    path = special
    if special == 'fifo':
        path = str(tmp_path / 'pipe')
        os.mkfifo(path)
    args = {'image': ['detect', path, str(bus_jpg)],
            '--model': ['detect', str(bus_jpg), '--model', path],
            '--labels': ['detect', str(bus_jpg), '--labels', path]}[where]
    start = time.monotonic()
    proc = run_cli(*args, '--backend', 'onnxruntime', timeout=60)
    assert time.monotonic() - start < 30
    assert proc.returncode == (1 if where == 'image' else 2), proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith('yolo-trt:')]
    assert len(errors) == 1 and 'is not a regular file (a pipe or a device)' in errors[0]
    assert 'Traceback' not in proc.stderr


def test_a_directory_among_the_images_is_one_line_and_the_others_are_served(tmp_path,
                                                                            bus_jpg):
    """A hostile user's attack (helper): os.fdopen refused the directory with
    IsADirectoryError before the file's type was judged, a traceback, and the images after
    it were never served."""
    (tmp_path / 'empty').mkdir()
    proc = run_cli('detect', str(tmp_path / 'empty'), str(bus_jpg), '--backend', 'onnxruntime')
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith('yolo-trt:')]
    assert len(errors) == 1 and 'is a directory, not a file' in errors[0]
    assert proc.stdout.startswith(f'{bus_jpg}: ') and 'person' in proc.stdout


@pytest.mark.parametrize('command', ['detect', 'bag'])
def test_ctrl_c_while_the_model_loads_is_one_line(command, bus_jpg, tmp_path, monkeypatch,
                                                  capsys):
    """A hostile user's attack (helper): Ctrl-C during the model's load was a 30-line
    KeyboardInterrupt traceback. The interrupt is raised where the model is opened (a
    signal's timing cannot be made deterministic from outside)."""
    from yolo_trt_ros import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, '_open_detector', interrupted)
    if command == 'bag':
        from support.bags import IMAGE, Message, image_cdr, write_bag
        src = write_bag(tmp_path / 'rec', 'mcap', [Message(
            '/cam/image_raw', IMAGE, 1, image_cdr(cv2.imread(str(bus_jpg)), 'bgr8', 1, 0))])
        argv = ['bag', str(src), '--out', str(tmp_path / 'out')]
    else:
        argv = ['detect', str(bus_jpg)]
    assert cli.main(argv) == 130
    assert capsys.readouterr().err == 'yolo-trt: stopped by Ctrl-C\n'
    assert not (tmp_path / 'out').exists()


def test_save_with_names_that_collide_or_are_not_utf8(tmp_path, bus_jpg):
    """Issue 17, failures 3 and 6: a file name that is not UTF-8 crashed OpenCV's imwrite
    (exit 139, the JSON lost); inputs sharing a stem overwrote each other's output."""
    data = bus_jpg.read_bytes()
    inputs = [os.fsencode(tmp_path) + b'/caf\xe9.jpg', tmp_path / 'a' / 'x.jpg',
              tmp_path / 'b' / 'x.jpg', tmp_path / 'x.png']
    for path in inputs:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Path(os.fsdecode(path)).write_bytes(data if not str(path).endswith('.png') else
                                            cv2.imencode('.png', cv2.imread(str(bus_jpg)))[1])
    out = tmp_path / 'out'
    proc = subprocess.run([*YOLO_TRT, 'detect', *map(os.fsencode, inputs), '--json', '--save',
                           str(out), '--backend', 'onnxruntime'], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 4
    assert sorted(os.listdir(os.fsencode(out))) == [b'caf\xe9.jpg', b'x-1.jpg', b'x-2.jpg',
                                                    b'x.jpg']
    assert not list(out.glob('.*.tmp'))


def test_output_to_a_closed_pipe_or_without_stderr_stays_clean(tmp_path, bus_jpg):
    """Issue 17, failure 6: `--json | head` ended in a BrokenPipeError traceback; with
    stderr closed, error lines went into stdout and the JSON was no longer JSON."""
    bad = tmp_path / 'bad.jpg'
    bad.write_bytes(b'\xff\xd8 truncated')
    command = ' '.join(map(str, [*YOLO_TRT, 'detect', '--backend', 'onnxruntime', '--json',
                                 bus_jpg, bus_jpg]))
    piped = subprocess.run(['bash', '-c', f'{command} 2>{tmp_path}/err | head -c 1'],
                           capture_output=True, text=True, timeout=120)
    assert piped.stdout == '['
    assert 'Traceback' not in (tmp_path / 'err').read_text()
    closed = subprocess.run(['bash', '-c', f'{command} {bad} 2>&-'],
                            capture_output=True, text=True, timeout=120)
    assert closed.returncode == 1  # the bad image, reported to a stderr that is not there
    assert [d['image'] for d in json.loads(closed.stdout)] == [str(bus_jpg)] * 2
