"""A FAKE of TensorRT 10's runtime Python API: the part the TensorRT backend calls, with
TensorRT's rules, around an engine whose work the user supplies.

No machine of this project can deserialize and run a TensorRT engine (see
../shared/notes/gpu-device.md). Two things need that API all the same, and both use this
one module: the tests' runtime double (test/support/trt_double.py: the engine is an ONNX
model run by ONNX Runtime on host memory) and the benchmarks' GPU stand-in for inference
(testing/gpu_standin.py: the engine is one CUDA kernel). Never used in production.

Names, parameter names, enum values and `nptype` are those of the real bindings: the
test/test_trt_conformance.py checks them against the pybind signatures of TensorRT 10.3 and
10.13, so keyword calls (`execute_async_v3(stream_handle=...)`) behave as on TensorRT. Every
rule names the TensorRT 10 API it mirrors:
- `Runtime(logger)` raises TypeError when creation fails, as the pybind factory does when
  createInferRuntime returns nullptr ("factory function returned nullptr").
- `deserialize_cuda_engine(serialized_engine)` returns None for a plan it cannot read
  (IRuntime::deserializeCudaEngine: "nullptr if the engine could not be deserialized").
- `ICudaEngine.get_tensor_shape` has -1 for every dynamic dimension; `get_tensor_profile_shape
  (name, profile_index)` gives [min, opt, max] of an input and raises for an output or a
  profile that does not exist.
- `set_input_shape(name, shape)` returns False outside the profile's [min, max], for a fixed
  dimension that differs, or for a tensor that is not an input
  (IExecutionContext::setInputShape).
- `IExecutionContext.get_tensor_shape(name)` of an output is -1 in every dimension that
  depends on an input shape not yet set, and in every dimension that depends on the data
  (a "data-dependent shape: a dynamic dimension not calculated solely from network input
  dimensions and shape tensors", TensorRT glossary; known only after enqueueV3, through an
  IOutputAllocator's notifyShape). The plan's output_shapes says which those are.
- `set_tensor_address(name, memory)` returns False for a null address or one not aligned
  to 256 bytes (setTensorAddress; TensorRT 10 requires 256-byte aligned I/O).
- `execute_async_v3(stream_handle)` returns False while an input shape or an I/O address is
  unset (enqueueV3: "all input shapes specified, all addresses set").
- `nptype` maps exactly the DataTypes the real one maps and raises TypeError for the rest
  (BF16, FP8, INT4, FP4, E8M0 have no numpy type).
- A bound buffer smaller than its tensor at the current shapes is a device-memory overrun:
  TensorRT would corrupt memory silently; the fake raises DeviceMemoryOverrun where the
  memory model knows buffer sizes.
- Every refusal above (None or False returned) is also reported to the runtime's ILogger
  at ERROR severity, as TensorRT reports API errors ("Error Code N: ..."; ILogger::log).
- The enqueued work may use the I/O buffers until the stream is synchronised: "Modifying
  or releasing memory that has been registered for the tensors before stream
  synchronization ... results in undefined behavior" (execute_async_v3). enqueue receives
  the bound addresses so that a memory model can hold the caller to it.
"""
from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ALIGNMENT = 256  # bytes; TensorRT 10 requires I/O tensor addresses aligned to this


class DeviceMemoryOverrun(AssertionError):
    """The engine would read or write past a bound buffer (silent corruption on a GPU)."""


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9
    FP4 = 10
    E8M0 = 11


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class ILogger:
    """trt.ILogger: Python subclasses override log(severity, msg)."""

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def __init__(self) -> None:
        pass


class Logger(ILogger):
    def __init__(self, min_severity=ILogger.Severity.WARNING) -> None:
        super().__init__()
        self.min_severity = min_severity

    def log(self, severity, msg) -> None:
        pass


_NUMPY = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
          DataType.INT32: np.int32, DataType.INT64: np.int64, DataType.BOOL: np.bool_,
          DataType.UINT8: np.uint8}  # tensorrt.nptype's own table


def nptype(trt_type: DataType):
    if trt_type in _NUMPY:
        return _NUMPY[trt_type]
    raise TypeError('Could not resolve TensorRT datatype to an equivalent numpy datatype.')


@dataclass(frozen=True)
class Tensor:
    """An engine I/O tensor: shape with -1 for dynamic dimensions."""

    name: str
    mode: TensorIOMode
    shape: tuple[int, ...]
    dtype: DataType


@dataclass
class EnginePlan:
    """What a fake engine is. profile: [min, opt, max] full shapes of the (one) input;
    output_shapes(input_shape) -> {output: shape}, -1 where the size depends on the data;
    enqueue(addresses, input_shape, stream_handle) queues the engine's work on the stream."""

    tensors: list[Tensor]
    profile: list[tuple[int, ...]]
    output_shapes: Callable[[tuple[int, ...]], dict[str, tuple[int, ...]]]
    enqueue: Callable[[dict[str, int], tuple[int, ...], int], None]

    @property
    def input(self) -> Tensor:
        inputs = [t for t in self.tensors if t.mode == TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise ValueError('a fake engine has exactly one input')
        return inputs[0]


class ICudaEngine:
    def __init__(self, owner: FakeTensorRT, plan: EnginePlan) -> None:
        self._owner, self._plan = owner, plan
        self._by_name = {t.name: t for t in plan.tensors}

    @property
    def num_io_tensors(self) -> int:
        return len(self._plan.tensors)

    @property
    def num_optimization_profiles(self) -> int:
        return 1

    def get_tensor_name(self, index: int) -> str:
        return self._plan.tensors[index].name

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        tensor = self._by_name.get(name)
        return TensorIOMode.NONE if tensor is None else tensor.mode

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._by_name[name].shape

    def get_tensor_dtype(self, name: str) -> DataType:
        return self._by_name[name].dtype

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        if self.get_tensor_mode(name) != TensorIOMode.INPUT or profile_index != 0:
            raise ValueError(f'no profile {profile_index} for input {name}')
        return list(self._plan.profile)

    def create_execution_context(self):
        if self._owner.fail == 'context':  # out of device memory: the binding returns None
            self._owner.error('ICudaEngine::createExecutionContext: Error Code 2: OutOfMemory '
                              '(requested size was too large)')
            return None
        return IExecutionContext(self)


class IExecutionContext:
    def __init__(self, engine: ICudaEngine) -> None:
        self.engine = engine
        self._plan = engine._plan
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape) -> bool:
        shape = tuple(int(d) for d in shape)
        self.engine._owner.calls.append(('set_input_shape', name, shape))
        refused = self.engine.get_tensor_mode(name) != TensorIOMode.INPUT
        if not refused:
            fixed = self.engine.get_tensor_shape(name)
            lo, _, hi = self._plan.profile
            refused = len(shape) != len(fixed) or any(
                (f != -1 and f != s) or not lo[i] <= s <= hi[i]
                for i, (f, s) in enumerate(zip(fixed, shape, strict=True)))
        if refused:
            self.engine._owner.error(f'IExecutionContext::setInputShape: Error Code 3: API Usage '
                                     f'Error (shape {list(shape)} of {name} is not in the '
                                     f'profile)')
            return False
        self._shapes[name] = shape
        return True

    def _input_shape(self) -> tuple[int, ...] | None:
        name = self._plan.input.name
        shape = self.engine.get_tensor_shape(name)
        return self._shapes.get(name) if -1 in shape else shape

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        shape = self._input_shape()
        if self.engine.get_tensor_mode(name) == TensorIOMode.INPUT:
            return shape or self.engine.get_tensor_shape(name)
        if shape is None:  # depends on an input shape not yet given
            return self.engine.get_tensor_shape(name)
        return self._plan.output_shapes(shape)[name]

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if self.engine._owner.fail == 'address' or not memory or memory % ALIGNMENT:
            self.engine._owner.error(f'IExecutionContext::setTensorAddress: Error Code 3: API '
                                     f'Usage Error (address of {name} is null or not '
                                     f'{ALIGNMENT}-byte aligned)')
            return False
        self._addresses[name] = memory
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        owner = self.engine._owner
        owner.calls.append(('execute_async_v3', stream_handle))
        shape = self._input_shape()
        names = {t.name for t in self._plan.tensors}
        if owner.fail == 'execute' or shape is None or set(self._addresses) != names:
            owner.error('IExecutionContext::enqueueV3: Error Code 3: API Usage Error (an input '
                        'shape or a tensor address is not set)' if owner.fail != 'execute' else
                        'IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime (an illegal '
                        'memory access was encountered)')
            return False
        sizes = owner.memory_sizes
        if sizes is not None:
            for tensor in self._plan.tensors:
                dims = shape if tensor.mode == TensorIOMode.INPUT \
                    else self._plan.output_shapes(shape)[tensor.name]
                if any(d < 0 for d in dims):
                    continue  # data-dependent: the output allocator's business, not ours
                need = int(np.prod(dims)) * np.dtype(nptype(tensor.dtype)).itemsize
                have = sizes(self._addresses[tensor.name])
                if have is not None and have < need:
                    raise DeviceMemoryOverrun(f"tensor '{tensor.name}' needs {need} bytes at "
                                              f'the current shapes, its buffer holds {have}')
        self._plan.enqueue(dict(self._addresses), shape, stream_handle)
        return True


class Runtime:
    def __init__(self, owner: FakeTensorRT, logger) -> None:
        self._owner, self.logger = owner, logger
        owner.logger = logger

    def deserialize_cuda_engine(self, serialized_engine) -> ICudaEngine | None:
        owner = self._owner
        owner.calls.append(('deserialize_cuda_engine', len(serialized_engine)))
        plan = None if owner.fail == 'deserialize' else owner.load(bytes(serialized_engine))
        if plan is None:
            owner.error('IRuntime::deserializeCudaEngine: Error Code 1: Serialization '
                        '(Serialization assertion failed: magic tag does not match)')
            return None
        return ICudaEngine(owner, plan)


class FakeTensorRT:
    """Stands in for the `tensorrt` module's runtime part (module attributes and all).

    load(plan bytes) -> EnginePlan | None: what an engine file is to this fake.
    memory_sizes(ptr) -> bytes from ptr to the end of its buffer, or None where the memory
    model does not know (real device memory); None: no overrun checks.
    fail: None, 'runtime', 'deserialize', 'context', 'address' or 'execute' makes that
    TensorRT call fail the way the real one does (for tests of failure handling)."""

    DataType = DataType
    TensorIOMode = TensorIOMode
    ILogger = ILogger
    Logger = Logger
    nptype = staticmethod(nptype)
    float32, float16, int8, int32 = DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32
    int64, bool, uint8 = DataType.INT64, DataType.BOOL, DataType.UINT8
    bfloat16, fp8, int4 = DataType.BF16, DataType.FP8, DataType.INT4

    def __init__(self, load: Callable[[bytes], EnginePlan | None], name: str = 'tensorrt',
                 version: str = '10.13.3.9',
                 memory_sizes: Callable[[int], int | None] | None = None,
                 fail: str | None = None) -> None:
        self.load, self.memory_sizes, self.fail = load, memory_sizes, fail
        self.__name__, self.__version__ = name, version
        self.calls: list[tuple] = []
        self.logger = None  # the ILogger of the last Runtime created

    def error(self, message: str) -> None:
        """Report an API error to the runtime's logger, as TensorRT does."""
        if self.logger is not None:
            self.logger.log(ILogger.Severity.ERROR, message)

    def Runtime(self, logger) -> Runtime:
        if self.fail == 'runtime':
            raise TypeError('pybind11::init(): factory function returned nullptr')
        return Runtime(self, logger)
