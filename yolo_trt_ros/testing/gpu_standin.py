"""A GPU STAND-IN FOR INFERENCE, for benchmarks only: a module with the TensorRT runtime API
(the shared fake, fake_tensorrt.py) whose "engine" is one CUDA kernel.

No machine of this project can run TensorRT, but the rest of the GPU path can and should
be measured in the real node: upload or GPU JPEG decode, the preprocessing kernel writing
the engine input, the engine's buffers and bindings, GPU output decoding, download,
message, publish. The stand-in engine reads the engine input (every element, so it waits
for the preprocessing like a network would) and writes a fixed output with the statistics
of a real YOLOv8 output (core/models/synthetic.py) into the engine's output buffer, on the
stream. Inference is taken out; its cost here is one memory pass, a few microseconds.

Use: `make_engine(path, ...)` writes the stand-in engine (and its sealed sidecar, so labels
and layout come from it as from a real build); the TensorRT backend loads it with this
module when YOLO_TRT_ROS_RUNTIME_MODULE=yolo_trt_ros.testing.gpu_standin (benchmarks only).
"""
from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np

from yolo_trt_ros.core.backends.trt_module import flavour_of
from yolo_trt_ros.core.gpu import nvrtc
from yolo_trt_ros.core.gpu.cuda import CudaRuntime, check, probe_gpu
from yolo_trt_ros.core.models.synthetic import yolov8_output
from yolo_trt_ros.core.store.cache import seal
from yolo_trt_ros.testing.fake_tensorrt import (
    DataType,
    EnginePlan,
    FakeTensorRT,
    Tensor,
    TensorIOMode,
)

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


def make_engine(path: Path, size: int = 640, classes: int = 80, max_batch: int = 8,
                names: list[str] | None = None, fixed: bool = False) -> Path:
    """A stand-in engine of YOLOv8 shapes ((N, 3, size, size) -> (N, 4+C, A)), N dynamic
    1..max_batch (fixed: always max_batch, as a model exported with a fixed batch), with its
    sidecar (names, format)."""
    anchors = sum((size // s) ** 2 for s in (8, 16, 32))
    spec = {'size': size, 'classes': classes, 'anchors': anchors, 'max_batch': max_batch,
            'fixed': fixed}
    plan = MAGIC + json.dumps(spec).encode()
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_bytes(plan)
    path.chmod(0o600)
    names = names or [f'class{i}' for i in range(classes)]
    sidecar = seal({'key': {'flavour': flavour_of(sys.modules[__name__]),
                            'tensorrt_version': __version__},
                    'names': names, 'format': 'yolov8',
                    'metadata': {'names': json.dumps(names)}}, plan)
    side = path.with_suffix('.json')
    side.write_text(json.dumps(sidecar))
    side.chmod(0o600)
    return path


@lru_cache(maxsize=4)
def _table(classes: int, anchors: int, size: int) -> int:
    """The fixed output on the device (made once per shape; freed with the process)."""
    cuda = CudaRuntime()
    table = yolov8_output(classes, anchors, size)
    ptr = cuda.malloc(table.nbytes)
    check(cuda.rt.cudaMemcpy(ptr, table.ctypes.data, table.nbytes,
                             cuda.rt.cudaMemcpyKind.cudaMemcpyHostToDevice), 'cudaMemcpy(table)')
    return ptr


def _load(plan: bytes) -> EnginePlan | None:
    if not plan.startswith(MAGIC):
        return None
    spec = json.loads(plan[len(MAGIC):])
    size, classes, anchors = spec['size'], spec['classes'], spec['anchors']
    table = _table(classes, anchors, size)
    kernel = nvrtc.load_functions(SOURCE, 'standin.cu', ('standin',),
                                  probe_gpu().compute_capability)['standin']
    out_per_image, in_per_image = (4 + classes) * anchors, 3 * size * size

    def enqueue(addresses: dict[str, int], shape: tuple[int, ...], stream_handle: int) -> None:
        block = 256
        grid = ((max(out_per_image, in_per_image) + block - 1) // block, shape[0], 1)
        nvrtc.launch(kernel, grid, (block, 1, 1),
                     [np.uint64(addresses['images']), np.int64(in_per_image),
                      np.uint64(table), np.uint64(addresses['output0']),
                      np.int64(out_per_image)], stream_handle)

    n = spec['max_batch'] if spec.get('fixed') else -1
    return EnginePlan(
        [Tensor('images', TensorIOMode.INPUT, (n, 3, size, size), DataType.FLOAT),
         Tensor('output0', TensorIOMode.OUTPUT, (n, 4 + classes, anchors), DataType.FLOAT)],
        [(b, 3, size, size) for b in ((n, n, n) if n > 0 else (1, 1, spec['max_batch']))],
        lambda shape: {'output0': (shape[0], 4 + classes, anchors)}, enqueue)


# This module is the TensorRT module the backend loads stand-in engines with: the fake's
# attributes at module level (DataType and TensorIOMode are imported above).
_FAKE = FakeTensorRT(_load, name=__name__, version='1.0-standin')
__version__ = _FAKE.__version__
Runtime = _FAKE.Runtime
ILogger = _FAKE.ILogger
Logger = _FAKE.Logger
nptype = _FAKE.nptype
