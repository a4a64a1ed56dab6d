"""TEST DOUBLE for the one boundary nothing here can run: the TensorRT runtime.

No machine in this project can deserialize and execute a TensorRT engine (see
../shared/notes/gpu-device.md), so the backend's tests hand it these stand-ins:

- `TensorRTRuntimeDouble`: a module-like object with the TensorRT 10 runtime API that the
  backend uses (Logger, Runtime, ICudaEngine, IExecutionContext by tensor name). Its
  "engine" is an ONNX model run by the real ONNX Runtime, so outputs are real numbers.
- `HostMemoryCudaDouble`: the CUDA runtime calls of `yolo_trt_ros.core.cuda.CudaRuntime`
  served from host memory, for machines without a GPU. On a GPU machine the tests use the
  real CudaRuntime with the TensorRT double instead.

Both record what was called, so tests can check allocation and failure handling.
"""
from __future__ import annotations

import ctypes
import enum
from pathlib import Path

import numpy as np
import onnxruntime as ort

PLAN_MAGIC = b'TRT-DOUBLE:'


def plan_for(onnx_path: Path) -> bytes:
    """The bytes of a double "engine": the ONNX model it runs."""
    return PLAN_MAGIC + str(onnx_path).encode()


class _IOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class _Logger:
    WARNING = 2

    def __init__(self, severity):
        self.severity = severity


class _Engine:
    def __init__(self, runtime: TensorRTRuntimeDouble, onnx_path: str):
        self._rt = runtime
        self.session = ort.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = {o.name: o for o in self.session.get_outputs()}
        self.names = list(self.inputs) + list(self.outputs)

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> _IOMode:
        return _IOMode.INPUT if name in self.inputs else _IOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        arg = self.inputs.get(name) or self.outputs[name]
        return tuple(d if isinstance(d, int) else -1 for d in arg.shape)

    def get_tensor_dtype(self, name: str) -> str:
        arg = self.inputs.get(name) or self.outputs[name]
        return {'tensor(float)': 'float32', 'tensor(float16)': 'float16'}[arg.type]

    def create_execution_context(self):
        return None if self._rt.fail == 'context' else _Context(self)


class _Context:
    def __init__(self, engine: _Engine):
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape) -> bool:
        self.engine._rt.calls.append(('set_input_shape', name, tuple(shape)))
        want = self.engine.get_tensor_shape(name)
        if len(shape) != len(want) or any(w not in (-1, s) for w, s in zip(want, shape, strict=True)):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def _input_shape(self) -> tuple[int, ...]:
        name = next(iter(self.engine.inputs))
        return self.shapes.get(name, self.engine.get_tensor_shape(name))

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name in self.engine.inputs:
            return self._input_shape()
        shape = self.engine.get_tensor_shape(name)
        return (self._input_shape()[0], *shape[1:]) if shape[0] == -1 else shape

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        if self.engine._rt.fail == 'address':
            return False
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream: int) -> bool:
        rt = self.engine._rt
        rt.calls.append(('execute_async_v3', stream))
        if rt.fail == 'execute':
            return False
        (name, arg), = self.engine.inputs.items()
        shape = self._input_shape()
        dtype = np.dtype(self.engine.get_tensor_dtype(name))
        memory = rt.memory
        memory.wait(stream)  # the input copy was queued on the stream, asynchronously
        x = np.frombuffer(memory.read(self.addresses[name], int(np.prod(shape)) * dtype.itemsize),
                          dtype).reshape(shape)
        outs = self.engine.session.run(None, {name: x})
        for out_name, value in zip(self.engine.outputs, outs, strict=True):
            memory.write(self.addresses[out_name], np.ascontiguousarray(value).tobytes())
        return True


class HostMemoryAccess:
    """How the double reads and writes "device" memory that is really host memory."""

    def wait(self, stream: int) -> None:
        pass

    def read(self, ptr: int, nbytes: int) -> bytes:
        return ctypes.string_at(ptr, nbytes)

    def write(self, ptr: int, data: bytes) -> None:
        ctypes.memmove(ptr, data, len(data))


class CudaDeviceAccess:
    """Real device memory (on a GPU machine): synchronous cudaMemcpy after the stream."""

    def __init__(self):
        from cuda.bindings import runtime
        self.rt = runtime

    def wait(self, stream: int) -> None:
        from yolo_trt_ros.core.cuda import check
        check(self.rt.cudaStreamSynchronize(stream), 'cudaStreamSynchronize')

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


class _Runtime:
    def __init__(self, owner: TensorRTRuntimeDouble, logger):
        self._owner = owner

    def deserialize_cuda_engine(self, plan: bytes):
        if not plan.startswith(PLAN_MAGIC) or self._owner.fail == 'deserialize':
            return None
        return _Engine(self._owner, plan[len(PLAN_MAGIC):].decode())


class TensorRTRuntimeDouble:
    """Stands in for the `tensorrt` module's runtime part. fail: None, 'deserialize',
    'context', 'address' or 'execute' makes that TensorRT call report failure."""

    __name__ = 'tensorrt_runtime_double'
    TensorIOMode = _IOMode
    Logger = _Logger

    def __init__(self, fail: str | None = None, memory=None):
        self.fail = fail
        self.memory = memory or HostMemoryAccess()
        self.calls: list[tuple] = []

    def Runtime(self, logger):
        return _Runtime(self, logger)

    @staticmethod
    def nptype(dtype: str):
        return np.dtype(dtype).type


class HostMemoryCudaDouble:
    """The CudaRuntime interface on host memory; tracks every live allocation."""

    def __init__(self):
        self._blocks: dict[int, ctypes.Array] = {}
        self.allocations = 0
        self.streams: set[int] = set()
        self.synchronized = 0

    def _alloc(self, nbytes: int) -> int:
        block = (ctypes.c_byte * max(nbytes, 1))()
        ptr = ctypes.addressof(block)
        self._blocks[ptr] = block
        self.allocations += 1
        return ptr

    malloc = malloc_host = _alloc

    def _free(self, ptr: int) -> None:
        del self._blocks[ptr]  # KeyError on a double free

    free = free_host = _free

    @property
    def live(self) -> int:
        return len(self._blocks)

    def stream_create(self) -> int:
        handle = 1000 + len(self.streams)
        self.streams.add(handle)
        return handle

    def stream_destroy(self, stream: int) -> None:
        self.streams.remove(stream)

    def stream_synchronize(self, stream: int) -> None:
        assert stream in self.streams
        self.synchronized += 1

    def copy_to_device(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        ctypes.memmove(dst, src, nbytes)

    copy_to_host = copy_to_device
