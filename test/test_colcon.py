"""The ROS-install route (issue 10.5): the repository built in a colcon workspace
(colcon-common-extensions from PyPI on top of the pip ROS 2), its install tree, and the
installed `detector` executable answering a frame."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sensor_msgs.msg import Image
from support.ros import Client, NodeProcess, frame, ros_context
from support.truth import assert_bus_and_people
from vision_msgs.msg import Detection2DArray

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def colcon_missing() -> str | None:
    if not (BIN / 'colcon').exists():
        return 'colcon not installed (pip install colcon-common-extensions; setup.sh does)'
    if shutil.which('git') is None or not (ROOT / '.git').exists():
        return 'not a git checkout: the workspace is made of the tracked files'
    return None


@pytest.fixture(scope='module')
def workspace(tmp_path_factory) -> Path:
    why = colcon_missing()
    if why is not None:
        if os.environ.get('CI'):
            pytest.fail(f'CI must run this test: {why}')
        pytest.skip(why)
    ws = tmp_path_factory.mktemp('ws')
    src = ws / 'src' / 'yolo_trt_ros'
    files = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split('\0')
    for name in filter(None, files):  # what a `git clone` gives, nothing built here
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    env = {**os.environ, 'PATH': f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(['colcon', 'build', '--packages-select', 'yolo_trt_ros'], cwd=ws,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return ws


def sourced(ws: Path, *command: str) -> list[str]:
    """command run in a shell that sourced the workspace, as a user's terminal does."""
    return ['bash', '-c', f'source {ws}/install/setup.bash && exec "$0" "$@"', *command]


def test_install_tree(workspace):
    prefix = workspace / 'install' / 'yolo_trt_ros'
    share = prefix / 'share' / 'yolo_trt_ros'
    assert (prefix / 'share/ament_index/resource_index/packages/yolo_trt_ros').is_file()
    assert (share / 'package.xml').is_file()
    assert (share / 'launch' / 'detect.launch.py').is_file()
    for name in ('detector.yaml', 'fastdds_large_frames.xml', 'detect.rviz'):
        assert (share / 'config' / name).is_file(), name
    for exe in ('detector', 'engine_builder', 'image_source', 'yolo-trt'):
        assert os.access(prefix / 'lib' / 'yolo_trt_ros' / exe, os.X_OK), exe
    # The sourced workspace imports the installed copy, not this checkout, and finds its
    # config through the ament index.
    probe = subprocess.run(sourced(workspace, sys.executable, '-c', (
        'import yolo_trt_ros, yolo_trt_ros.launch_args as a; '
        'print(yolo_trt_ros.__file__); print(a.default_params_file())')),
        capture_output=True, text=True, timeout=60, cwd=workspace)  # not this checkout's cwd
    module, params = probe.stdout.split()
    assert module.startswith(str(prefix)) and params == str(share / 'config' / 'detector.yaml')
    help_text = subprocess.run(sourced(workspace, str(prefix / 'lib/yolo_trt_ros/yolo-trt'),
                                       '--help'), capture_output=True, text=True, timeout=60)
    assert help_text.returncode == 0 and 'fetch-assets' in help_text.stdout


def test_installed_detector_answers_a_frame(workspace, bus_jpg):
    exe = workspace / 'install/yolo_trt_ros/lib/yolo_trt_ros/detector'
    with NodeProcess('', {'backend': 'onnxruntime', 'qos_reliability': 'reliable'},
                     command=sourced(workspace, str(exe))) as proc, ros_context() as context:
        proc.wait_for_output('-> ')
        client = Client(context)
        results = client.collect(Detection2DArray, 'detections')
        client.publisher(Image, 'image').publish(frame(bus_jpg, 'bgr8', 3, 'installed'))
        client.wait(lambda: results, 'detections from the installed detector')
        client.executor.shutdown()
    assert results[0].header.frame_id == 'installed'
    assert_bus_and_people(results[0])
