"""TEST DOUBLE for the one boundary nothing here can run: the TensorRT runtime.

No machine in this project can deserialize and execute a TensorRT engine (see
../shared/notes/gpu-device.md), so the backend's tests hand it these stand-ins:

- `TensorRTRuntimeDouble`: the shared fake of TensorRT 10's runtime API
  (yolo_trt_ros/testing/fake_tensorrt.py: its rules, each naming the TensorRT API it
  mirrors, are listed there) whose "engine" is an ONNX model run by the real ONNX Runtime,
  so outputs are real numbers. A double plan names its ONNX model (`plan_for`); a real
  engine built by tensorrt_rtx is accepted once registered with `register_engine` (the
  ONNX it was built from runs).
  The ONNX engine has the I/O tensors of its model, each of the DataType TensorRT gives
  that ONNX type (float, float16, bfloat16, float8e4m3fn, int4, int8, uint8, int32, int64,
  bool: every type ONNX Runtime runs that TensorRT has; the others cannot be engine I/O).
  Its output shapes at an input shape are what ONNX shape inference derives from the input
  shape alone, as TensorRT's builder does; a dimension it cannot derive depends on the
  data and is -1 (see fake_tensorrt.py), and every run checks the shapes it reported.
- `HostMemoryCudaDouble`: the CUDA runtime calls of `yolo_trt_ros.core.gpu.cuda.CudaRuntime`
  served from host memory, for machines without a GPU: allocations 256-byte aligned and
  sized (so an overrun is caught, also when the engine writes an output larger than its
  buffer), copies and the engine's work queued per stream and run only at synchronisation
  (cudaMemcpyAsync / enqueueV3 are asynchronous: a missing synchronisation gives wrong
  output in a test, not a lucky pass), and memory that queued work still uses cannot be
  freed (execute_async_v3: releasing registered memory before stream synchronization is
  undefined behaviour; cudaMemcpyAsync's buffers likewise). On a GPU machine the tests use
  the real CudaRuntime with `CudaDeviceAccess` instead.

Both record what was called, so tests can check allocation and failure handling.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from yolo_trt_ros.testing.fake_tensorrt import (
    ALIGNMENT,
    DataType,
    DeviceMemoryOverrun,
    EnginePlan,
    FakeTensorRT,
    Tensor,
    TensorIOMode,
    nptype,
)

__all__ = ['CudaDeviceAccess', 'DeviceMemoryOverrun', 'HostMemoryCudaDouble', 'InFlightRelease',
           'TensorRTRuntimeDouble', 'plan_for']
PLAN_MAGIC = b'TRT-DOUBLE:'
# ONNX Runtime's type of an I/O tensor -> the DataType of that tensor in a TensorRT engine.
_ORT_DTYPES = {'tensor(float)': DataType.FLOAT, 'tensor(float16)': DataType.HALF,
               'tensor(bfloat16)': DataType.BF16, 'tensor(float8e4m3fn)': DataType.FP8,
               'tensor(int4)': DataType.INT4, 'tensor(int8)': DataType.INT8,
               'tensor(uint8)': DataType.UINT8, 'tensor(int32)': DataType.INT32,
               'tensor(int64)': DataType.INT64, 'tensor(bool)': DataType.BOOL}


class InFlightRelease(AssertionError):
    """Memory freed while work queued on a stream still uses it (undefined on a GPU)."""


def plan_for(onnx_path: Path, profile: list[list[int]] | None = None) -> bytes:
    """The bytes of a double "engine": the ONNX model it runs and, for a dynamic input,
    its optimisation profile [min, opt, max] (each a full NCHW shape)."""
    return PLAN_MAGIC + json.dumps({'onnx': str(onnx_path), 'profile': profile}).encode()


def _datatype(arg) -> DataType:
    if arg.type not in _ORT_DTYPES:
        raise ValueError(f"double: '{arg.name}' is {arg.type}, which no TensorRT engine has")
    return _ORT_DTYPES[arg.type]


def inferred_output_shapes(model: onnx.ModelProto, input_name: str,
                           shape: tuple[int, ...]) -> dict[str, tuple[int, ...]] | None:
    """The output shapes that follow from the input shape alone (ONNX shape inference with
    data propagation through shape arithmetic), -1 where they depend on the data; None
    where the inference loses track of an output's rank."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    (inp,) = [i for i in fixed.graph.input if i.name == input_name]
    for dim, value in zip(inp.type.tensor_type.shape.dim, shape, strict=True):
        dim.Clear()
        dim.dim_value = value
    del fixed.graph.value_info[:]  # declared shapes would hide what inference derives
    for out in fixed.graph.output:
        out.type.tensor_type.ClearField('shape')
    inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    shapes = {}
    for out in inferred.graph.output:
        if not out.type.tensor_type.HasField('shape'):
            return None
        shapes[out.name] = tuple(d.dim_value if d.HasField('dim_value') else -1
                                 for d in out.type.tensor_type.shape.dim)
    return shapes


def _onnx_engine(onnx_path: str, profile, memory) -> EnginePlan:
    """An EnginePlan that runs onnx_path with ONNX Runtime on `memory` (host or device)."""
    session = ort.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
    model = onnx.load(onnx_path)
    tensors = [Tensor(arg.name, mode, tuple(d if isinstance(d, int) else -1 for d in arg.shape),
                      _datatype(arg))
               for mode, args in ((TensorIOMode.INPUT, session.get_inputs()),
                                  (TensorIOMode.OUTPUT, session.get_outputs()))
               for arg in args]
    (inp,) = [t for t in tensors if t.mode == TensorIOMode.INPUT]
    outputs = [t for t in tensors if t.mode == TensorIOMode.OUTPUT]
    shapes: dict[tuple[int, ...], dict[str, tuple[int, ...]]] = {}

    def output_shapes(shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        # What TensorRT's shape analysis gives: the output shapes at an input shape.
        if shape not in shapes:
            found = inferred_output_shapes(model, inp.name, shape)
            if found is None:  # inference lost track: the shapes of a run (checked below)
                outs = session.run(None, {inp.name: np.zeros(shape, nptype(inp.dtype))})
                found = {t.name: o.shape for t, o in zip(outputs, outs, strict=True)}
            shapes[shape] = found
        return shapes[shape]

    def enqueue(addresses: dict[str, int], shape: tuple[int, ...], stream_handle: int) -> None:
        in_dtype = np.dtype(nptype(inp.dtype))
        nbytes = int(np.prod(shape)) * in_dtype.itemsize

        def run() -> None:  # on the stream, after everything queued before it
            x = np.frombuffer(memory.read(addresses[inp.name], nbytes), in_dtype).reshape(shape)
            reported = output_shapes(shape)
            for tensor, value in zip(outputs, session.run(None, {inp.name: x}), strict=True):
                want = reported[tensor.name]
                assert len(want) == value.ndim and all(
                    w in (-1, v) for w, v in zip(want, value.shape, strict=True)), \
                    f'double: {tensor.name} reported {want}, the model gave {value.shape}'
                memory.write(addresses[tensor.name], np.ascontiguousarray(value).tobytes())

        memory.enqueue(stream_handle, run, tuple(addresses.values()))

    profile = [tuple(s) for s in profile] if profile else [inp.shape] * 3
    return EnginePlan(tensors, profile, output_shapes, enqueue)


class TensorRTRuntimeDouble(FakeTensorRT):
    """Stands in for the `tensorrt` module's runtime part. fail: None, 'runtime',
    'deserialize', 'context', 'address' or 'execute' makes that TensorRT call fail the way
    the real one does. memory: where "device" memory lives (HostMemoryCudaDouble, or
    CudaDeviceAccess on a GPU machine)."""

    def __init__(self, fail: str | None = None, memory=None, name: str = 'tensorrt',
                 version: str = '10.13.3.9'):
        self.memory = memory if memory is not None else HostMemoryCudaDouble()
        self.engines: dict[str, tuple[str, list | None]] = {}
        super().__init__(self._load, name, version, self.memory.size_of, fail)

    def register_engine(self, engine_path: Path, onnx_path: Path,
                        profile: list[list[int]] | None = None) -> None:
        """Let a real serialized engine (built by tensorrt_rtx) run as its ONNX model."""
        digest = hashlib.sha256(Path(engine_path).read_bytes()).hexdigest()
        self.engines[digest] = (str(onnx_path), profile)

    def _load(self, plan: bytes) -> EnginePlan | None:
        if plan.startswith(PLAN_MAGIC):
            spec = json.loads(plan[len(PLAN_MAGIC):])
            return _onnx_engine(spec['onnx'], spec['profile'], self.memory)
        registered = self.engines.get(hashlib.sha256(plan).hexdigest())
        if registered is None:
            return None  # TensorRT logs "serialization error" and returns nullptr
        return _onnx_engine(*registered, self.memory)


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
        # Per stream: the queued work and the addresses it uses.
        self._queues: dict[int, list[tuple[Callable[[], None], tuple[int, ...]]]] = \
            defaultdict(list)

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
        _, nbytes = self._blocks[ptr]  # KeyError on a double free
        for stream, queue in self._queues.items():
            if any(ptr <= used < ptr + nbytes for _, uses in queue for used in uses):
                raise InFlightRelease(f'freed {nbytes} bytes that work queued on stream '
                                      f'{stream} still uses: synchronise the stream first')
        del self._blocks[ptr]

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

    def enqueue(self, stream: int, work: Callable[[], None], uses: tuple[int, ...] = ()) -> None:
        """Queue work on stream; uses: the addresses it reads or writes."""
        assert stream in self.streams, f'stream {stream} does not exist'
        self._queues[stream].append((work, uses))

    def pending(self, stream: int) -> int:
        return len(self._queues[stream])

    def capturing(self, stream: int) -> bool:
        return False  # host memory: no CUDA graph is ever captured here

    def stream_synchronize(self, stream: int) -> None:
        assert stream in self.streams
        queue, self._queues[stream] = self._queues[stream], []
        for work, _ in queue:
            work()
        self.synchronized += 1

    def copy_to_device(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        self.enqueue(stream, lambda: ctypes.memmove(dst, src, nbytes), (dst, src))

    copy_to_host = copy_to_device

    def read(self, ptr: int, nbytes: int) -> bytes:
        return ctypes.string_at(ptr, nbytes)

    def write(self, ptr: int, data: bytes) -> None:
        room = self.size_of(ptr)
        if room is not None and room < len(data):
            raise DeviceMemoryOverrun(f'{len(data)} bytes written into a buffer of {room}')
        ctypes.memmove(ptr, data, len(data))


class CudaDeviceAccess:
    """Real device memory (on a GPU machine): the engine's work runs in stream order
    (synchronise, then synchronous cudaMemcpy); buffer sizes are not known here."""

    def __init__(self):
        from cuda.bindings import runtime
        self.rt = runtime

    def size_of(self, ptr: int) -> None:
        return None

    def enqueue(self, stream: int, work: Callable[[], None], uses: tuple[int, ...] = ()) -> None:
        from yolo_trt_ros.core.errors import CudaError
        from yolo_trt_ros.core.gpu.cuda import CudaRuntime, check
        if CudaRuntime().capturing(stream):
            # As a TensorRT engine with work outside the stream (the TensorRT guide's CUDA
            # graphs section): this double's engine runs on the host.
            raise CudaError('the runtime double runs its engine on the host: its enqueue '
                            'cannot be captured in a CUDA graph')
        check(self.rt.cudaStreamSynchronize(stream), 'cudaStreamSynchronize')
        work()

    def read(self, ptr: int, nbytes: int) -> bytes:
        from yolo_trt_ros.core.gpu.cuda import check
        buf = np.empty(nbytes, np.uint8)
        check(self.rt.cudaMemcpy(buf.ctypes.data, ptr, nbytes,
                                 self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost), 'cudaMemcpy')
        return buf.tobytes()

    def write(self, ptr: int, data: bytes) -> None:
        from yolo_trt_ros.core.gpu.cuda import check
        buf = np.frombuffer(data, np.uint8)
        check(self.rt.cudaMemcpy(ptr, buf.ctypes.data, len(data),
                                 self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice), 'cudaMemcpy')
        # From pageable memory cudaMemcpy may return before the DMA has landed, and the
        # backend's stream (non-blocking) does not wait for it: its download then read the
        # output before the double's write (zeros, on the H200). Wait for the device.
        check(self.rt.cudaDeviceSynchronize(), 'cudaDeviceSynchronize')
