"""A GPU STAND-IN FOR INFERENCE, for benchmarks only: a module with the TensorRT runtime API
that the TensorRT backend uses, whose "engine" is one CUDA kernel.

No machine of this project can run TensorRT, but the rest of the GPU path can and should
be measured in the real node: upload or GPU JPEG decode, the preprocessing kernel writing
the engine input, the engine's buffers and bindings, GPU output decoding, download,
message, publish. The stand-in engine reads the engine input (every element, so it waits
for the preprocessing like a network would) and writes a fixed output with the statistics
of a real YOLOv8 output (core/synthetic.py) into the engine's output buffer, on the stream.
Inference is taken out; its cost here is one memory pass, a few microseconds.

Use: `make_engine(path, ...)` writes the stand-in engine (and its sealed sidecar, so labels
and layout come from it as from a real build); run the node with
YOLO_TRT_ROS_RUNTIME_MODULE=standin_trt and bench/ on PYTHONPATH.
"""
from __future__ import annotations

import enum
import json
from pathlib import Path

import numpy as np

from yolo_trt_ros.core import nvrtc
from yolo_trt_ros.core.cuda import CudaRuntime, check, probe_gpu
from yolo_trt_ros.core.engine_cache import seal
from yolo_trt_ros.core.synthetic import yolov8_output

__version__ = '1.0-standin'
MAGIC = b'STANDIN-ENGINE:'
SOURCE = r'''
extern "C" __global__ void standin(const float* in, long long in_per_image, const float* table,
                                   float* out, long long out_per_image) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long b = blockIdx.y;
    if (i >= out_per_image && i >= in_per_image) return;
    // Read the input (as a network must) and fold it in at zero weight: the output is the
    // table, and the kernel cannot run before the preprocessing that wrote the input.
    float x = 0.0f;
    for (long long k = i; k < in_per_image; k += out_per_image) x += in[b * in_per_image + k];
    if (i < out_per_image) out[b * out_per_image + i] = table[i] + 0.0f * x;
}
'''


class TensorIOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class Logger:
    WARNING = 2

    def __init__(self, severity=WARNING):
        self.severity = severity


class ILogger:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def __init__(self):
        pass


def nptype(dtype):
    return np.float32


def make_engine(path: Path, size: int = 640, classes: int = 80, max_batch: int = 8,
                names: list[str] | None = None) -> Path:
    """A stand-in engine of YOLOv8 shapes ((N, 3, size, size) -> (N, 4+C, A)), N dynamic
    1..max_batch, with its sidecar (names, format)."""
    anchors = sum((size // s) ** 2 for s in (8, 16, 32))
    spec = {'size': size, 'classes': classes, 'anchors': anchors, 'max_batch': max_batch}
    plan = MAGIC + json.dumps(spec).encode()
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_bytes(plan)
    path.chmod(0o600)
    names = names or [f'class{i}' for i in range(classes)]
    sidecar = seal({'key': {'flavour': __name__, 'tensorrt_version': __version__},
                    'names': names, 'format': 'yolov8',
                    'metadata': {'names': json.dumps(names)}}, plan)
    side = path.with_suffix('.json')
    side.write_text(json.dumps(sidecar))
    side.chmod(0o600)
    return path


class _Engine:
    def __init__(self, spec: dict):
        self.size, self.classes = spec['size'], spec['classes']
        self.anchors, self.max_batch = spec['anchors'], spec['max_batch']
        self.names = ['images', 'output0']
        self.cuda = CudaRuntime()
        table = yolov8_output(self.classes, self.anchors, self.size)
        self.table = self.cuda.malloc(table.nbytes)
        check(self.cuda.rt.cudaMemcpy(self.table, table.ctypes.data, table.nbytes,
                                      self.cuda.rt.cudaMemcpyKind.cudaMemcpyHostToDevice),
              'cudaMemcpy(table)')
        self.kernel = nvrtc.load_functions(SOURCE, 'standin.cu', ('standin',),
                                           probe_gpu().compute_capability)['standin']

    num_io_tensors = 2

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name == 'images' else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, 3, self.size, self.size) if name == 'images' else \
            (-1, 4 + self.classes, self.anchors)

    def get_tensor_dtype(self, name: str) -> str:
        return 'float32'

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list:
        return [(n, 3, self.size, self.size) for n in (1, 1, self.max_batch)]

    def create_execution_context(self):
        return _Context(self)


class _Context:
    def __init__(self, engine: _Engine):
        self.engine, self.batch, self.addresses = engine, 0, {}

    def set_input_shape(self, name: str, shape) -> bool:
        ok = tuple(shape[1:]) == (3, self.engine.size, self.engine.size) and \
            1 <= shape[0] <= self.engine.max_batch
        self.batch = int(shape[0]) if ok else self.batch
        return ok

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        e = self.engine
        return (self.batch, 3, e.size, e.size) if name == 'images' else \
            (self.batch, 4 + e.classes, e.anchors)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return bool(ptr)

    def execute_async_v3(self, stream: int) -> bool:
        e = self.engine
        if not self.batch or set(self.addresses) != set(e.names):
            return False
        out_per_image = (4 + e.classes) * e.anchors
        in_per_image = 3 * e.size * e.size
        block = 256
        grid = ((max(out_per_image, in_per_image) + block - 1) // block, self.batch, 1)
        nvrtc.launch(e.kernel, grid, (block, 1, 1),
                     [np.uint64(self.addresses['images']), np.int64(in_per_image),
                      np.uint64(e.table), np.uint64(self.addresses['output0']),
                      np.int64(out_per_image)], stream)
        return True


class _Runtime:
    def deserialize_cuda_engine(self, plan: bytes):
        if not bytes(plan).startswith(MAGIC):
            return None
        return _Engine(json.loads(bytes(plan)[len(MAGIC):]))


def Runtime(logger):  # TensorRT's name
    return _Runtime()
