"""A hostile new user's review of the command line (helper, 2026-12-06): each finding that
lost data, gave a wrong result or a traceback, reproduced here before its fix."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

YOLO_TRT = [sys.executable, '-m', 'yolo_trt_ros.cli']
ORT = ('--backend', 'onnxruntime')


def run_cli(*args, timeout=120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*YOLO_TRT, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def one_error(proc: subprocess.CompletedProcess, words: str) -> str:
    """The run's one `yolo-trt:` line, which must hold words; no traceback."""
    assert 'Traceback' not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith('yolo-trt:')]
    assert len(errors) == 1 and words in errors[0], proc.stderr
    return errors[0]


@pytest.mark.parametrize('command', ['detect', 'track'])
def test_save_into_the_inputs_folder_is_refused_and_the_inputs_are_kept(command, bus_jpg,
                                                                        tmp_path):
    """`detect self/bus.jpg --save self` replaced the photo by its annotated copy, and
    `track frames --save frames` every recorded frame (frame_000000.jpg, ...), exit 0."""
    folder = tmp_path / 'in'
    folder.mkdir()
    names = ['bus.jpg'] if command == 'detect' else ['frame_000000.jpg', 'frame_000001.jpg']
    for name in names:
        shutil.copy(bus_jpg, folder / name)
    target = folder / names[0] if command == 'detect' else folder
    for save in (folder, tmp_path / '.' / 'in'):  # the same folder, named otherwise
        proc = run_cli(command, target, '--save', save, *ORT)
        assert proc.returncode == 2, proc.stderr
        one_error(proc, 'holds the input')
        assert proc.stdout == ''
        assert all((folder / n).read_bytes() == bus_jpg.read_bytes() for n in names)
    elsewhere = run_cli(command, target, '--save', tmp_path / 'out', *ORT)
    assert elsewhere.returncode == 0, elsewhere.stderr


def test_a_camera_yaml_for_another_size_is_refused_as_the_node_refuses_it(bus_jpg, tmp_path):
    """`detect --depth --camera-info` with a calibration of 640x480 for an 810x1080 image
    placed every object metres off, exit 0; the node and `yolo-trt bag` refuse it."""
    depth = tmp_path / 'depth.png'
    cv2.imwrite(str(depth), np.full((1080, 810), 2000, np.uint16))  # 2 m everywhere
    camera = {'image_width': 640, 'image_height': 480,
              'camera_matrix': {'rows': 3, 'cols': 3,
                                'data': [500.0, 0, 320, 0, 500.0, 240, 0, 0, 1]}}
    (tmp_path / 'cam.yaml').write_text(yaml.safe_dump(camera))
    proc = run_cli('detect', bus_jpg, '--depth', depth, '--camera-info', tmp_path / 'cam.yaml',
                   '--json', *ORT)
    assert proc.returncode == 1
    one_error(proc, 'camera_info is for 640x480, the image is 810x1080')
    entry = json.loads(proc.stdout)[0]
    assert entry['detections'] and all(d['position_m'] is d['size_m'] is None
                                       for d in entry['detections'])
    camera['image_width'], camera['image_height'] = 810, 1080
    (tmp_path / 'cam.yaml').write_text(yaml.safe_dump(camera))
    right = run_cli('detect', bus_jpg, '--depth', depth, '--camera-info',
                    tmp_path / 'cam.yaml', '--json', *ORT)
    assert right.returncode == 0, right.stderr
    assert all(d['position_m'][2] == 2.0 for d in json.loads(right.stdout)[0]['detections'])


def test_track_streams_a_video_through_a_pipe(tmp_path):
    """A video streamed through a pipe (`cat v.mkv | yolo-trt track /dev/stdin`) is read as
    any video (a review refused pipes outright, which took this away); an image name that
    is a pipe stays one line at once (the image reader's check)."""
    video = tmp_path / 'v.mkv'
    out = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'MJPG'), 10, (64, 48))
    for i in range(5):
        out.write(np.full((48, 64, 3), 40 * i, np.uint8))
    out.release()
    with open(video, 'rb') as stream:
        proc = subprocess.run([*YOLO_TRT, 'track', '/dev/stdin', '--json', *ORT], stdin=stream,
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [f['frame'] for f in json.loads(proc.stdout)] == [0, 1, 2, 3, 4]
    fifo = tmp_path / 'frame.jpg'
    os.mkfifo(fifo)
    start = time.monotonic()
    proc = run_cli('track', fifo, *ORT, timeout=60)
    assert time.monotonic() - start < 30 and proc.returncode == 1
    one_error(proc, 'is not a regular file (a pipe or a device)')


def test_json_to_a_full_disk_is_one_line(bus_jpg):
    """`detect --json > /dev/full` ended in an OSError traceback."""
    if not os.path.exists('/dev/full'):
        pytest.skip('no /dev/full on this system')
    for command in ('detect', 'track'):
        with open('/dev/full', 'w') as full:
            proc = subprocess.run([*YOLO_TRT, command, str(bus_jpg), '--json', *ORT],
                                  stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
        assert proc.returncode == 1
        one_error(proc, 'cannot write the results: No space left on device')


def test_names_too_long_are_one_line(bus_jpg, tmp_path):
    """A 300-character name was an `OSError: [Errno 36] File name too long` traceback."""
    long = tmp_path / ('a' * 300)
    cases = [(('detect', bus_jpg, '--save', long), 2),
             (('track', long, bus_jpg), 1),
             (('bag', long), 2),
             (('bag', bus_jpg, '--out', long), 2),
             (('demo', '--save', long, '--frames', '1'), 2)]
    for args, status in cases:
        proc = run_cli(*args, *ORT)
        assert proc.returncode == status, (args, proc.stderr)
        one_error(proc, 'File name too long')


@pytest.mark.parametrize('what', ['file', 'read-only', 'empty'])
def test_demo_save_that_cannot_be_a_folder_is_one_line_before_anything_starts(what, tmp_path):
    """`yolo-trt demo --save bus.jpg` was a FileExistsError traceback."""
    if what == 'empty':
        save, words = '', '--save: give the folder'
    elif what == 'file':
        save = tmp_path / 'taken'
        save.write_text('keep me')
        words = 'exists and is not a directory'
    else:
        save = Path('/proc/yolo_trt_demo')
        words = 'cannot create the directory'
    start = time.monotonic()
    proc = run_cli('demo', '--save', save, '--frames', '1', *ORT)
    assert proc.returncode == 2
    one_error(proc, words)
    assert time.monotonic() - start < 30  # before any node started
    if what == 'file':
        assert save.read_text() == 'keep me'


def test_bench_arguments_are_judged_before_the_benchmark(tmp_path):
    """`bench --frames 0` was an IndexError traceback after the work; a random --model an
    uncaught ModelError; a missing --model a table without its row, exit 0; an unwritable
    --json a traceback after the whole benchmark."""
    rand = tmp_path / 'rand.onnx'
    rand.write_bytes(os.urandom(4096))
    cases = [(('--frames', '0'), 'expected a positive integer'),
             (('--frames', '-5'), 'expected a positive integer'),
             (('--warmup', '-1'), 'expected an integer of 0 or more'),
             (('--model', tmp_path / 'missing.onnx'), 'missing.onnx'),
             (('--model', rand), 'rand.onnx'),
             (('--json', '/proc/yolo_trt_bench.json'), '--json /proc/yolo_trt_bench.json'),
             (('--json', tmp_path), 'is a directory')]
    for args, words in cases:
        start = time.monotonic()
        proc = run_cli('bench', *args)
        assert proc.returncode == 2, (args, proc.stderr)
        last = proc.stderr.splitlines()[-1]  # argparse's usage lines come first
        assert words in last, (args, proc.stderr)
        if last.startswith('yolo-trt:'):
            assert proc.stderr.count('\n') == 1, proc.stderr
        assert 'Traceback' not in proc.stderr and proc.stdout == ''
        assert time.monotonic() - start < 30  # judged before any stage was timed


def test_an_engine_that_is_not_there_is_refused_on_every_backend(bus_jpg, tmp_path):
    """A mistyped --engine was ignored without a word where ONNX Runtime served."""
    for engine in (tmp_path / 'missing.engine', tmp_path):
        proc = run_cli('detect', bus_jpg, '--engine', engine, '--backend', 'auto')
        assert proc.returncode == 2, proc.stderr
        one_error(proc, f'--engine {engine}')


SIGNALLED_DETECT = r"""
import os, signal, sys
from yolo_trt_ros import cli
from yolo_trt_ros.core.runtime.detector import Detector
name = sys.argv.pop(1)
detect, calls = Detector.detect, []
def detect_then_signal(self, images):
    result = detect(self, images)
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), getattr(signal, name))
    return result
Detector.detect = detect_then_signal
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize('command', ['detect', 'track'])
@pytest.mark.parametrize('name,status,said', [('SIGINT', 130, 'Ctrl-C'),
                                              ('SIGTERM', 143, 'SIGTERM')])
def test_a_signal_keeps_the_results_done(command, name, status, said, bus_jpg, zidane_jpg):
    """Ctrl-C or SIGTERM during `detect --json` / `track --json` threw away every result
    (0 bytes of JSON): the images done are printed, the stop said in one line."""
    images = [bus_jpg, zidane_jpg] * 3
    proc = subprocess.run([sys.executable, '-c', SIGNALLED_DETECT, name, command,
                           *map(str, images), '--json', *ORT],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == status, proc.stderr
    line = one_error(proc, f'stopped by {said}')
    assert f'after 2 {"images" if command == "detect" else "frames"}' in line, line
    doc = json.loads(proc.stdout)
    assert [Path(d['image']).name for d in doc] == ['bus.jpg', 'zidane.jpg']
    assert all(d['detections'] for d in doc)


def test_a_save_folder_that_takes_no_file_is_refused_before_any_image(bus_jpg):
    """An existing folder that takes no file (/proc/self; a read-only mount) was an error
    line per image after the work, where the README says a bad --save fails first."""
    proc = run_cli('detect', bus_jpg, bus_jpg, '--save', '/proc/self', *ORT)
    assert proc.returncode == 2 and proc.stdout == ''
    one_error(proc, '--save /proc/self: cannot write into it')


def test_video_frames_above_the_pixel_limit_are_refused(tmp_path):
    """`track video --max-image-pixels 1000` served every 64x48 frame (the limit was read
    for image files only)."""
    video = tmp_path / 'v.avi'
    out = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'MJPG'), 10, (64, 48))
    for _ in range(3):
        out.write(np.zeros((48, 64, 3), np.uint8))
    out.release()
    proc = run_cli('track', video, '--max-image-pixels', 1000, *ORT)
    assert proc.returncode == 1 and proc.stdout == ''
    one_error(proc, '64x48 = 3072 pixels, more than max_image_pixels 1000')
    assert run_cli('track', video, '--max-image-pixels', 3072, *ORT).returncode == 0


def test_an_image_files_error_shows_no_empty_format(tmp_path):
    """Every image file's error said "format ''": the field of a CompressedImage message,
    which a file does not have."""
    bad = tmp_path / 'x.jpg'
    bad.write_bytes(b'x')
    proc = run_cli('detect', bad, *ORT)
    line = one_error(proc, f'{bad}: cannot decode compressed image (1 bytes): not JPEG')
    assert 'format' not in line


def test_a_labels_file_that_is_not_yaml_is_one_line(tmp_path, bus_jpg):
    """A malformed --labels YAML was the parser's five-line message."""
    bad = tmp_path / 'labels.yaml'
    bad.write_text('names: [a, b\n  c: : d\n')
    proc = run_cli('detect', bus_jpg, '--labels', bad, *ORT)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1, proc.stderr
    one_error(proc, f'{bad}: invalid YAML: while parsing a flow sequence')


def test_an_image_listed_twice_gets_each_of_its_depth_images(bus_jpg, tmp_path):
    """The depth images were looked up by image path: an image listed twice (two frames of
    one view) got the last depth image both times."""
    camera = {'image_width': 810, 'image_height': 1080,
              'camera_matrix': {'rows': 3, 'cols': 3,
                                'data': [500.0, 0, 405, 0, 500.0, 540, 0, 0, 1]}}
    (tmp_path / 'cam.yaml').write_text(yaml.safe_dump(camera))
    near, far = tmp_path / 'near.png', tmp_path / 'far.png'
    cv2.imwrite(str(near), np.full((1080, 810), 1000, np.uint16))
    cv2.imwrite(str(far), np.full((1080, 810), 3000, np.uint16))
    proc = run_cli('detect', bus_jpg, bus_jpg, '--depth', near, '--depth', far,
                   '--camera-info', tmp_path / 'cam.yaml', '--json', *ORT)
    assert proc.returncode == 0, proc.stderr
    first, second = json.loads(proc.stdout)
    assert {d['position_m'][2] for d in first['detections']} == {1.0}
    assert {d['position_m'][2] for d in second['detections']} == {3.0}


def test_results_with_stdout_closed_are_one_line_and_a_failure(bus_jpg):
    """`yolo-trt detect bus.jpg --json >&-`: the results went nowhere, exit 0."""
    proc = subprocess.run(['bash', '-c', ' '.join([*YOLO_TRT, 'detect', str(bus_jpg), '--json',
                                                   *ORT]) + ' >&-'],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    one_error(proc, 'cannot write the results: stdout is closed')


SIGNALLED_PRINT = r"""
import json, os, signal, sys
from yolo_trt_ros import cli
dumps = json.dumps
def dumps_then_signal(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)  # as the document is about to be written
    return dumps(*args, **kwargs)
cli.json.dumps = dumps_then_signal
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_signal_while_the_document_is_written_does_not_cut_it_short(bus_jpg, zidane_jpg):
    """A review of the stop (helper): the handlers were given back before the document was
    printed, so SIGTERM there killed the process with the JSON cut at 64 KB and no line."""
    proc = subprocess.run([sys.executable, '-c', SIGNALLED_PRINT, 'detect', str(bus_jpg),
                           str(zidane_jpg), '--json', *ORT],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 143, proc.stderr
    one_error(proc, 'stopped by SIGTERM after 2 images')
    assert [Path(d['image']).name for d in json.loads(proc.stdout)] == ['bus.jpg', 'zidane.jpg']


def test_save_into_the_folder_a_linked_input_lives_in_is_refused(bus_jpg, tmp_path):
    """A review of the --save check (helper): `detect sel/bus.jpg --save imgs`, where
    sel/bus.jpg links to imgs/bus.jpg, replaced the photo behind the link."""
    (tmp_path / 'imgs').mkdir()
    (tmp_path / 'sel').mkdir()
    shutil.copy(bus_jpg, tmp_path / 'imgs' / 'bus.jpg')
    (tmp_path / 'sel' / 'bus.jpg').symlink_to(tmp_path / 'imgs' / 'bus.jpg')
    proc = run_cli('detect', tmp_path / 'sel' / 'bus.jpg', '--save', tmp_path / 'imgs', *ORT)
    assert proc.returncode == 2
    one_error(proc, 'holds the input')
    assert (tmp_path / 'imgs' / 'bus.jpg').read_bytes() == bus_jpg.read_bytes()


def test_bench_with_a_dynamic_model_and_a_json_that_cannot_be_written(default_model, tmp_path):
    """A review of the bench checks (helper): a model of dynamic input size passed the
    check, then failed after every stage (TypeError traceback, no table); a JSON that
    could not be written after the run (a full disk) was a traceback, and the old results
    were truncated first; /dev/full passed the check."""
    import resource
    import signal

    import onnx

    model = onnx.load(str(default_model))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = 'height', 'width'
    dynamic = tmp_path / 'dynamic.onnx'
    onnx.save(model, str(dynamic))
    results = tmp_path / 'r.json'
    results.write_text('the last run')

    def limited():  # the disk full by the end of the run
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))

    proc = run_cli('bench', '--frames', 1, '--warmup', 0, '--model', dynamic, '--json', results,
                   timeout=300, preexec_fn=limited)
    assert proc.returncode == 1, proc.stderr
    one_error(proc, f'--json {results}: cannot write: File too large')
    assert 'inference ONNX Runtime CPU (dynamic.onnx)' in proc.stdout
    assert results.read_text() == 'the last run' and not list(tmp_path.glob('.r.json.*'))
    full = run_cli('bench', '--json', '/dev/full')
    assert full.returncode == 2
    one_error(full, 'is not a regular file')
