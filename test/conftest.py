"""Shared fixtures. ROS tests get a ROS_DOMAIN_ID of their own for this test run."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

# One domain per test run, chosen before rclpy is imported anywhere, so two runs on one
# machine (or CI beside a developer) never see each other's nodes.
os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(1, 100)))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
# The same transport profile the launch files select (large frames through shared memory).
os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(
    Path(__file__).resolve().parents[1] / 'config' / 'fastdds_large_frames.xml'))

from yolo_trt_ros.core import assets


def make_constant_model(path: Path, output: np.ndarray, input_hw: tuple[int, int] = (64, 64),
                        names: list[str] | None = None, batch: int | str = 1,
                        input_dtype=TensorProto.FLOAT) -> Path:
    """A small ONNX model with the given output layout: it returns `output` (per image,
    broadcast over the batch) whatever the pixels, so a test knows what to expect.

    The input still feeds the graph (0 x its mean), so ONNX Runtime cannot prune it.
    """
    h, w = input_hw
    per_image = output.astype(np.float32)[None]
    nodes = [
        helper.make_node('ReduceMean', ['images'], ['m'], axes=[1, 2, 3], keepdims=1),
        helper.make_node('Cast', ['m'], ['mf'], to=TensorProto.FLOAT),
        helper.make_node('Mul', ['mf', 'zero'], ['z']),  # (N, 1, 1, 1)
        helper.make_node('Reshape', ['z', 'zshape'], ['z3']),  # (N, 1, 1)
        helper.make_node('Add', ['z3', 'planted'], ['output0']),
    ]
    inits = [numpy_helper.from_array(np.zeros((1, 1, 1, 1), np.float32), 'zero'),
             numpy_helper.from_array(np.array([-1, 1, 1], np.int64), 'zshape'),
             numpy_helper.from_array(per_image, 'planted')]
    graph = helper.make_graph(
        nodes, 'planted',
        [helper.make_tensor_value_info('images', input_dtype, [batch, 3, h, w])],
        [helper.make_tensor_value_info('output0', TensorProto.FLOAT,
                                       [batch, *output.shape])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    if names is not None:
        helper.set_model_props(model, {'names': json.dumps(names)})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope='session')
def default_model() -> Path:
    path = assets.default_model_path()
    if not path.is_file():
        pytest.fail(f'default model {path} missing: run `bash pip_env/setup.sh` first')
    return path


@pytest.fixture(scope='session')
def bus_jpg() -> Path:
    path = assets.sample_image_paths()[0]
    if not path.is_file():
        pytest.fail(f'sample image {path} missing: run `bash pip_env/setup.sh` first')
    return path


@pytest.fixture(scope='session')
def zidane_jpg() -> Path:
    path = assets.sample_image_paths()[1]
    if not path.is_file():
        pytest.fail(f'sample image {path} missing: run `bash pip_env/setup.sh` first')
    return path


def pytest_runtest_setup(item):
    """Tests marked gpu run where a CUDA device answers, and are skipped (with the reason)
    elsewhere: CI has no GPU, the lent H100 has."""
    if item.get_closest_marker('gpu'):
        from yolo_trt_ros.core.cuda import probe_gpu
        gpu = probe_gpu()
        if gpu.count == 0:
            pytest.skip(f'needs a GPU: {gpu.reason}')
