"""The TensorRT backend: its TensorRT API use checked against the installed tensorrt_rtx
bindings, and its logic (buffers, shapes, checks, clean-up) run against the named test
double for the TensorRT runtime (gpu_runtime_double.py), with real ONNX Runtime numbers."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from conftest import make_constant_model
from gpu_runtime_double import (
    CudaDeviceAccess,
    HostMemoryCudaDouble,
    TensorRTRuntimeDouble,
    plan_for,
)

from yolo_trt_ros.core.backends.onnxruntime import OnnxRuntimeBackend
from yolo_trt_ros.core.backends.tensorrt import TensorRTBackend
from yolo_trt_ros.core.cuda import CudaRuntime
from yolo_trt_ros.core.detector import Detector, DetectorConfig
from yolo_trt_ros.core.errors import BackendError, EngineError
from yolo_trt_ros.core.images import read_image

ROOT = Path(__file__).resolve().parents[1]
# Modules that call TensorRT, and which TensorRT class each receiver name stands for.
TRT_MODULES = [ROOT / 'yolo_trt_ros' / 'core' / 'backends' / 'tensorrt.py']
RECEIVERS = {'engine': 'ICudaEngine', 'context': 'IExecutionContext', 'ctx': 'IExecutionContext',
             'runtime': 'Runtime'}


def trt_uses(source: str) -> set[tuple[str, str]]:
    """(class or 'module', attribute) for every TensorRT attribute the source touches:
    `trt.X[.Y]` chains, and attributes of variables named like engine/context/runtime."""
    uses = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        chain, base = [node.attr], node.value
        while isinstance(base, ast.Attribute):
            chain.append(base.attr)
            base = base.value
        chain.reverse()
        if isinstance(base, ast.Name) and base.id == 'trt':
            uses.add(('module', '.'.join(chain)))
        elif isinstance(base, ast.Name) and base.id == 'self' and len(chain) == 2:
            owner = RECEIVERS.get(chain[0].lstrip('_'))
            if owner:
                uses.add((owner, chain[1]))
        elif isinstance(base, ast.Name) and base.id in RECEIVERS and len(chain) == 1:
            uses.add((RECEIVERS[base.id], chain[0]))
    return uses


def missing_in(trt, uses) -> list[str]:
    missing = []
    for owner, attr in sorted(uses):
        obj = trt if owner == 'module' else getattr(trt, owner)
        for part in attr.split('.'):
            if not hasattr(obj, part):
                missing.append(f'{owner}.{attr}')
                break
            obj = getattr(obj, part)
    return missing


def test_every_tensorrt_attribute_used_exists_in_tensorrt_rtx():
    import tensorrt_rtx as trt
    uses = set().union(*(trt_uses(p.read_text()) for p in TRT_MODULES))
    assert ('IExecutionContext', 'execute_async_v3') in uses  # the scan sees the calls
    assert ('module', 'TensorIOMode.INPUT') in uses
    assert missing_in(trt, uses) == []


def test_the_attribute_check_catches_a_misspelling():
    import tensorrt_rtx as trt
    uses = trt_uses('def f(self, trt):\n    self._engine.get_tensor_shap("x")\n'
                    '    trt.TensorIOMode.INPT\n    ctx.execute_async_v2(0)\n')
    assert missing_in(trt, uses) == ['ICudaEngine.get_tensor_shap', 'IExecutionContext.execute_async_v2',
                                     'module.TensorIOMode.INPT']


@pytest.fixture
def model(tmp_path):
    out = np.random.default_rng(0).uniform(0, 1, (7, 10)).astype(np.float32)
    return make_constant_model(tmp_path / 'm.onnx', out, input_hw=(32, 32), batch='N')


def engine_file(tmp_path, model) -> Path:
    path = tmp_path / 'm.engine'
    path.write_bytes(plan_for(model))
    return path


def test_outputs_equal_onnxruntime_and_buffers_are_reused(tmp_path, model):
    cuda = HostMemoryCudaDouble()
    trt = TensorRTRuntimeDouble()
    batch = np.random.default_rng(1).uniform(0, 1, (2, 3, 32, 32)).astype(np.float32)
    with TensorRTBackend(engine_file(tmp_path, model), trt=trt, cuda=cuda) as backend, \
            OnnxRuntimeBackend(model) as reference:
        assert backend.input.name == 'images' and backend.input.shape == (None, 3, 32, 32)
        assert [o.name for o in backend.outputs] == ['output0']
        first = backend.infer(batch)[0].copy()
        allocations = cuda.allocations
        for _ in range(3):
            out = backend.infer(batch)[0]
        assert cuda.allocations == allocations == 4  # 2 tensors x (device + pinned), once
        np.testing.assert_allclose(out, reference.infer(batch)[0], rtol=1e-6)
        np.testing.assert_array_equal(first, out)
        assert cuda.synchronized == 4  # one synchronisation per call
        shapes = [c for c in trt.calls if c[0] == 'set_input_shape']
        assert shapes == [('set_input_shape', 'images', (2, 3, 32, 32))]
        # A new batch size gets its buffers once; switching back and forth (a multi-camera
        # batch whose size varies) allocates nothing more and stays correct.
        one = backend.infer(batch[:1])[0].copy()
        assert one.shape == (1, 7, 10) and cuda.allocations == 8
        for _ in range(3):
            np.testing.assert_allclose(backend.infer(batch)[0], reference.infer(batch)[0])
            np.testing.assert_allclose(backend.infer(batch[:1])[0], one)
        assert cuda.allocations == 8
        sizes = [c[2][0] for c in trt.calls if c[0] == 'set_input_shape']
        assert sizes == [2, 1, 2, 1, 2, 1, 2, 1]  # the context follows every change
    assert cuda.live == 0 and not cuda.streams  # everything freed on exit


@pytest.mark.parametrize('fail,error,message', [
    ('deserialize', EngineError, 'TensorRT refused engine .* rebuild it'),
    ('context', EngineError, 'cannot create an execution context'),
    ('address', BackendError, "set_tensor_address failed for tensor 'images'"),
    ('execute', BackendError, 'execute_async_v3 failed'),
])
def test_every_tensorrt_failure_is_reported_and_nothing_leaks(tmp_path, model, fail, error, message):
    cuda = HostMemoryCudaDouble()
    batch = np.zeros((1, 3, 32, 32), np.float32)
    with pytest.raises(error, match=message):
        with TensorRTBackend(engine_file(tmp_path, model), trt=TensorRTRuntimeDouble(fail),
                             cuda=cuda) as backend:
            backend.infer(batch)
    assert cuda.live == 0 and not cuda.streams


def test_shape_outside_the_profile_and_wrong_dtype(tmp_path, model):
    cuda = HostMemoryCudaDouble()
    with TensorRTBackend(engine_file(tmp_path, model), trt=TensorRTRuntimeDouble(), cuda=cuda) as b:
        with pytest.raises(BackendError, match=r"shape \[1, 3, 64, 64\] is outside the engine profile"):
            b.infer(np.zeros((1, 3, 64, 64), np.float32))
        with pytest.raises(BackendError, match="wants float32, got float64"):
            b.infer(np.zeros((1, 3, 32, 32), np.float64))
    assert cuda.live == 0


def test_missing_engine_file(tmp_path):
    with pytest.raises(EngineError, match='cannot read engine'):
        TensorRTBackend(tmp_path / 'none.engine', trt=TensorRTRuntimeDouble(),
                        cuda=HostMemoryCudaDouble())


@pytest.mark.gpu
def test_real_cuda_memory_with_the_runtime_double(tmp_path, model):
    batch = np.random.default_rng(2).uniform(0, 1, (3, 3, 32, 32)).astype(np.float32)
    double = TensorRTRuntimeDouble(memory=CudaDeviceAccess())
    with TensorRTBackend(engine_file(tmp_path, model), trt=double,
                         cuda=CudaRuntime()) as backend, OnnxRuntimeBackend(model) as ref:
        for _ in range(3):  # pinned + device buffers reused across calls
            np.testing.assert_allclose(backend.infer(batch)[0], ref.infer(batch)[0], rtol=1e-6)
        one = batch[1:2] * 0.5  # a new batch size re-plans the buffers
        np.testing.assert_allclose(backend.infer(one)[0], ref.infer(one)[0], rtol=1e-6)


@pytest.mark.gpu
def test_gpu_path_detects_what_the_cpu_path_detects(tmp_path, default_model, bus_jpg):
    """Frame -> GPU letterbox kernel -> engine input on the device -> (runtime double) ->
    outputs: the same detections as the CPU path with ONNX Runtime."""
    engine = tmp_path / 'default.engine'
    engine.write_bytes(plan_for(default_model))
    backend = TensorRTBackend(engine, trt=TensorRTRuntimeDouble(memory=CudaDeviceAccess()))
    image = read_image(str(bus_jpg))
    with Detector(backend, None, 'yolov8') as gpu, \
            Detector.open(DetectorConfig(default_model, backend='onnxruntime')) as cpu:
        assert gpu.preprocess_device == 'gpu' and cpu.preprocess_device == 'cpu'
        for _ in range(3):  # buffers and kernel reused
            a = gpu.detect([image])[0]
        b = cpu.detect([image])[0]
    assert a.class_ids.tolist() == b.class_ids.tolist()
    np.testing.assert_allclose(a.boxes, b.boxes, atol=3.0)  # px; inputs differ by <= 1/255
    np.testing.assert_allclose(a.scores, b.scores, atol=0.02)
