"""The fused CUDA preprocessing kernel: it compiles for every target without a GPU, and on
a GPU it agrees with the CPU path for every encoding and frame size (run on the H100)."""
from __future__ import annotations

import numpy as np
import pytest

from yolo_trt_ros.core.cuda import CudaRuntime
from yolo_trt_ros.core.gpu_preprocess import GpuPreprocessor, compile_kernel
from yolo_trt_ros.core.images import ImageView
from yolo_trt_ros.core.preprocess import Preprocessor

# Turing, Ampere, Jetson Orin, Ada, Hopper, Blackwell (desktop).
TARGETS = ['sm_75', 'sm_80', 'sm_86', 'sm_87', 'sm_89', 'sm_90', 'sm_120', 'compute_75']


@pytest.mark.parametrize('arch', TARGETS)
def test_kernel_compiles_for_every_target(arch):
    code = compile_kernel(arch)
    if arch.startswith('sm_'):
        assert code[:4] == b'\x7fELF'  # a cubin
    else:
        assert b'.entry letterbox_chw_f32' in code and b'.entry letterbox_chw_f16' in code


ORDERS = {'bgr8': ('bgr', 3), 'rgb8': ('rgb', 3), 'bgra8': ('bgra', 4), 'rgba8': ('rgba', 4),
          'mono8': ('gray', 1)}
SIZES = [(1080, 1920), (721, 1281), (480, 640), (517, 333), (9, 16), (640, 640)]


def frame(h: int, w: int, channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth content plus noise: like a camera, and hard on interpolation at edges.
    yy, xx = np.mgrid[0:h, 0:w]
    base = (np.sin(xx / 7.0) + np.cos(yy / 5.0)) * 60 + 128
    img = base[..., None] + rng.normal(0, 25, (h, w, channels))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.gpu
@pytest.mark.parametrize('layout', ['contiguous', 'row-padded'])
@pytest.mark.parametrize('dtype', [np.float32, np.float16])
@pytest.mark.parametrize('size', SIZES, ids=[f'{w}x{h}' for h, w in SIZES])
@pytest.mark.parametrize('encoding', list(ORDERS))
def test_gpu_matches_cpu(encoding, size, dtype, layout):
    order, channels = ORDERS[encoding]
    h, w = size
    pixels = frame(h, w, channels, seed=h * w)
    if layout == 'row-padded':  # step > width * channels, as a camera message can be:
        padded = np.zeros((h, w * channels + 5), np.uint8)  # uploaded via pinned staging
        padded[:, :w * channels] = pixels.reshape(h, -1)
        pixels = padded[:, :w * channels].reshape(h, w, channels)
    view = ImageView(pixels, order)  # contiguous: uploaded straight from the frame
    cpu = Preprocessor(416, 416, dtype=np.float32)
    box_cpu = cpu(view)
    stream = CudaRuntime().stream_create()
    try:
        with GpuPreprocessor(416, 416, dtype=dtype, stream=stream) as gpu:
            box_gpu = gpu(view)
            out = gpu.download()[0].astype(np.float32)
    finally:
        CudaRuntime().stream_destroy(stream)
    assert box_gpu == box_cpu
    tol = 1 / 255 if dtype == np.float32 else 1 / 255 + 1e-3  # fp16 adds its rounding
    assert np.abs(out - cpu.buffer[0]).max() <= tol


@pytest.mark.gpu
def test_steady_frames_allocate_nothing_and_batch_slots_are_separate():
    class CountingCuda(CudaRuntime):  # the real runtime, counting its allocations
        allocations = 0

        def malloc(self, nbytes):
            CountingCuda.allocations += 1
            return super().malloc(nbytes)

        def malloc_host(self, nbytes):
            CountingCuda.allocations += 1
            return super().malloc_host(nbytes)

    cuda = CountingCuda()
    stream = cuda.stream_create()
    a = ImageView(frame(720, 1280, 3, 1), 'bgr')
    b = ImageView(frame(480, 640, 3, 2), 'rgb')
    try:
        with GpuPreprocessor(320, 320, batch=2, stream=stream, cuda=cuda) as gpu:
            gpu(a, 0)
            gpu(b, 1)
            cuda.stream_synchronize(stream)
            before = CountingCuda.allocations
            for _ in range(50):
                gpu(a, 0)
                gpu(b, 1)
            out = gpu.download()
            assert CountingCuda.allocations == before
    finally:
        cuda.stream_destroy(stream)
    ref = Preprocessor(320, 320, batch=2)
    ref(a, 0)
    ref(b, 1)
    assert np.abs(out - ref.buffer).max() <= 1 / 255


@pytest.mark.gpu
def test_slots_beyond_the_initial_batch_are_added_once():
    """A dynamic-batch engine: the detector may hand more frames than it first planned for."""
    cuda = CudaRuntime()
    stream = cuda.stream_create()
    frames = [ImageView(frame(360, 640, 3, s), 'bgr') for s in range(3)]
    engine_input = cuda.malloc(3 * 3 * 160 * 160 * 4)  # the engine's (N=3) input buffer
    try:
        with GpuPreprocessor(160, 160, batch=1, stream=stream, cuda=cuda,
                             out_ptr=engine_input) as gpu:
            for slot, view in enumerate(frames):
                gpu(view, slot)
            out = np.empty((3, 3, 160, 160), np.float32)
            cuda.copy_to_host(out.ctypes.data, engine_input, out.nbytes, stream)
            cuda.stream_synchronize(stream)
    finally:
        cuda.free(engine_input)
        cuda.stream_destroy(stream)
    ref = Preprocessor(160, 160, batch=3)
    for slot, view in enumerate(frames):
        ref(view, slot)
    assert np.abs(out - ref.buffer).max() <= 1 / 255
