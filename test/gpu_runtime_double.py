"""TEST DOUBLE for the one boundary nothing here can run: the TensorRT runtime.

No machine in this project can deserialize and execute a TensorRT engine (see
../shared/notes/gpu-device.md), so the backend's tests hand it these stand-ins:

- `TensorRTRuntimeDouble`: a module-like object with the TensorRT 10/11 runtime API that the
  backend uses (Logger, Runtime, ICudaEngine, IExecutionContext by tensor name). Its
  "engine" is an ONNX model run by the real ONNX Runtime, so outputs are real numbers. A
  double plan names its ONNX model (`plan_for`); a real engine built by tensorrt_rtx is
  accepted once registered with `register_engine` (the ONNX it was built from runs).
- `HostMemoryCudaDouble`: the CUDA runtime calls of `yolo_trt_ros.core.cuda.CudaRuntime`
  served from host memory, for machines without a GPU. On a GPU machine the tests use the
  real CudaRuntime with `CudaDeviceAccess` instead.

The double is as strict as TensorRT wherever the backend could get something wrong; every
rule names the part of the TensorRT 10 API documentation (NvInferRuntime.h,
IExecutionContext) it mirrors:
- Runtime creation failure raises TypeError, as the real pybind factory does when
  createInferRuntime returns nullptr ("factory function returned nullptr").
- deserialize_cuda_engine returns None for a plan it cannot read.
- set_input_shape returns False outside the optimisation profile's [min, max] or for a
  fixed dimension that differs (IExecutionContext::setInputShape).
- get_tensor_shape of an output is -1 wherever it depends on an input shape not yet set
  (getTensorShape); dynamic height and width infer the output shapes.
- set_tensor_address returns False for a null or not 256-byte aligned address
  (setTensorAddress: "must be aligned to 256 bytes" in TensorRT 10's docs).
- execute_async_v3 returns False when an input shape is unset or any I/O address is
  unset (enqueueV3: "all input shapes specified, all addresses set").
- Copies and the engine's work are queued on the stream and take effect only when the
  stream is synchronised (cudaMemcpyAsync / enqueueV3 are asynchronous), so a missing
  synchronisation gives wrong output in a test, not a lucky pass.
- A bound buffer smaller than its tensor at the current shapes is a device-memory overrun:
  real TensorRT would corrupt memory silently; the double raises DeviceMemoryOverrun.

Both record what was called, so tests can check allocation and failure handling.
"""
from __future__ import annotations

import ctypes
import enum
import hashlib
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

PLAN_MAGIC = b'TRT-DOUBLE:'
ALIGNMENT = 256  # bytes; TensorRT 10 requires I/O tensor addresses aligned to this


class DeviceMemoryOverrun(AssertionError):
    """The engine would read or write past a bound buffer (silent corruption on a GPU)."""


def plan_for(onnx_path: Path, profile: list[list[int]] | None = None) -> bytes:
    """The bytes of a double "engine": the ONNX model it runs and, for a dynamic input,
    its optimisation profile [min, opt, max] (each a full NCHW shape)."""
    return PLAN_MAGIC + json.dumps({'onnx': str(onnx_path), 'profile': profile}).encode()


class _IOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class _Logger:
    WARNING = 2

    def __init__(self, severity=WARNING):
        self.severity = severity


class _ILogger:
    """trt.ILogger: Python subclasses override log(severity, msg)."""

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def __init__(self):
        pass


class _Engine:
    def __init__(self, runtime: TensorRTRuntimeDouble, onnx_path: str, profile):
        self._rt = runtime
        self.session = ort.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = {o.name: o for o in self.session.get_outputs()}
        self.names = list(self.inputs) + list(self.outputs)
        (self.input_name, arg), = self.inputs.items()
        static = self.get_tensor_shape(self.input_name)
        self.profile = [tuple(s) for s in profile] if profile else [static] * 3
        self._out_shapes: dict[tuple[int, ...], dict[str, tuple[int, ...]]] = {}

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    @property
    def num_optimization_profiles(self) -> int:
        return 1

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> _IOMode:
        return _IOMode.INPUT if name in self.inputs else _IOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        arg = self.inputs.get(name) or self.outputs[name]
        return tuple(d if isinstance(d, int) else -1 for d in arg.shape)

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        if name not in self.inputs or profile_index != 0:
            raise ValueError(f'no profile {profile_index} for input {name}')
        return list(self.profile)

    def get_tensor_dtype(self, name: str) -> str:
        arg = self.inputs.get(name) or self.outputs[name]
        return {'tensor(float)': 'float32', 'tensor(float16)': 'float16'}[arg.type]

    def output_shapes(self, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """Output shapes at an input shape (what TensorRT's shape inference gives)."""
        if input_shape not in self._out_shapes:
            dtype = np.dtype(self.get_tensor_dtype(self.input_name))
            outs = self.session.run(None, {self.input_name: np.zeros(input_shape, dtype)})
            self._out_shapes[input_shape] = {n: o.shape for n, o in zip(self.outputs, outs,
                                                                         strict=True)}
        return self._out_shapes[input_shape]

    def create_execution_context(self):
        return None if self._rt.fail == 'context' else _Context(self)


class _Context:
    def __init__(self, engine: _Engine):
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape) -> bool:
        shape = tuple(int(d) for d in shape)
        self.engine._rt.calls.append(('set_input_shape', name, shape))
        fixed = self.engine.get_tensor_shape(name)
        lo, _, hi = self.engine.profile
        if len(shape) != len(fixed) or any(
                (f != -1 and f != s) or not lo[i] <= s <= hi[i]
                for i, (f, s) in enumerate(zip(fixed, shape, strict=True))):
            return False
        self.shapes[name] = shape
        return True

    def _input_shape(self) -> tuple[int, ...] | None:
        name = self.engine.input_name
        shape = self.engine.get_tensor_shape(name)
        return self.shapes.get(name) if -1 in shape else shape

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        shape = self._input_shape()
        if name in self.engine.inputs:
            return shape or self.engine.get_tensor_shape(name)
        if shape is None:  # depends on an input shape not yet given
            return self.engine.get_tensor_shape(name)
        return self.engine.output_shapes(shape)[name]

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        if self.engine._rt.fail == 'address' or not ptr or ptr % ALIGNMENT:
            return False
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream: int) -> bool:
        rt = self.engine._rt
        rt.calls.append(('execute_async_v3', stream))
        shape = self._input_shape()
        if rt.fail == 'execute' or shape is None or set(self.addresses) != set(self.engine.names):
            return False
        name = self.engine.input_name
        dtype = np.dtype(self.engine.get_tensor_dtype(name))
        nbytes = {name: int(np.prod(shape)) * dtype.itemsize}
        out_shapes = self.engine.output_shapes(shape)
        for out, out_shape in out_shapes.items():
            nbytes[out] = int(np.prod(out_shape)) * np.dtype(self.engine.get_tensor_dtype(out)).itemsize
        memory = rt.memory
        for tensor, need in nbytes.items():
            have = memory.size_of(self.addresses[tensor])
            if have is not None and have < need:
                raise DeviceMemoryOverrun(f"tensor '{tensor}' needs {need} bytes at the "
                                          f'current shapes, its buffer holds {have}')
        addresses = dict(self.addresses)

        def run() -> None:  # on the stream, after everything queued before it
            x = np.frombuffer(memory.read(addresses[name], nbytes[name]), dtype).reshape(shape)
            outs = self.engine.session.run(None, {name: x})
            for out_name, value in zip(self.engine.outputs, outs, strict=True):
                memory.write(addresses[out_name], np.ascontiguousarray(value).tobytes())

        memory.enqueue(stream, run)
        return True


class _Runtime:
    def __init__(self, owner: TensorRTRuntimeDouble):
        self._owner = owner

    def deserialize_cuda_engine(self, plan: bytes):
        owner = self._owner
        owner.calls.append(('deserialize_cuda_engine', len(plan)))
        if owner.fail == 'deserialize':
            return None
        if plan.startswith(PLAN_MAGIC):
            spec = json.loads(plan[len(PLAN_MAGIC):])
            return _Engine(owner, spec['onnx'], spec['profile'])
        registered = owner.engines.get(hashlib.sha256(bytes(plan)).hexdigest())
        if registered is None:
            return None  # TensorRT logs "serialization error" and returns nullptr
        return _Engine(owner, *registered)


class TensorRTRuntimeDouble:
    """Stands in for the `tensorrt` module's runtime part. fail: None, 'runtime',
    'deserialize', 'context', 'address' or 'execute' makes that TensorRT call fail the way
    the real one does. memory: where "device" memory lives (HostMemoryCudaDouble, or
    CudaDeviceAccess on a GPU machine)."""

    TensorIOMode = _IOMode
    Logger = _Logger
    ILogger = _ILogger

    def __init__(self, fail: str | None = None, memory=None, name: str = 'tensorrt',
                 version: str = '10.13.3.9'):
        self.fail = fail
        self.memory = memory if memory is not None else HostMemoryCudaDouble()
        self.calls: list[tuple] = []
        self.engines: dict[str, tuple[str, list | None]] = {}
        self.__name__ = name
        self.__version__ = version

    def register_engine(self, engine_path: Path, onnx_path: Path,
                        profile: list[list[int]] | None = None) -> None:
        """Let a real serialized engine (built by tensorrt_rtx) run as its ONNX model."""
        digest = hashlib.sha256(Path(engine_path).read_bytes()).hexdigest()
        self.engines[digest] = (str(onnx_path), profile)

    def Runtime(self, logger):
        if self.fail == 'runtime':
            raise TypeError('pybind11::init(): factory function returned nullptr')
        return _Runtime(self)

    @staticmethod
    def nptype(dtype: str):
        return np.dtype(dtype).type


class HostMemoryCudaDouble:
    """The CudaRuntime interface on host memory. Allocations are 256-byte aligned and
    tracked (sizes, live count); copies and queued work wait on their stream until
    stream_synchronize, as on a GPU. fail_malloc_after: the n-th allocation from now
    raises CudaError (an out-of-memory in the middle of a shape change)."""

    device_memory = False  # host memory: no kernel may be launched on it

    def __init__(self, fail_malloc_after: int | None = None):
        self._blocks: dict[int, tuple[ctypes.Array, int]] = {}
        self.allocations = 0
        self.streams: set[int] = set()
        self.synchronized = 0
        self.fail_malloc_after = fail_malloc_after
        self._queues: dict[int, list[Callable[[], None]]] = defaultdict(list)

    def _alloc(self, nbytes: int) -> int:
        from yolo_trt_ros.core.errors import CudaError

        if self.fail_malloc_after is not None:
            if self.fail_malloc_after == 0:
                self.fail_malloc_after = None
                raise CudaError('cudaMalloc failed: cudaErrorMemoryAllocation (double)')
            self.fail_malloc_after -= 1
        nbytes = max(nbytes, 1)
        block = (ctypes.c_byte * (nbytes + ALIGNMENT))()
        ptr = -(-ctypes.addressof(block) // ALIGNMENT) * ALIGNMENT
        self._blocks[ptr] = (block, nbytes)
        self.allocations += 1
        return ptr

    malloc = malloc_host = _alloc

    def _free(self, ptr: int) -> None:
        del self._blocks[ptr]  # KeyError on a double free

    free = free_host = _free

    @property
    def live(self) -> int:
        return len(self._blocks)

    def size_of(self, ptr: int) -> int | None:
        """Bytes from ptr to the end of its allocation (None: not ours)."""
        for start, (_, nbytes) in self._blocks.items():
            if start <= ptr < start + nbytes:
                return start + nbytes - ptr
        return None

    def stream_create(self) -> int:
        handle = 1000 + len(self.streams)
        self.streams.add(handle)
        return handle

    def stream_destroy(self, stream: int) -> None:
        assert not self._queues[stream], 'stream destroyed with work still queued'
        self.streams.remove(stream)

    def enqueue(self, stream: int, work: Callable[[], None]) -> None:
        assert stream in self.streams, f'stream {stream} does not exist'
        self._queues[stream].append(work)

    def pending(self, stream: int) -> int:
        return len(self._queues[stream])

    def stream_synchronize(self, stream: int) -> None:
        assert stream in self.streams
        queue, self._queues[stream] = self._queues[stream], []
        for work in queue:
            work()
        self.synchronized += 1

    def copy_to_device(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        self.enqueue(stream, lambda: ctypes.memmove(dst, src, nbytes))

    copy_to_host = copy_to_device

    def read(self, ptr: int, nbytes: int) -> bytes:
        return ctypes.string_at(ptr, nbytes)

    def write(self, ptr: int, data: bytes) -> None:
        ctypes.memmove(ptr, data, len(data))


class CudaDeviceAccess:
    """Real device memory (on a GPU machine): the engine's work runs in stream order
    (synchronise, then synchronous cudaMemcpy); buffer sizes are not known here."""

    def __init__(self):
        from cuda.bindings import runtime
        self.rt = runtime

    def size_of(self, ptr: int) -> None:
        return None

    def enqueue(self, stream: int, work: Callable[[], None]) -> None:
        from yolo_trt_ros.core.cuda import check
        check(self.rt.cudaStreamSynchronize(stream), 'cudaStreamSynchronize')
        work()

    def read(self, ptr: int, nbytes: int) -> bytes:
        from yolo_trt_ros.core.cuda import check
        buf = np.empty(nbytes, np.uint8)
        check(self.rt.cudaMemcpy(buf.ctypes.data, ptr, nbytes,
                                 self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost), 'cudaMemcpy')
        return buf.tobytes()

    def write(self, ptr: int, data: bytes) -> None:
        from yolo_trt_ros.core.cuda import check
        buf = np.frombuffer(data, np.uint8)
        check(self.rt.cudaMemcpy(ptr, buf.ctypes.data, len(data),
                                 self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice), 'cudaMemcpy')
