"""The engine_builder node as a real process: a late subscriber gets the engine, and the
exit codes are right for success, fallback and failure."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import String
from support.ros import make_node, ros_context, spin_until

from yolo_trt_ros.core.models.synthetic import constant_output_model as make_constant_model
from yolo_trt_ros.ros.parameters import LATCHED_QOS

pytestmark = pytest.mark.ros


def start_builder(*params: str) -> subprocess.Popen:
    args = [a for p in params for a in ('-p', p)]
    return subprocess.Popen([sys.executable, '-m', 'yolo_trt_ros.ros.builder_node',
                             '--ros-args', *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out


def wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 120) -> list[str]:
    """Read the node's output until a line contains text (a deadline, not a sleep)."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f'no line with {text!r} from the builder: {"".join(lines)}')


@pytest.fixture
def model(tmp_path) -> Path:
    return make_constant_model(tmp_path / 'm.onnx', np.ones((6, 12), np.float32),
                               input_hw=(32, 32), names=['x', 'y'])


def test_late_subscriber_receives_the_engine_and_builder_exits_0(model, tmp_path):
    proc = start_builder(f'model:={model}', f'cache_dir:={tmp_path / "cache"}',
                         'flavour:=tensorrt_rtx', 'linger_s:=60.0')
    try:
        wait_for_line(proc, 'published engine')  # built and published before we subscribe
        got: list[String] = []
        with ros_context() as context:
            executor = SingleThreadedExecutor(context=context)
            node = make_node(context, 'late_listener', executor)
            node.create_subscription(String, 'engine', got.append, LATCHED_QOS)
            spin_until(executor, lambda: got, timeout=30, what='the engine message')
            executor.shutdown()
        rc, out = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0, out
    msg = json.loads(got[0].data)
    assert msg['backend'] == 'tensorrt' and Path(msg['engine_path']).is_file()
    assert msg['sidecar']['names'] == ['x', 'y'] and msg['cache_hit'] is False


@pytest.mark.parametrize('params,rc,text', [
    (['model:=/nonexistent/model.onnx'], 2, 'bad parameter: parameter model: /nonexistent/model.onnx does not exist'),
    (['model:=/dev/zero'], 2, 'parameter model: /dev/zero is not a regular file'),  # issue 17.4
    (['model:=JUNK'], 1, 'engine build failed: JUNK is not an ONNX model'),
    (['backend:=tensorrt', 'flavour:=tensorrt'], 1, 'engine build failed: TensorRT is not installed'),
    (['precision:=fp64'], 2, "bad parameter: parameter precision: 'fp64' is not fp32, fp16 or int8"),
    (['backend:=gpu'], 2, "bad parameter: parameter backend: 'gpu' is not auto"),
    # The core's own log lines (Python logging) reach the node's rclpy logger (rosout).
    (['backend:=auto', 'flavour:=tensorrt', 'linger_s:=0.0'], 0, '[engine_builder]: no TensorRT builder'),
    (['backend:=onnxruntime', 'linger_s:=0.0'], 0, '[engine_builder]: backend onnxruntime: no engine needed'),
    (['backend:=onnxruntime', 'linger_s:=0.0'], 0, 'published no engine (the detector runs ONNX Runtime) on /engine'),
])
def test_exit_codes_and_reasons(model, tmp_path, params, rc, text):
    if not any(p.startswith('model:=') for p in params):
        params.append(f'model:={model}')
    if 'model:=JUNK' in params:
        (tmp_path / 'junk.onnx').write_bytes(b'not a model')
        params = [p.replace('JUNK', str(tmp_path / 'junk.onnx')) for p in params]
        text = text.replace('JUNK', str(tmp_path / 'junk.onnx'))
    code, out = finish(start_builder(f'cache_dir:={tmp_path}', *params))
    assert code == rc, out
    assert text in out


def test_missing_default_model_points_at_fetch_assets(tmp_path):
    env = {**os.environ, 'YOLO_TRT_ROS_HOME': str(tmp_path / 'empty')}
    proc = subprocess.run([sys.executable, '-m', 'yolo_trt_ros.ros.builder_node'], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert 'the default model' in proc.stderr and 'run `yolo-trt fetch-assets`' in proc.stderr


@pytest.mark.parametrize('home', ['unset', 'a file'])
def test_the_nodes_run_without_a_usable_home(model, tmp_path, home):
    """Issue 17, failure 5: with HOME unset (as under some service managers) both nodes
    died in rclpy.init with an RCLError traceback (rcl's log directory)."""
    env = {k: v for k, v in os.environ.items() if k not in ('HOME', 'ROS_HOME', 'ROS_LOG_DIR')}
    if home == 'a file':
        (tmp_path / 'home').write_text('')
        env['HOME'] = str(tmp_path / 'home')
    common = ['--ros-args', '-p', f'model:={model}', '-p', 'backend:=onnxruntime']
    builder = subprocess.run([sys.executable, '-m', 'yolo_trt_ros.ros.builder_node', *common,
                              '-p', 'linger_s:=0.0'], env=env, capture_output=True, text=True,
                             timeout=120)
    out = builder.stdout + builder.stderr
    assert builder.returncode == 0, out
    assert 'Traceback' not in out and 'logging to ' in out and 'ROS_LOG_DIR' in out
    detector = subprocess.Popen([sys.executable, '-m', 'yolo_trt_ros.ros.detector_node',
                                 *common], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_line(detector, '-> ')  # subscribed: it runs
    finally:
        detector.send_signal(signal.SIGINT)
        rc, rest = finish(detector, 20)
    assert rc == 0 and 'Traceback' not in rest
