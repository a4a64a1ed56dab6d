"""The fused CUDA preprocessing kernel: it compiles for every target without a GPU, and on
a GPU it agrees with the CPU path for every encoding and frame size (run on the H100)."""
from __future__ import annotations

import numpy as np
import pytest
from support.cuda import CountingCuda
from support.images import camera_like
from support.needs import reference_install

from yolo_trt_ros.core.gpu import decode as gpu_decode
from yolo_trt_ros.core.gpu import masks as gpu_masks
from yolo_trt_ros.core.gpu import nms as gpu_nms
from yolo_trt_ros.core.gpu.cuda import CudaRuntime
from yolo_trt_ros.core.gpu.nvrtc import pick_target, supported_archs
from yolo_trt_ros.core.gpu.preprocess import GpuPreprocessor, compile_kernel
from yolo_trt_ros.core.image.buffers import ImageView
from yolo_trt_ros.core.pipeline.preprocess import Preprocessor

# Turing, Ampere, Jetson Orin, Ada, Hopper, Blackwell (desktop).
TARGETS = ['sm_75', 'sm_80', 'sm_86', 'sm_87', 'sm_89', 'sm_90', 'sm_120', 'compute_75']


KERNELS = {'preprocess': (compile_kernel, ('letterbox_chw_f32', 'letterbox_chw_f16')),
           'decode': (gpu_decode.compile_kernel, gpu_decode.KERNEL_NAMES),
           'masks': (gpu_masks.compile_kernel, gpu_masks.KERNEL_NAMES),
           'nms': (gpu_nms.compile_kernel, gpu_nms.KERNEL_NAMES)}


@pytest.mark.parametrize('kernel', sorted(KERNELS))
@pytest.mark.parametrize('arch', TARGETS)
def test_every_kernel_compiles_for_every_target(kernel, arch):
    """Needs no GPU: CI compiles each of the project's kernels for every target."""
    compile_for, entries = KERNELS[kernel]
    code = compile_for(arch)
    if arch.startswith('sm_'):
        assert code[:4] == b'\x7fELF'  # a cubin
    else:
        assert all(f'.entry {name}'.encode() in code for name in entries)


NVRTC13 = [75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121]


@pytest.mark.parametrize('cc,target', [
    ((9, 0), 'sm_90'),  # H100/H200: its own cubin
    ((8, 7), 'sm_87'),  # Jetson Orin
    ((8, 5), 'compute_80'),  # no sm_85 in NVRTC: PTX of the closest below, JIT by the driver
    ((13, 0), 'compute_121'),  # a GPU newer than this NVRTC: PTX, never "no code"
    ((7, 0), None),  # V100 with NVRTC 13: nothing to compile -> the CPU path
    ((7, 2), None),  # Xavier
])
def test_pick_target(cc, target):
    """Defect 10: the highest architecture NVRTC supports at or below the device's."""
    assert pick_target(cc, NVRTC13) == target


def test_the_geometry_of_frame_sizes_is_kept_for_a_few_sizes_only():
    """Each new frame size's letterbox geometry was kept for the node's life: a sender of
    ever-new sizes (1 x k pixels, k growing) grew it without bound. The same geometry as
    the CPU's, at most 64 sizes kept."""
    from yolo_trt_ros.core.gpu.preprocess import fitted
    from yolo_trt_ros.core.pipeline.preprocess import Letterbox

    fitted.cache_clear()
    for k in range(1, 1001):
        assert fitted(k, 1, 640, 640) == Letterbox.fit(k, 1, 640, 640)
    assert fitted.cache_info().currsize == 64
    assert fitted(1920, 1080, 640, 640) is fitted(1920, 1080, 640, 640)  # made once


def test_a_gpu_newer_than_nvrtc_gets_ptx_that_compiles():
    archs = supported_archs()
    target = pick_target((archs[-1] // 10 + 1, 0), archs)
    assert target == f'compute_{archs[-1]}'
    assert b'.entry letterbox_chw_f32' in compile_kernel(target)


def test_cuda_12_bindings_and_nvrtc_12_work_with_our_code(tmp_path):
    """Defect 11: CUDA 12 drivers (JetPack 6, r535-r570) need cuda-python 12; our CUDA code
    runs on it: GPU probing says why there is no GPU, and NVRTC 12 compiles our kernel,
    also for sm_70 (V100) that NVRTC 13 dropped. In a process of its own, with the cuda-python
    12 that pip_env/setup.sh installs beside the environment (NVRTC 12 loaded first, as it
    is the only one on a CUDA 12 machine)."""
    import subprocess
    import sys
    from pathlib import Path
    cu12 = Path(sys.prefix) / 'opt' / 'cuda12'
    reference_install(cu12, 'cuda-python 12 with NVRTC 12')
    lib = next(cu12.glob('nvidia/cuda_nvrtc/lib/libnvrtc.so.12'))
    code = (f'import ctypes; ctypes.CDLL({str(lib)!r}, mode=ctypes.RTLD_GLOBAL)\n'
            'import cuda.bindings, json\n'
            'from yolo_trt_ros.core.gpu.cuda import probe_gpu\n'
            'from yolo_trt_ros.core.gpu.preprocess import compile_kernel\n'
            'from yolo_trt_ros.core.gpu.nvrtc import pick_target, supported_archs\n'
            'archs = supported_archs()\n'
            'target = pick_target((7, 0), archs)\n'
            'print(json.dumps([cuda.bindings.__version__, probe_gpu().count, probe_gpu().reason,\n'
            '                  target, compile_kernel(target)[:4].hex()]))\n')
    import os
    env = dict(os.environ, PYTHONPATH=str(cu12))
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    import json
    version, count, reason, target, magic = json.loads(out.stdout)
    assert version.startswith('12.') and target == 'sm_70' and magic == '7f454c46'  # ELF
    from yolo_trt_ros.core.gpu.cuda import probe_gpu
    if probe_gpu().count == 0:
        assert count == 0 and 'cudaError' in reason


ORDERS = {'bgr8': ('bgr', 3), 'rgb8': ('rgb', 3), 'bgra8': ('bgra', 4), 'rgba8': ('rgba', 4),
          'mono8': ('gray', 1)}
SIZES = [(1080, 1920), (721, 1281), (480, 640), (517, 333), (9, 16), (640, 640)]


@pytest.mark.gpu
@pytest.mark.parametrize('layout', ['contiguous', 'row-padded'])
@pytest.mark.parametrize('dtype', [np.float32, np.float16])
@pytest.mark.parametrize('size', SIZES, ids=[f'{w}x{h}' for h, w in SIZES])
@pytest.mark.parametrize('encoding', list(ORDERS))
def test_gpu_matches_cpu(encoding, size, dtype, layout):
    order, channels = ORDERS[encoding]
    h, w = size
    pixels = camera_like(h, w, channels, seed=h * w)
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
@pytest.mark.parametrize('threads', [1, 4])
@pytest.mark.parametrize('layout', ['contiguous', 'row-padded'])
@pytest.mark.parametrize('size', [(1080, 1920), (721, 1281), (9, 16)])
def test_pinned_staging_with_copy_threads_matches_cpu(size, layout, threads):
    """Frames copied into pinned memory by several threads, then uploaded with the kernel
    (frame after frame into the same staging, as a camera's frames are)."""
    h, w = size
    cpu = Preprocessor(416, 416, dtype=np.float32)
    stream = CudaRuntime().stream_create()
    try:
        with GpuPreprocessor(416, 416, stream=stream, staging='pinned',
                             copy_threads=threads) as gpu:
            for seed in range(3):
                pixels = camera_like(h, w, 3, seed=seed)
                if layout == 'row-padded':
                    padded = np.zeros((h, w * 3 + 5), np.uint8)
                    padded[:, :w * 3] = pixels.reshape(h, -1)
                    pixels = padded[:, :w * 3].reshape(h, w, 3)
                view = ImageView(pixels, 'bgr')
                assert gpu(view) == cpu(view)
                out = gpu.download()[0]
                assert np.abs(out - cpu.buffer[0]).max() <= 1 / 255, seed
    finally:
        CudaRuntime().stream_destroy(stream)


@pytest.mark.gpu
def test_frames_in_the_pinned_buffers_the_node_takes_them_into_match_cpu(tmp_path):
    """ros/rcl_take.py takes frames into Detector.frame_buffers(): pinned on the GPU path,
    where the upload is an asynchronous DMA that reads the frame after the call returned.
    Frame after frame through one buffer, reused once the previous frame was let go of."""
    from yolo_trt_ros.core.backends.tensorrt import TensorRTBackend
    from yolo_trt_ros.core.runtime.detector import Detector
    from yolo_trt_ros.testing import gpu_standin

    engine = gpu_standin.make_engine(tmp_path / 'standin.engine')
    with Detector(TensorRTBackend(engine, trt=gpu_standin, cuda=CudaRuntime())) as det:
        buffers = det.frame_buffers()
        assert buffers.kind == 'pinned' and det.preprocess_device == 'gpu'
        cpu = Preprocessor(416, 416, dtype=np.float32)
        stream = CudaRuntime().stream_create()
        try:
            with GpuPreprocessor(416, 416, stream=stream, staging='direct') as gpu:
                for seed in range(3):
                    pixels = camera_like(1080, 1920, 3, seed=seed)
                    block = buffers.get(pixels.nbytes)
                    block[:pixels.nbytes] = pixels.reshape(-1)
                    view = ImageView(block[:pixels.nbytes].reshape(pixels.shape), 'bgr')
                    del block  # the view alone holds the buffer, as a frame in a slot
                    held = buffers.get(pixels.nbytes)  # the next camera's take meanwhile
                    assert not np.shares_memory(held, view.pixels)
                    del held
                    assert gpu(view) == cpu(ImageView(pixels, 'bgr'))
                    out = gpu.download()[0]
                    assert np.abs(out - cpu.buffer[0]).max() <= 1 / 255, seed
                    del view
        finally:
            CudaRuntime().stream_destroy(stream)
        assert len(buffers) == 2
        buffers.close()


def test_wrong_staging_arguments_are_refused_before_any_gpu_work():
    with pytest.raises(ValueError, match="'pinned' or 'direct'"):
        GpuPreprocessor(416, 416, staging='zero-copy')
    with pytest.raises(ValueError, match='copy_threads must be at least 1'):
        GpuPreprocessor(416, 416, copy_threads=0)


@pytest.mark.gpu
def test_steady_frames_allocate_nothing_and_batch_slots_are_separate():
    cuda = CountingCuda()  # the real runtime, counting its allocations
    stream = cuda.stream_create()
    a = ImageView(camera_like(720, 1280, 3, 1), 'bgr')
    b = ImageView(camera_like(480, 640, 3, 2), 'rgb')
    try:
        with GpuPreprocessor(320, 320, batch=2, stream=stream, cuda=cuda) as gpu:
            gpu(a, 0)
            gpu(b, 1)
            cuda.stream_synchronize(stream)
            before = cuda.allocations
            for _ in range(50):
                gpu(a, 0)
                gpu(b, 1)
            out = gpu.download()
            assert cuda.allocations == before
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
    frames = [ImageView(camera_like(360, 640, 3, s), 'bgr') for s in range(3)]
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


def test_a_failed_staging_grow_leaves_no_freed_pointer():
    """Review finding: the slot kept its freed buffers when the larger allocation failed;
    the next frame uploaded into freed memory and close() freed them twice."""
    from support.trt_double import HostMemoryCudaDouble

    from yolo_trt_ros.core.errors import CudaError
    from yolo_trt_ros.core.gpu.preprocess import _Staging

    cuda = HostMemoryCudaDouble()
    stream = cuda.stream_create()
    slot = _Staging()
    slot.grow(cuda, 300, stream)
    assert slot.nbytes == 300 and cuda.live == 2
    cuda.fail_malloc_after = 1  # the device half of the larger pair
    with pytest.raises(CudaError):
        slot.grow(cuda, 600, stream)
    assert (slot.nbytes, slot.host, slot.device) == (0, 0, 0) and cuda.live == 0
    slot.grow(cuda, 600, stream)  # the next frame allocates afresh
    slot.release(cuda)
    slot.release(cuda)  # a second release frees nothing twice
    assert cuda.live == 0


def test_an_unusable_kernel_cache_compiles_without_it(tmp_path, monkeypatch, caplog):
    """Review finding: a cache directory others may write (or a read-only one) stopped the
    GPU path instead of running uncached."""
    from yolo_trt_ros.core.gpu import nvrtc
    from yolo_trt_ros.core.gpu.preprocess import KERNEL_SOURCE
    shared = tmp_path / 'yolo_trt_ros' / 'kernels'
    shared.mkdir(parents=True)
    shared.chmod(0o775)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    code = nvrtc._cached_code(KERNEL_SOURCE, 'sm_90', 'letterbox.cu')
    assert code[:4] == b'\x7fELF' and not list(shared.iterdir())
    assert 'kernel cache unusable' in caplog.text
