"""Every command example in README.md runs in a test: the `yolo-trt` ones for real, here;
the ones that need what no machine here has (`ros2`, `rviz2`, `rosdep`, JetPack) are checked
against what they name (launch arguments, parameters, files, entry points). A command no
rule below covers fails the test, so a new example cannot go untested."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from support.bags import (
    CAMERA_INFO,
    COMPRESSED,
    IMAGE,
    Message,
    camera_info_cdr,
    compressed_cdr,
    image_cdr,
    write_bag,
)

from yolo_trt_ros import launch_args
from yolo_trt_ros.cli import build_parser
from yolo_trt_ros.core.models.paths import data_home
from yolo_trt_ros.core.models.synthetic import (
    constant_output_model,
    task_output,
    yolov8_output,
)
from yolo_trt_ros.core.serving.config import DETECTOR_PARAMETERS, RUNTIME
from yolo_trt_ros.core.serving.params import checked_value

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text()


def commands() -> list[str]:
    """The commands of README's bash blocks: continuation lines joined, comments dropped."""
    out = []
    for block in re.findall(r'```bash\n(.*?)```', README, re.DOTALL):
        text = re.sub(r'\\\n\s*', '', block)
        for line in text.splitlines():
            line = re.sub(r'\s+#.*$', '', line).strip()
            if line and not line.startswith('#'):
                out.append(line)
    return out


def yolo_trt(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'yolo_trt_ros.cli', *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope='module')
def workdir(tmp_path_factory, bus_jpg, zidane_jpg) -> Path:
    """The sample photos folder as `cd` finds it, plus the files the examples name."""
    cwd = tmp_path_factory.mktemp('readme')
    for photo in (bus_jpg, zidane_jpg):
        shutil.copy(photo, cwd)
    for name in ('my_yolo11n.onnx', 'yolo11n.onnx'):  # YOLO11n-shaped: (1, 84, 8400)
        constant_output_model(cwd / name, yolov8_output(), (640, 640))
    for task, suffix in (('obb', 'obb'), ('segment', 'seg'), ('pose', 'pose')):  # as exported
        classes = 1 if task == 'pose' else 80
        outputs = task_output(task, classes=classes)
        meta = {'task': task, **({'kpt_shape': '[17, 3]'} if task == 'pose' else {})}
        constant_output_model(cwd / f'yolo11n-{suffix}.onnx', outputs[0], (640, 640),
                              [f'c{i}' for i in range(classes)], more=outputs[1:],
                              metadata=meta)
    (cwd / 'labels.yaml').write_text(yaml.safe_dump({'names': [f'c{i}' for i in range(80)]}))
    (cwd / 'calib_images').mkdir()
    shutil.copy(bus_jpg, cwd / 'calib_images')
    # The bags of the `yolo-trt bag` examples: a rosbag2 directory and a lone .mcap file.
    frames = [Message('/front/image_raw/compressed', COMPRESSED, 10 + i,
                      compressed_cdr(bus_jpg.read_bytes(), 'jpeg', 1, i)) for i in range(2)]
    frames.append(Message('/rear/image_raw', IMAGE, 11,
                          image_cdr(cv2.imread(str(zidane_jpg)), 'bgr8', 1, 5)))
    bag = write_bag(cwd / 'recording', 'mcap', frames)
    shutil.copy(bag / 'recording.mcap', cwd / 'recording.mcap')
    bus = cv2.imread(str(bus_jpg))
    k = [700.0, 0, 405.0, 0, 700.0, 540.0, 0, 0, 1]
    depth = np.full(bus.shape[:2], 3000, np.uint16)
    write_bag(cwd / 'realsense', 'mcap', [
        Message('/camera/aligned_depth_to_color/camera_info', CAMERA_INFO, 1,
                camera_info_cdr(k, 810, 1080, 1, 0)),
        *(m for i in range(2) for m in (
            Message('/camera/color/image_raw', IMAGE, 10 + 2 * i, image_cdr(bus, 'bgr8', 1, i)),
            Message('/camera/aligned_depth_to_color/image_raw', IMAGE, 11 + 2 * i,
                    image_cdr(depth, '16UC1', 1, i))))])
    # Tracks and positions: frames of a panning camera, as a folder and as a video, an
    # Ultralytics botsort.yaml, and a depth image with its camera_info YAML.
    bus = cv2.imread(str(bus_jpg))
    (cwd / 'frames').mkdir()
    video = cv2.VideoWriter(str(cwd / 'drive.mp4'), cv2.VideoWriter_fourcc(*'mp4v'), 10,
                            (720, 850))
    for i in range(4):
        frame = np.ascontiguousarray(bus[150:1000, 12 * i:12 * i + 720])
        cv2.imwrite(str(cwd / 'frames' / f'{i:04d}.png'), frame)
        video.write(frame)
    video.release()
    (cwd / 'botsort.yaml').write_text('tracker_type: botsort\ntrack_buffer: 30\n'
                                      'gmc_method: sparseOptFlow\nwith_reid: False\n')
    cv2.imwrite(str(cwd / 'bus_depth.png'), np.full((1080, 810), 3000, np.uint16))
    (cwd / 'camera.yaml').write_text(yaml.safe_dump({
        'image_width': 810, 'image_height': 1080,
        'camera_matrix': {'rows': 3, 'cols': 3,
                          'data': [700.0, 0, 405.0, 0, 700.0, 540.0, 0, 0, 1]}}))
    return cwd


def run_yolo_trt(command: str, cwd: Path, cache: Path) -> str:
    args = shlex.split(command)[1:]
    env = dict(os.environ, YOLO_TRT_ROS_CACHE=str(cache))
    result = yolo_trt(args, cwd, env)
    if args[:1] == ['build'] and '--precision int8' in command:
        # TensorRT 10 only; here the builder is strongly typed: one line saying what to do.
        assert result.returncode == 1, result.stderr
        assert 'needs an explicitly quantized (Q/DQ) ONNX' in result.stderr
        assert 'Traceback' not in result.stderr
        return 'refused as documented (strongly typed builder)'
    assert result.returncode == 0, f'{command}\n{result.stdout}\n{result.stderr}'
    if '--json' in args:
        assert json.loads(result.stdout)[0]['detections']
    if args[:1] == ['build']:
        assert Path(result.stdout.strip().splitlines()[-1]).is_file()  # the engine path
    if '--save' in args:
        assert list((cwd / args[args.index('--save') + 1]).glob('*.jpg'))
    if args[:1] == ['bag']:
        out = args[args.index('--out') + 1] if '--out' in args else \
            Path(args[1]).stem.rstrip('/') + '_detections'
        assert (cwd / out / 'metadata.yaml').is_file() and ' 0 refused' in result.stdout
        if '--depth-topics' in args:
            assert '3D: 2 frames with positions' in result.stdout
    if '--depth' in args:
        assert all(d['position_m'] for d in json.loads(result.stdout)[0]['detections'])
    return 'ran'


def check_ros2_launch(command: str) -> str:
    args = shlex.split(command)
    assert args[2:4] == ['yolo_trt_ros', 'detect.launch.py'], command
    assert (ROOT / 'launch' / 'detect.launch.py').is_file()
    values = {name: default for name, (default, _) in launch_args.LAUNCH_ARGUMENTS.items()}
    for item in args[4:]:
        name, sep, value = item.partition(':=')
        assert sep and name in launch_args.LAUNCH_ARGUMENTS, f'{item}: not a launch argument'
        values[name] = value
    launch_args.validate(values)
    return 'launch arguments declared and valid'


def check_param_set(command: str) -> str:
    _, _, _, node, name, value = shlex.split(command)
    assert node == '/detector' and name in RUNTIME, command
    checked_value(name, yaml.safe_load(value), DETECTOR_PARAMETERS[name])
    return 'a run-time parameter, value accepted'


def check_yolo_trt_static(command: str) -> str:
    """`yolo-trt launch ...`, and yolo-trt through `ros2 run`: parsed as the CLI parses."""
    args = shlex.split(command)
    args = args[args.index('yolo-trt') + 1:]
    parsed = build_parser().parse_args(args)
    if args[0] == 'launch':
        from yolo_trt_ros.launcher import parse_assignments
        launch_args.validate(parse_assignments(parsed.assignments))
    return 'parsed by the CLI'


def check_files_exist(*paths: str):
    def check(command: str) -> str:
        for path in paths:
            assert (ROOT / path).exists(), path
        return f'names {", ".join(paths)}'
    return check


RULES = [  # (pattern, check); first match wins
    (r'bash pip_env/setup\.sh --demo', lambda c: (
        'bash pip_env/setup.sh' in (ROOT / '.ci' / 'run').read_text() and
        '--demo' in (ROOT / 'pip_env' / 'setup.sh').read_text()) and 'CI runs setup.sh; '
        'test_launch.py runs the demo'),
    (r'\.venv/bin/python -m pytest', lambda c: (
        c in (ROOT / '.ci' / 'run').read_text()) and 'the test command CI runs'),
    (r'bash pip_env/setup\.sh --distro jazzy', lambda c: (
        c in (ROOT / '.ci' / 'run').read_text()) and 'CI sets up the Jazzy venv so'),
    (r'\.venv-jazzy/bin/python -m pytest', lambda c: (
        '.venv-jazzy/bin/python' in (ROOT / '.ci' / 'run').read_text()) and
        'CI runs the suite on Jazzy'),
    (r'yolo-trt (detect|build|track|bag)( .*)?', None),  # run for real
    (r'yolo-trt launch( .*)?', check_yolo_trt_static),
    (r'ros2 run yolo_trt_ros yolo-trt .*', check_yolo_trt_static),
    (r'ros2 launch .*', check_ros2_launch),
    (r'ros2 param set .*', check_param_set),
    # test_detector_managed.py makes these transitions through the same services
    (r'ros2 lifecycle set /detector (configure|activate|deactivate|cleanup|shutdown)',
     check_files_exist('test/test_detector_managed.py')),
    (r'rviz2 -d .*/config/detect\.rviz', check_files_exist('config/detect.rviz')),
    (r'pip install -r (pip_env/requirements-cuda1[23]\.txt)',
     check_files_exist('pip_env/requirements-cuda13.txt', 'pip_env/requirements-cuda12.txt')),
    (r'pip install (onnx onnxruntime rosbags|tensorrt)', lambda c: 'package names (pip)'),
    # The Jetson route: test_jetson_wheels.py resolves the file for aarch64 / Python 3.10.
    (r'pip install -r pip_env/requirements-jetson\.txt',
     check_files_exist('pip_env/requirements-jetson.txt', 'test/test_jetson_wheels.py')),
    (r'sudo apt install nvidia-jetpack ros-humble-ros-base ros-humble-vision-msgs',
     lambda c: 'package names (JetPack and ROS apt)'),
    # The colcon route: test_colcon.py builds this package in a colcon workspace.
    (r'(mkdir -p ~/ws/src .*|cd ~/ws && rosdep install .*|colcon build --packages-select '
     r'yolo_trt_ros .*)', check_files_exist('package.xml', 'test/test_colcon.py')),
]


def test_every_readme_command_is_covered(workdir, tmp_path):
    cwd, done = workdir, []
    for command in commands():
        if command.startswith('cd ~/.local/share/yolo_trt_ros'):
            folder = data_home() / Path(command.split('yolo_trt_ros/', 1)[1])
            assert folder.is_dir(), f'{command}: {folder} does not exist after setup'
            assert {p.name for p in folder.iterdir()} >= {'bus.jpg', 'zidane.jpg'}
            done.append((command, 'the sample photos are there'))
            continue
        for pattern, check in RULES:
            if re.fullmatch(pattern, command):
                how = run_yolo_trt(command, cwd, tmp_path / 'cache') if check is None \
                    else check(command)
                assert how, command
                done.append((command, how))
                break
        else:
            pytest.fail(f'README command not covered by test_readme.py: {command}')
    ran = [c for c, how in done if how == 'ran']
    assert len(ran) >= 8, done  # the detect and build examples ran for real


def test_the_readme_commands_are_found():
    found = commands()
    assert 'yolo-trt detect bus.jpg --json' in found
    assert any(c.startswith('ros2 launch yolo_trt_ros detect.launch.py namespace:=front')
               and c.endswith('conf:=0.4') for c in found)  # a continued line, joined
    assert all(not c.endswith('\\') for c in found)
