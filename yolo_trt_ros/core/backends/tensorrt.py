"""TensorRT backend (TensorRT 10+ API; also `tensorrt_rtx`).

Tensors are addressed by name. Device buffers and pinned host buffers are allocated once
per input shape and reused; the input is copied in, the engine enqueued and the outputs
copied back asynchronously on the backend's own stream, with one synchronisation per
call. Every TensorRT boolean return and every CUDA call is checked. Resources live in an
ExitStack: `close()` (or leaving the `with` block) frees them in reverse order.
"""
from __future__ import annotations

import ctypes
import importlib
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType

import numpy as np

from ..cuda import CudaRuntime
from ..defaults import FLAVOURS
from ..errors import BackendError, EngineError
from .base import BackendInfo, TensorSpec


def import_tensorrt(flavour: str | None = None) -> ModuleType:
    """The TensorRT Python module: `flavour` if given, else the first importable one."""
    errors = []
    for name in ([flavour] if flavour else FLAVOURS):
        if name not in FLAVOURS:
            raise BackendError(f"unknown TensorRT flavour '{name}': use {' or '.join(FLAVOURS)}")
        try:
            return importlib.import_module(name)
        except ImportError as exc:  # the PyPI 'tensorrt' stub raises on import too
            errors.append(f'{name}: {exc}')
    raise BackendError('TensorRT is not installed (' + '; '.join(errors) + ')')


def flavour_of(trt: ModuleType) -> str:
    return trt.__name__.split('.')[0]


def _dims(shape) -> tuple[int | None, ...]:
    return tuple(int(d) if int(d) >= 0 else None for d in shape)


class _Buffers:
    """Device + pinned host memory for every I/O tensor at one input shape."""

    def __init__(self, cuda: CudaRuntime, stack: ExitStack) -> None:
        self.cuda = cuda
        self.stack = stack
        self.device: dict[str, int] = {}
        self.host: dict[str, np.ndarray] = {}

    def add(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        nbytes = int(np.prod(shape)) * dtype.itemsize
        dptr = self.cuda.malloc(nbytes)
        self.stack.callback(self.cuda.free, dptr)
        hptr = self.cuda.malloc_host(nbytes)
        self.stack.callback(self.cuda.free_host, hptr)
        raw = (ctypes.c_byte * max(nbytes, 1)).from_address(hptr)
        self.device[name] = dptr
        self.host[name] = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)


class TensorRTBackend:
    """Runs a serialized engine. `trt` and `cuda` default to the installed TensorRT and
    the CUDA runtime; tests that cannot run a GPU pass a named double here."""

    def __init__(self, engine_path: str | Path, trt: ModuleType | None = None,
                 cuda: CudaRuntime | None = None, reason: str = '',
                 metadata: dict[str, str] | None = None) -> None:
        self._trt = trt or import_tensorrt()
        self._cuda = cuda or CudaRuntime()
        self._stack = ExitStack()
        self._buffers: _Buffers | None = None
        # Buffers per input shape, kept: a multi-camera batch that varies between 1 and N
        # frames allocates once per size, then only re-points the engine at them.
        self._by_shape: dict[tuple[int, ...], _Buffers] = {}
        self._shape: tuple[int, ...] | None = None
        try:
            self._load(Path(engine_path))
        except BaseException:
            self._stack.close()
            raise
        self.info = BackendInfo('tensorrt', 'cuda:0', reason, dict(metadata or {}))

    def _load(self, engine_path: Path) -> None:
        trt = self._trt
        try:
            plan = engine_path.read_bytes()
        except OSError as exc:
            raise EngineError(f'cannot read engine {engine_path}: {exc.strerror}') from exc
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if self._runtime is None:
            raise EngineError('TensorRT could not create a runtime')
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise EngineError(f'TensorRT refused engine {engine_path}: built for another '
                              f'TensorRT version or GPU, or corrupt; rebuild it '
                              f'(yolo-trt build --force)')
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise EngineError(f'cannot create an execution context for {engine_path}')
        inputs, outputs = [], []
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            spec = TensorSpec(name, _dims(self._engine.get_tensor_shape(name)),
                              np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))))
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs).append(spec)
        if len(inputs) != 1:
            raise EngineError(f'{engine_path}: expected one image input, found '
                              f'{[s.name for s in inputs]}')
        self.input = inputs[0]
        self.outputs = tuple(outputs)
        self._stream = self._cuda.stream_create()
        self._stack.callback(self._cuda.stream_destroy, self._stream)

    def _prepare(self, shape: tuple[int, ...]) -> _Buffers:
        """Make shape current: set it on the context, allocate its buffers the first time,
        and point every tensor at them."""
        ctx = self._context
        if self.input.is_dynamic and not ctx.set_input_shape(self.input.name, shape):
            raise BackendError(f"input '{self.input.name}': shape {list(shape)} is outside "
                               f'the engine profile {list(self.input.shape)}')
        buffers = self._by_shape.get(shape)
        if buffers is None:
            buffers = _Buffers(self._cuda, self._stack)
            buffers.add(self.input.name, shape, self.input.dtype)
            for spec in self.outputs:
                out_shape = tuple(int(d) for d in ctx.get_tensor_shape(spec.name))
                if any(d < 0 for d in out_shape):
                    raise BackendError(f"output '{spec.name}' has unresolved shape "
                                       f'{list(out_shape)}')
                buffers.add(spec.name, out_shape, spec.dtype)
            self._by_shape[shape] = buffers
        for name, ptr in buffers.device.items():
            if not ctx.set_tensor_address(name, ptr):
                raise BackendError(f"set_tensor_address failed for tensor '{name}'")
        self._shape = shape
        self._buffers = buffers
        return buffers

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        if batch.dtype != self.input.dtype:
            raise BackendError(f"input '{self.input.name}' wants {self.input.dtype}, "
                               f'got {batch.dtype}')
        buffers = self._buffers_for(batch.shape)
        host_in = buffers.host[self.input.name]
        np.copyto(host_in, batch)
        self._cuda.copy_to_device(buffers.device[self.input.name], host_in.ctypes.data,
                                  host_in.nbytes, self._stream)
        return self._execute(buffers)

    # -- for GPU preprocessing: the input is written on the device, on this stream -------
    @property
    def stream(self) -> int:
        return self._stream

    def input_device_ptr(self, shape: tuple[int, ...]) -> int:
        """The device input buffer for shape (allocated on the first call for it)."""
        return self._buffers_for(tuple(shape)).device[self.input.name]

    def infer_device(self, shape: tuple[int, ...]) -> list[np.ndarray]:
        """Run on the input already queued into input_device_ptr(shape) on `stream`."""
        return self._execute(self._buffers_for(tuple(shape)))

    def _buffers_for(self, shape: tuple[int, ...]) -> _Buffers:
        return self._buffers if shape == self._shape else self._prepare(shape)

    def _execute(self, buffers: _Buffers) -> list[np.ndarray]:
        """Enqueue the engine and the output downloads; one synchronisation."""
        if not self._context.execute_async_v3(self._stream):
            raise BackendError('TensorRT execute_async_v3 failed (see the TensorRT log)')
        for spec in self.outputs:
            host = buffers.host[spec.name]
            self._cuda.copy_to_host(host.ctypes.data, buffers.device[spec.name], host.nbytes,
                                    self._stream)
        self._cuda.stream_synchronize(self._stream)
        return [buffers.host[spec.name] for spec in self.outputs]

    def close(self) -> None:
        self._buffers = None
        self._by_shape.clear()
        self._stack.close()
        self._context = self._engine = self._runtime = None

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
