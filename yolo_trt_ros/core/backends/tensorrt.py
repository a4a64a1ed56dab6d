"""TensorRT backend (TensorRT 10+ API; also `tensorrt_rtx`).

Tensors are addressed by name. Device buffers and pinned host buffers are allocated once
per input shape and reused; the input is copied in, the engine enqueued and the outputs
copied back asynchronously on the backend's own stream, with one synchronisation per
call (also when a step fails, so nothing is left in flight into a buffer we reuse). Every
TensorRT boolean return and every CUDA call is checked; an error quotes the TensorRT
messages of its own call. Resources live in an ExitStack: `close()` (or leaving the `with`
block) synchronises the stream, then frees them in reverse order.

The engine is read under the trust policy (core/trust.py) with its sidecar, which says
which TensorRT built it (that one loads it), the class names and the output layout.
"""
from __future__ import annotations

import ctypes
import importlib
import logging
import os
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType

import numpy as np

from yolo_trt_ros.core.backends.base import BackendInfo, InputProfile, TensorSpec
from yolo_trt_ros.core.backends.trt_module import (
    RUNTIME_MODULE_ENV,
    check_built_by,
    flavour_of,
    import_tensorrt,
    make_logger,
)
from yolo_trt_ros.core.errors import BackendError, CudaError, EngineError
from yolo_trt_ros.core.gpu.cuda import CudaRuntime, probe_gpu
from yolo_trt_ros.core.store.cache import LoadedEngine, load_engine

_LOG = logging.getLogger(__name__)


def runtime_module(loaded: LoadedEngine) -> tuple[ModuleType, str]:
    """The TensorRT that built the engine (from its sidecar), and a note for the log.
    Another version of that TensorRT cannot load it: say so instead of failing inside."""
    override = os.environ.get(RUNTIME_MODULE_ENV)
    if override:
        trt = importlib.import_module(override)
        if loaded.sidecar is not None:
            check_built_by(trt, loaded.sidecar.get('key', {}))
        return trt, f'runtime module {override} (${RUNTIME_MODULE_ENV}, benchmarks only)'
    if loaded.sidecar is None:
        trt = import_tensorrt()
        return trt, (f'no sidecar beside {loaded.path.name}: loading with {flavour_of(trt)} '
                     f'{trt.__version__}, class names unknown')
    key = loaded.sidecar.get('key', {})
    trt = import_tensorrt(key.get('flavour'))
    check_built_by(trt, key)
    return trt, ''


def _dims(shape) -> tuple[int | None, ...]:
    return tuple(int(d) if int(d) >= 0 else None for d in shape)


def _numpy_type(trt: ModuleType, name: str, dtype) -> np.dtype:
    """The numpy type of a tensor. trt.nptype raises TypeError for BF16, FP8, INT4, FP4 and
    E8M0: such an engine is refused with our error (so `auto` falls back)."""
    try:
        return np.dtype(trt.nptype(dtype))
    except TypeError as exc:
        raise EngineError(f"tensor '{name}' is {getattr(dtype, 'name', dtype)}, which has no "
                          f'numpy type: this backend passes tensors as numpy arrays; build the '
                          f'engine from a model with float32, float16 or integer inputs and '
                          f'outputs, or use backend onnxruntime') from exc


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
    """Runs a serialized engine. `trt` and `cuda` default to the TensorRT that built the
    engine and the CUDA runtime; tests that cannot run a GPU pass a named double here."""

    def __init__(self, engine_path: str | Path, trt: ModuleType | None = None,
                 cuda: CudaRuntime | None = None, reason: str = '') -> None:
        loaded = load_engine(Path(engine_path))
        note = ''
        if trt is None:
            trt, note = runtime_module(loaded)
        elif loaded.sidecar is not None:
            check_built_by(trt, loaded.sidecar.get('key', {}))
        self._trt = trt
        if cuda is None:
            gpu = probe_gpu()
            if gpu.count == 0:
                raise BackendError(f'TensorRT needs an NVIDIA GPU: {gpu.reason}')
            cuda = CudaRuntime()
        self._cuda = cuda
        self._sidecar = loaded.sidecar or {}
        self._messages: list[str] = []  # TensorRT's warnings and errors of the current call
        self._stream: int | None = None
        self._stack = ExitStack()
        self._buffers: _Buffers | None = None
        # Buffers per input shape, kept: a multi-camera batch that varies between 1 and N
        # frames allocates once per size, then only re-points the engine at them.
        self._by_shape: dict[tuple[int, ...], _Buffers] = {}
        self._shape: tuple[int, ...] | None = None  # the shape context and bindings hold
        # Times the context was set to a shape: a CUDA graph of its enqueue is valid only
        # while this stays as it was at the capture (TensorRT re-does work after a change).
        self.shape_changes = 0
        try:
            self._load(loaded)
        except BaseException:
            self._stack.close()
            raise
        reason = '; '.join(r for r in (reason, note) if r)
        self.info = BackendInfo('tensorrt', 'cuda:0', reason,
                                dict(self._sidecar.get('metadata') or {}),
                                self._sidecar.get('format'), str(loaded.path))

    def _load(self, loaded: LoadedEngine) -> None:
        trt = self._trt
        self._logger = make_logger(trt, self._messages)
        try:
            self._runtime = trt.Runtime(self._logger)
        except TypeError as exc:  # the bindings raise when createInferRuntime gives nullptr
            raise EngineError(f'{flavour_of(trt)} could not create a runtime ({exc}): '
                              f'{self._last_messages() or "no CUDA driver or GPU it can use"}'
                              ) from exc
        self._engine = self._runtime.deserialize_cuda_engine(loaded.plan)
        if self._engine is None:
            raise EngineError(self._refusal(loaded))
        self._path = loaded.path
        self._context = None
        self.resume()
        inputs, outputs = [], []
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            spec = TensorSpec(name, _dims(self._engine.get_tensor_shape(name)),
                              _numpy_type(trt, name, self._engine.get_tensor_dtype(name)))
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs).append(spec)
        if len(inputs) != 1:
            raise EngineError(f'{loaded.path}: expected one image input, found '
                              f'{[s.name for s in inputs]}')
        self.input = inputs[0]
        self.outputs = tuple(outputs)
        self.profile = self._input_profile()
        self._stream = self._cuda.stream_create()
        self._stack.callback(self._cuda.stream_destroy, self._stream)

    def _input_profile(self) -> InputProfile:
        if not self.input.is_dynamic:
            return InputProfile.of(self.input)
        lo, opt, hi = (tuple(int(d) for d in s) for s in
                       self._engine.get_tensor_profile_shape(self.input.name, 0))
        return InputProfile(lo, opt, hi)

    def _last_messages(self) -> str:
        return '; '.join(self._messages[-3:])

    def _refusal(self, loaded: LoadedEngine) -> str:
        """Why TensorRT refused a plan it was meant to load, with the fix for that cause."""
        target = (loaded.sidecar or {}).get('key', {}).get('target', {})
        gpu = probe_gpu()
        built_cc = target.get('compute_capability') if isinstance(target, dict) else None
        if gpu.count and isinstance(built_cc, list) and tuple(built_cc) != gpu.compute_capability:
            return (f'TensorRT refused engine {loaded.path}: it was built for '
                    f"{target.get('gpu')} (sm_{''.join(map(str, built_cc))}), this GPU is "
                    f"{gpu.name} (sm_{''.join(map(str, gpu.compute_capability))}): rebuild it "
                    f'here (yolo-trt build --force)')
        detail = self._last_messages()
        return (f'TensorRT refused engine {loaded.path}'
                f'{f" ({detail})" if detail else ""}: corrupt, or built for another GPU or '
                f'TensorRT; rebuild it (yolo-trt build --force)')

    # -- shapes and buffers ------------------------------------------------------------
    def _prepare(self, shape: tuple[int, ...]) -> _Buffers:
        """Make shape current: set it on the context, allocate its buffers the first time,
        and point every tensor at them. Until all of that succeeded, no shape is current,
        so a failure half-way can never leave the context at one shape and the bindings at
        another (the next call starts again from set_input_shape)."""
        if self._context is None:
            raise BackendError('the backend is suspended (an inactive detector): resume() it')
        if not self.profile.accepts(shape):
            fixed = '' if self.input.is_dynamic else ' (a static engine takes only its own)'
            raise BackendError(f"input '{self.input.name}': shape {list(shape)} is outside "
                               f'the engine profile min {list(self.profile.min)} .. max '
                               f'{list(self.profile.max)}{fixed}')
        self._shape = self._buffers = None
        self.shape_changes += 1
        self._messages.clear()
        ctx = self._context
        if self.input.is_dynamic and not ctx.set_input_shape(self.input.name, shape):
            raise BackendError(f"input '{self.input.name}': TensorRT refused shape "
                               f'{list(shape)} ({self._last_messages() or "outside the profile"})')
        buffers = self._by_shape.get(shape) or self._allocate(shape)
        for name, ptr in buffers.device.items():
            if not ctx.set_tensor_address(name, ptr):
                detail = self._last_messages()
                raise BackendError(f"set_tensor_address failed for tensor '{name}'"
                                   f'{f" ({detail})" if detail else ""}')
        self._shape, self._buffers = shape, buffers
        return buffers

    def _allocate(self, shape: tuple[int, ...]) -> _Buffers:
        """Buffers for shape; on any failure the part already allocated is freed."""
        with ExitStack() as partial:
            buffers = _Buffers(self._cuda, partial)
            buffers.add(self.input.name, shape, self.input.dtype)
            for spec in self.outputs:
                out_shape = tuple(int(d) for d in self._context.get_tensor_shape(spec.name))
                if any(d < 0 for d in out_shape):  # known only after a run (NonZero, NMS)
                    raise BackendError(f"output '{spec.name}' has a data-dependent shape "
                                       f'{list(out_shape)} (TensorRT reports -1 for sizes '
                                       f'that depend on the pixels): this backend sizes its '
                                       f'buffers from the input shape; use backend '
                                       f'onnxruntime for this model')
                buffers.add(spec.name, out_shape, spec.dtype)
            buffers.stack = partial.pop_all()  # freed by suspend() or close()
        self._by_shape[shape] = buffers
        return buffers

    def _buffers_for(self, shape: tuple[int, ...]) -> _Buffers:
        shape = tuple(int(d) for d in shape)
        if shape == self._shape and self._buffers is not None:
            return self._buffers
        return self._prepare(shape)

    # -- running -------------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        if batch.dtype != self.input.dtype:
            raise BackendError(f"input '{self.input.name}' wants {self.input.dtype}, "
                               f'got {batch.dtype}')
        buffers = self._buffers_for(batch.shape)
        host_in = buffers.host[self.input.name]
        np.copyto(host_in, batch)
        return self._run(buffers, upload=True)

    def device_io(self) -> TensorRTBackend | None:
        # Device I/O only where the buffers are GPU memory that kernels can reach.
        return self if getattr(self._cuda, 'device_memory', False) else None

    @property
    def stream(self) -> int:
        if self._stream is None:
            raise BackendError('the TensorRT backend is closed')
        return self._stream

    def input_ptr(self, shape: tuple[int, ...]) -> int:
        return self._buffers_for(tuple(shape)).device[self.input.name]

    def run(self, shape: tuple[int, ...], download: bool = True) -> list[np.ndarray]:
        return self._run(self._buffers_for(tuple(shape)), upload=False, download=download)

    def graph_refusal(self) -> str:
        """Why this engine's enqueue may not be captured in a CUDA graph on the stream, or
        ''. TensorRT-RTX says so itself (IExecutionContext.is_stream_capturable: runtime
        kernel selection can make it refuse); TensorRT 10 and 11 report a failure in the
        capture itself, which ends it."""
        capturable = getattr(self._context, 'is_stream_capturable', None)
        if capturable is not None and not capturable(self.stream):
            return f'{flavour_of(self._trt)} says this engine cannot be captured on its stream'
        return ''

    def output_buffer(self, shape: tuple[int, ...], index: int = 0) -> tuple[int, tuple[int, ...]]:
        buffers = self._buffers_for(tuple(shape))
        name = self.outputs[index].name
        return buffers.device[name], buffers.host[name].shape

    def _run(self, buffers: _Buffers, upload: bool, download: bool = True) -> list[np.ndarray]:
        """Queue (upload,) the engine and the output downloads; one synchronisation, on the
        failure path too: no copy may still be in flight into a pinned buffer that the
        next call overwrites. Without download the work stays queued on the stream for the
        kernel that reads the outputs on the device (it synchronises)."""
        self._messages.clear()
        try:
            if upload:
                host_in = buffers.host[self.input.name]
                self._cuda.copy_to_device(buffers.device[self.input.name], host_in.ctypes.data,
                                          host_in.nbytes, self._stream)
            if not self._context.execute_async_v3(self._stream):
                raise BackendError('TensorRT execute_async_v3 failed'
                                   f'{f": {self._last_messages()}" if self._messages else ""}')
            if not download:
                return []
            for spec in self.outputs:
                host = buffers.host[spec.name]
                self._cuda.copy_to_host(host.ctypes.data, buffers.device[spec.name],
                                        host.nbytes, self._stream)
            self._cuda.stream_synchronize(self._stream)
        except BaseException:
            self._drain()
            raise
        return [buffers.host[spec.name] for spec in self.outputs]

    def _drain(self) -> None:
        try:
            if self._cuda.capturing(self._stream):
                return  # a failure while a CUDA graph is captured: its owner ends the capture
            self._cuda.stream_synchronize(self._stream)
        except CudaError as exc:  # the error being raised says more; this one is logged
            _LOG.error('stream synchronisation after a failure: %s', exc)

    # -- the lifecycle's inactive state ------------------------------------------------------
    def suspend(self) -> None:
        """Give back the GPU memory of running (the execution context's activation memory
        and every I/O buffer) and keep the engine: an inactive detector holds only the
        weights and resumes without deserializing again. Synchronises first."""
        if self._stream is not None:
            self._drain()
        self._free_buffers()
        self._context = None  # its device memory goes with it

    def resume(self) -> None:
        """Make the execution context again (after suspend(); buffers come on first use)."""
        if self._context is None:
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise EngineError(f'cannot create an execution context for {self._path} '
                                  f'({self._last_messages() or "out of GPU memory?"})')

    def _free_buffers(self) -> None:
        self._buffers = self._shape = None
        for buffers in self._by_shape.values():
            buffers.stack.close()
        self._by_shape.clear()

    def close(self) -> None:
        """Synchronise first: work queued by run(download=False) may still use the buffers
        (execute_async_v3: releasing them before stream synchronization is undefined)."""
        if self._stream is not None:
            self._drain()
            self._stream = None
        self._free_buffers()
        self._stack.close()
        self._context = self._engine = self._runtime = None

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
