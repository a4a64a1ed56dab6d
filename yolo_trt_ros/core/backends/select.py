"""Choosing a backend: `auto` takes TensorRT where a GPU, a TensorRT runtime and an
engine are all present, else ONNX Runtime, and always says why."""
from __future__ import annotations

from pathlib import Path

from ..cuda import probe_gpu
from ..defaults import BACKENDS
from ..errors import BackendError, YoloTrtError
from .base import Backend


def _onnxruntime(model: Path, reason: str) -> Backend:
    from .onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(model, reason=reason)


def _tensorrt(engine: Path | None, reason: str) -> Backend:
    from .tensorrt import TensorRTBackend

    if engine is None:
        raise BackendError('backend tensorrt needs an engine: build one with '
                           '`yolo-trt build` (or the engine_builder node) first')
    return TensorRTBackend(engine, reason=reason)


def open_backend(model: Path, backend: str = 'auto', engine: Path | None = None) -> Backend:
    """Open the backend for `model` (ONNX) or its built `engine`. backend: auto,
    onnxruntime or tensorrt. The result's info.reason says why it was chosen."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend '{backend}': use one of {', '.join(BACKENDS)}")
    if backend == 'onnxruntime':
        return _onnxruntime(model, 'requested')
    if backend == 'tensorrt':
        return _tensorrt(engine, 'requested')
    gpu = probe_gpu()
    if gpu.count == 0:
        return _onnxruntime(model, f'auto: {gpu.reason}; ONNX Runtime on the CPU')
    if engine is None or not Path(engine).is_file():
        return _onnxruntime(model, 'auto: no TensorRT engine for this model (build one with '
                                   '`yolo-trt build`); ONNX Runtime on the CPU')
    try:
        return _tensorrt(Path(engine), f'auto: {gpu.name} and engine {engine}')
    except YoloTrtError as exc:
        return _onnxruntime(model, f'auto: TensorRT unusable ({exc}); ONNX Runtime on the CPU')
