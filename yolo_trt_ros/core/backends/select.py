"""Choosing a backend: `auto` takes TensorRT where a GPU, a TensorRT runtime and an
engine are all present and TensorRT starts, else ONNX Runtime, and always says why."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from yolo_trt_ros.core.backends.base import Backend
from yolo_trt_ros.core.defaults import BACKEND, BACKENDS
from yolo_trt_ros.core.errors import BackendError, YoloTrtError
from yolo_trt_ros.core.gpu.cuda import GpuInfo, probe_gpu


@dataclass(frozen=True)
class RuntimeParts:
    """The TensorRT module and CUDA runtime to run engines with; None: the real ones.
    Tests hand the named TensorRT runtime double in here (the one boundary no machine of
    this project can run)."""

    trt: ModuleType | None = None
    cuda: object | None = None


REAL_RUNTIME = RuntimeParts()


def _onnxruntime(model: Path, reason: str) -> Backend:
    from yolo_trt_ros.core.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(model, reason=reason)


def _tensorrt(engine: Path | None, reason: str, parts: RuntimeParts, why: str) -> Backend:
    from yolo_trt_ros.core.backends.tensorrt import TensorRTBackend

    if engine is None:
        raise BackendError(f'backend tensorrt needs an engine ({why or "none given"}): build '
                           f'one with `yolo-trt build` (or the engine_builder node) first')
    return TensorRTBackend(engine, trt=parts.trt, cuda=parts.cuda, reason=reason)


def open_backend(model: Path, backend: str = BACKEND, engine: Path | None = None,
                 engine_why: str = '', parts: RuntimeParts = REAL_RUNTIME,
                 gpu: GpuInfo | None = None) -> Backend:
    """Open the backend for `model` (ONNX) or its built `engine`. backend: auto,
    onnxruntime or tensorrt; engine_why: why there is no engine, when there is none. The
    result's info.reason says why it was chosen."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend '{backend}': use one of {', '.join(BACKENDS)}")
    if backend == 'onnxruntime':
        return _onnxruntime(model, 'requested')
    if backend == 'tensorrt':
        return _tensorrt(engine, 'requested', parts, engine_why)
    gpu = gpu or probe_gpu()
    if gpu.count == 0:
        return _onnxruntime(model, f'auto: {gpu.reason}; ONNX Runtime on the CPU')
    if engine is None:
        return _onnxruntime(model, f'auto: no TensorRT engine for this model '
                                   f'({engine_why or "none found"}; build one with `yolo-trt '
                                   f'build`); ONNX Runtime on the CPU')
    try:
        return _tensorrt(Path(engine), f'auto: {gpu.name} and engine {engine}', parts, '')
    except YoloTrtError as exc:
        return _onnxruntime(model, f'auto: TensorRT unusable ({exc}); ONNX Runtime on the CPU')
