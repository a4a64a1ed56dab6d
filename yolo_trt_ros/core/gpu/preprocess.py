"""Letterbox + normalise on the GPU: one fused CUDA kernel, compiled at run time by NVRTC.

The kernel reads the camera frame as uploaded (uint8 HWC, 1, 3 or 4 channels, any row
pitch), samples it bilinearly exactly as OpenCV's INTER_LINEAR does (half-pixel centres,
clamped borders), pads with 114, reorders channels, scales to 0..1 and writes CHW float32
or float16 straight into the engine's input buffer. Per frame: one upload (straight from a
contiguous frame, or copied into a pinned staging buffer by several threads and then
uploaded as one DMA, which a CUDA graph captures with the kernel), one kernel launch, all
on the caller's stream; nothing is allocated while the frame size stays the same.

Compiled kernels are cached in memory and on disk (~/.cache/yolo_trt_ros/kernels), keyed
by the source, the GPU architecture and the NVRTC version.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from yolo_trt_ros.core.errors import CudaError
from yolo_trt_ros.core.gpu import nvrtc
from yolo_trt_ros.core.gpu.cuda import CudaRuntime, host_array
from yolo_trt_ros.core.gpu.host_copy import HostCopier
from yolo_trt_ros.core.image.buffers import GRAY, ImageView

if TYPE_CHECKING:
    from yolo_trt_ros.core.gpu.jpeg import DeviceImage
from yolo_trt_ros.core.pipeline.preprocess import PAD_VALUE, Letterbox

KERNEL_NAME = 'letterbox_chw'
KERNEL_SOURCE = r'''
typedef unsigned char u8;
typedef unsigned short u16;

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(u16* p, float v) {
    u16 h;  // float -> half, round to nearest even, without cuda_fp16.h (not in every NVRTC)
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    *p = h;
}

template <typename T>
__device__ void letterbox(const u8* __restrict__ src, int src_w, int src_h, int pitch, int chans,
                          T* __restrict__ dst, int dst_w, int dst_h, int new_w, int new_h,
                          int pad_x, int pad_y, float scale_x, float scale_y,
                          int c0, int c1, int c2, float pad) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dst_w || y >= dst_h) return;
    size_t plane = (size_t)dst_w * dst_h;
    T* out = dst + (size_t)y * dst_w + x;
    int ix = x - pad_x, iy = y - pad_y;
    if (ix < 0 || iy < 0 || ix >= new_w || iy >= new_h) {
        store(out, pad); store(out + plane, pad); store(out + 2 * plane, pad);
        return;
    }
    // OpenCV INTER_LINEAR: source = (dst + 0.5) * scale - 0.5, clamped into the image.
    float sx = fmaxf((ix + 0.5f) * scale_x - 0.5f, 0.0f);
    float sy = fmaxf((iy + 0.5f) * scale_y - 0.5f, 0.0f);
    int x0 = min((int)sx, src_w - 1), y0 = min((int)sy, src_h - 1);
    int x1 = min(x0 + 1, src_w - 1), y1 = min(y0 + 1, src_h - 1);
    float fx = sx - x0, fy = sy - y0;
    if (x0 == src_w - 1) fx = 0.0f;
    if (y0 == src_h - 1) fy = 0.0f;
    const u8* r0 = src + (size_t)y0 * pitch;
    const u8* r1 = src + (size_t)y1 * pitch;
    int channel[3] = {c0, c1, c2};
    #pragma unroll
    for (int p = 0; p < 3; ++p) {
        int c = channel[p];
        float top = r0[x0 * chans + c] + fx * (r0[x1 * chans + c] - r0[x0 * chans + c]);
        float bot = r1[x0 * chans + c] + fx * (r1[x1 * chans + c] - r1[x0 * chans + c]);
        store(out + p * plane, (top + fy * (bot - top)) * (1.0f / 255.0f));
    }
}

// One entry point per output type: float32, or float16 stored as its 16 bits.
#define LETTERBOX_ENTRY(NAME, T)                                                          \
extern "C" __global__ void NAME(                                                          \
        const u8* src, int src_w, int src_h, int pitch, int chans, T* dst, int dst_w,     \
        int dst_h, int new_w, int new_h, int pad_x, int pad_y, float scale_x,             \
        float scale_y, int c0, int c1, int c2, float pad) {                               \
    letterbox(src, src_w, src_h, pitch, chans, dst, dst_w, dst_h, new_w, new_h, pad_x,    \
              pad_y, scale_x, scale_y, c0, c1, c2, pad);                                  \
}
LETTERBOX_ENTRY(letterbox_chw_f32, float)
LETTERBOX_ENTRY(letterbox_chw_f16, u16)
'''
BLOCK = (32, 8, 1)
STAGING, COPY_THREADS = 'direct', 1  # the defaults, from the H200 host's figures (PERFORMANCE)


def compile_kernel(arch: str) -> bytes:
    """KERNEL_SOURCE compiled by NVRTC for arch: 'sm_90' gives a cubin, 'compute_90' PTX.
    Needs no GPU (CI checks every target this way)."""
    return nvrtc.compile_source(KERNEL_SOURCE, arch, 'letterbox.cu')


def load_kernels(compute_capability: tuple[int, int]) -> dict[str, object]:
    """{'f32': CUfunction, 'f16': CUfunction} for the current GPU, compiled once."""
    functions = nvrtc.load_functions(KERNEL_SOURCE, 'letterbox.cu',
                                     ('letterbox_chw_f32', 'letterbox_chw_f16'),
                                     compute_capability)
    return {'f32': functions['letterbox_chw_f32'], 'f16': functions['letterbox_chw_f16']}


# A frame size's geometry, made once: the few sizes a node sees. Bounded: a sender of
# ever-new frame sizes grew an unbounded cache, one entry per size, for the node's life.
fitted = functools.lru_cache(maxsize=64)(Letterbox.fit)


class Source(NamedTuple):
    """A frame in device memory as the kernel reads it (hashable: part of a graph's key).
    host: the pinned copy the kernel's upload reads first (0: the frame is on the device
    already), queued with the kernel so that a graph captures it."""

    ptr: int
    width: int
    height: int
    pitch: int
    channels: int
    order: str
    host: int = 0


@dataclass
class _Staging:
    """Pinned host + device memory for one slot's frame, grown only when a frame is larger."""

    nbytes: int = 0
    host: int = 0
    device: int = 0

    def grow(self, cuda: CudaRuntime, nbytes: int, stream: int) -> None:
        """Replace the buffers by larger ones. The slot never holds a freed pointer: it is
        emptied before the new allocations, which are made one at a time (a failure frees
        what was made and leaves the slot empty)."""
        cuda.stream_synchronize(stream)  # nothing may still read the old buffers
        self.release(cuda)
        host = cuda.malloc_host(nbytes)
        try:
            device = cuda.malloc(nbytes)
        except BaseException:
            cuda.free_host(host)
            raise
        self.host, self.device, self.nbytes = host, device, nbytes

    def release(self, cuda: CudaRuntime) -> None:
        if self.nbytes:
            host, device = self.host, self.device
            self.nbytes = self.host = self.device = 0
            cuda.free_host(host)
            cuda.free(device)


class GpuPreprocessor:
    """Letterbox frames on the GPU into a device buffer (B, 3, H, W) of `dtype`.

    out_ptr: the engine's input device buffer; None allocates one (tests, benchmarks).
    All work is queued on `stream`; the caller synchronises once per frame.
    """

    def __init__(self, height: int, width: int, batch: int = 1, dtype=np.float32,
                 channel_order: str = 'rgb', stream: int = 0, out_ptr: int | None = None,
                 cuda: CudaRuntime | None = None,
                 compute_capability: tuple[int, int] | None = None,
                 staging: str | None = None, copy_threads: int | None = None) -> None:
        from yolo_trt_ros.core.gpu.cuda import probe_gpu

        self.cuda = cuda or CudaRuntime()
        self.height, self.width, self.batch = height, width, batch
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float16):
            raise ValueError(f'GPU preprocessing writes float32 or float16, not {self.dtype}')
        self.channel_order = channel_order
        self.stream = stream
        staging = STAGING if staging is None else staging
        copy_threads = COPY_THREADS if copy_threads is None else copy_threads
        if staging not in ('pinned', 'direct'):
            raise ValueError(f"staging must be 'pinned' or 'direct', not '{staging}'")
        if copy_threads < 1:
            raise ValueError(f'copy_threads must be at least 1, got {copy_threads}')
        # direct: cudaMemcpyAsync from the frame's own (pageable) memory; the driver stages
        # it and the call returns once the source may be reused (contiguous frames only;
        # row-padded frames go through pinned memory).
        # pinned: copy_threads threads copy the frame into pinned memory (host_copy.py),
        # and its upload is one asynchronous DMA queued with the kernel (in the graph).
        self.staging = staging
        cc = compute_capability or probe_gpu().compute_capability
        if cc is None:
            raise CudaError(f'no GPU for GPU preprocessing: {probe_gpu().reason}')
        self._kernel = load_kernels(cc)['f32' if self.dtype == np.float32 else 'f16']
        self.plane_bytes = 3 * height * width * self.dtype.itemsize
        self._owns_out = out_ptr is None
        self.out_ptr = self.cuda.malloc(self.plane_bytes * batch) if out_ptr is None else out_ptr
        self._staging = [_Staging() for _ in range(batch)]
        self._copier = HostCopier(copy_threads)  # last: nothing after it can fail

    @property
    def copy_threads(self) -> int:
        return self._copier.threads

    def _stage(self, slot: int, nbytes: int) -> _Staging:
        while len(self._staging) <= slot:  # a larger batch than before (dynamic engines)
            self._staging.append(_Staging())
        st = self._staging[slot]
        if nbytes > st.nbytes:  # a larger frame than before: grow once
            st.grow(self.cuda, nbytes, self.stream)
        return st

    def __call__(self, image: ImageView, slot: int = 0) -> Letterbox:
        """Queue upload + kernel for one frame into slot; returns the geometry."""
        return self.letterbox(self.upload(image, slot), slot)

    def upload(self, image: ImageView, slot: int = 0) -> Source:
        """Queue the frame's upload into slot's device staging; returns where it lies."""
        pixels = image.pixels
        h, w, c = pixels.shape
        if c not in (1, 3, 4):
            raise ValueError(f'GPU preprocessing takes 1, 3 or 4 channels, not {c}')
        nbytes = h * w * c
        st = self._stage(slot, nbytes)
        if self.staging == 'direct' and pixels.flags.c_contiguous:
            self.cuda.copy_to_device(st.device, pixels.ctypes.data, nbytes, self.stream)
            return Source(st.device, w, h, w * c, c, image.order)
        staged = host_array(st.host, nbytes, np.uint8, (h, w, c))
        self._copier.copy(staged, pixels)  # the one CPU copy: -> pinned
        return Source(st.device, w, h, w * c, c, image.order, st.host)

    def from_device(self, image: DeviceImage, slot: int = 0) -> Letterbox:
        """Queue the kernel for a frame already in device memory (a GPU-decoded JPEG, its
        pitch respected): no upload, no host copy of the pixels."""
        return self.letterbox(self.source_of(image), slot)

    @staticmethod
    def source_of(image: DeviceImage) -> Source:
        if image.channels not in (1, 3, 4):
            raise ValueError(f'GPU preprocessing takes 1, 3 or 4 channels, not {image.channels}')
        return Source(image.ptr, image.width, image.height, image.pitch, image.channels,
                      image.order)

    def letterbox(self, src: Source, slot: int = 0) -> Letterbox:
        """Queue src's upload from its pinned copy, if any, and the kernel that
        letterboxes it into slot of the output; the geometry."""
        w, h, c = src.width, src.height, src.channels
        if src.host:
            self.cuda.copy_to_device(src.ptr, src.host, h * src.pitch, self.stream)
        box = fitted(w, h, self.width, self.height)
        channels = (0, 0, 0) if src.order == GRAY else tuple(
            src.order.index(ch) for ch in self.channel_order)
        args = [np.uint64(src.ptr), np.int32(w), np.int32(h), np.int32(src.pitch), np.int32(c),
                np.uint64(self.out_ptr + slot * self.plane_bytes), np.int32(self.width),
                np.int32(self.height), np.int32(box.new_width), np.int32(box.new_height),
                np.int32(box.pad_x), np.int32(box.pad_y), np.float32(w / box.new_width),
                np.float32(h / box.new_height), *(np.int32(ch) for ch in channels),
                np.float32(PAD_VALUE / 255)]
        self._launch(args)
        return box

    def _launch(self, args: list) -> None:
        grid = ((self.width + BLOCK[0] - 1) // BLOCK[0],
                (self.height + BLOCK[1] - 1) // BLOCK[1], 1)
        nvrtc.launch(self._kernel, grid, BLOCK, args, self.stream)

    def download(self) -> np.ndarray:
        """The whole output buffer on the host (synchronises): for tests and checks."""
        out = np.empty((self.batch, 3, self.height, self.width), self.dtype)
        self.cuda.copy_to_host(out.ctypes.data, self.out_ptr, out.nbytes, self.stream)
        self.cuda.stream_synchronize(self.stream)
        return out

    def close(self) -> None:
        self._copier.close()
        self.cuda.stream_synchronize(self.stream)
        for st in self._staging:
            st.release(self.cuda)
        if self._owns_out and self.out_ptr:
            self.cuda.free(self.out_ptr)
            self.out_ptr = 0

    def __enter__(self) -> GpuPreprocessor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
