"""Instance masks assembled on the GPU from the prototypes the engine left there.

Two NVRTC kernels (compiled like the decoder's, nvrtc.py):
- `masks_*`: a thread per pixel of each kept detection's box region, at the source
  resolution: the four prototype pixels around it, each the dot product of the
  detection's coefficients with the prototypes, interpolated bilinearly, thresholded at
  0 (sigmoid > 0.5); one byte per pixel, the regions back to back;
- `label_*`: a thread per pixel of the source image: value i + 1 of the first detection
  whose mask holds the pixel, else 0 (mono8, or mono16 above 254 detections).
Only those bytes come back: the regions' masks and the label image, nothing of the
(M, H/4, W/4) prototypes.

Exactness: every step is the float32 operation of pipeline/masks.py in the same order,
each rounded (__fmul_rn, __fadd_rn, __fdiv_rn: no fused multiply-add), fp16 prototypes
widened exactly, so the masks equal the CPU twin's byte for byte.
"""
from __future__ import annotations

import ctypes

import numpy as np

from yolo_trt_ros.core.errors import CudaError, OutputError
from yolo_trt_ros.core.gpu.cuda import CudaRuntime, probe_gpu
from yolo_trt_ros.core.gpu.nvrtc import FLOAT_LOADS, compile_source, launch, load_functions
from yolo_trt_ros.core.pipeline.masks import (
    NOT_FINITE,
    InstanceMasks,
    MaskGeometry,
    check_finite,
    label_dtype,
    mask_regions,
)

KERNEL_SOURCE = FLOAT_LOADS + r'''
typedef unsigned char u8;

// The prototype coordinate a source pixel samples, as pipeline/masks.py computes it.
__device__ __forceinline__ void axis(int pixel, float scale, float pad, float stride, int lo,
                                     int hi, int* first, int* second, float* weight) {
    float c = __fadd_rn(__fmul_rn(__fadd_rn((float)pixel, 0.5f), scale), pad);
    c = __fsub_rn(__fdiv_rn(c, stride), 0.5f);
    c = fminf(fmaxf(c, (float)lo), (float)hi);
    float f = floorf(c);
    *weight = __fsub_rn(c, f);
    *first = (int)f;
    *second = min(*first + 1, hi);
}

// coefficients . prototypes at one prototype pixel, in index order.
template <typename T>
__device__ __forceinline__ float logit(const T* protos, int count, size_t plane, int at,
                                       const float* coeff) {
    float acc = __fmul_rn(coeff[0], load(protos + at));
    for (int m = 1; m < count; ++m)
        acc = __fadd_rn(acc, __fmul_rn(coeff[m], load(protos + m * plane + at)));
    return acc;
}

__device__ __forceinline__ float lerp(float a, float b, float w) {
    return __fadd_rn(__fmul_rn(__fsub_rn(1.0f, w), a), __fmul_rn(w, b));
}

template <typename T>
__device__ void masks(const T* __restrict__ protos, int count, int ph, int pw,
                      const float* __restrict__ coeffs, const int* __restrict__ regions,
                      const long long* __restrict__ starts, int first, float sx, float sy,
                      float px, float py, float stride, int lo_x, int hi_x, int lo_y,
                      int hi_y, u8* __restrict__ out, int* __restrict__ nan_flag) {
    int d = first + blockIdx.y;
    const int* r = regions + 4 * d;
    int w = r[2] - r[0], h = r[3] - r[1];
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)w * h) return;
    int x0, x1, y0, y1;
    float wx, wy;
    axis(r[0] + (int)(i % w), sx, px, stride, lo_x, hi_x, &x0, &x1, &wx);
    axis(r[1] + (int)(i / w), sy, py, stride, lo_y, hi_y, &y0, &y1, &wy);
    const float* c = coeffs + (size_t)d * count;
    size_t plane = (size_t)ph * pw;
    float top = lerp(logit(protos, count, plane, y0 * pw + x0, c),
                     logit(protos, count, plane, y0 * pw + x1, c), wx);
    float bottom = lerp(logit(protos, count, plane, y1 * pw + x0, c),
                        logit(protos, count, plane, y1 * pw + x1, c), wx);
    float v = lerp(top, bottom, wy);
    if (v != v) *nan_flag = 1;
    out[starts[d] + i] = v > 0.0f;
}

// Any NaN or infinite prototype of the image sets the flag (pipeline/masks.check_finite).
template <typename T>
__device__ void finite(const T* __restrict__ protos, long long count, int* __restrict__ flag) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count && !isfinite(load(protos + i))) *flag = 1;
}

extern "C" __global__ void finite_f32(const float* protos, long long count, int* flag) {
    finite<float>(protos, count, flag);
}
extern "C" __global__ void finite_f16(const u16* protos, long long count, int* flag) {
    finite<u16>(protos, count, flag);
}

#define MASKS_ENTRY(NAME, T)                                                              \
extern "C" __global__ void NAME(const T* protos, int count, int ph, int pw,             \
        const float* coeffs, const int* regions, const long long* starts, int first,    \
        float sx, float sy, float px, float py, float stride, int lo_x, int hi_x,       \
        int lo_y, int hi_y, u8* out, int* nan_flag) {                                   \
    masks<T>(protos, count, ph, pw, coeffs, regions, starts, first, sx, sy, px, py,     \
             stride, lo_x, hi_x, lo_y, hi_y, out, nan_flag);                            \
}
MASKS_ENTRY(masks_f32, float)
MASKS_ENTRY(masks_f16, u16)

// The label image: the first detection (the highest score) whose mask holds the pixel.
template <typename L>
__device__ void label(const u8* __restrict__ masks, const int* __restrict__ regions,
                      const long long* __restrict__ starts, int n, int width, int height,
                      L* __restrict__ out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)width * height) return;
    int x = (int)(i % width), y = (int)(i / width);
    L value = 0;
    for (int d = 0; d < n; ++d) {
        const int* r = regions + 4 * d;
        if (x >= r[0] && x < r[2] && y >= r[1] && y < r[3] &&
            masks[starts[d] + (long long)(y - r[1]) * (r[2] - r[0]) + (x - r[0])]) {
            value = (L)(d + 1);
            break;
        }
    }
    out[i] = value;
}

#define LABEL_ENTRY(NAME, L)                                                              \
extern "C" __global__ void NAME(const u8* masks, const int* regions,                     \
                                const long long* starts, int n, int width, int height,  \
                                L* out) {                                               \
    label<L>(masks, regions, starts, n, width, height, out);                            \
}
LABEL_ENTRY(label_u8, u8)
LABEL_ENTRY(label_u16, u16)
'''
KERNEL_NAMES = ('masks_f32', 'masks_f16', 'label_u8', 'label_u16', 'finite_f32', 'finite_f16')
BLOCK = 256
MAX_GRID_Y = 65535  # CUDA's limit on gridDim.y: more detections go in several launches


def compile_kernel(arch: str) -> bytes:
    """KERNEL_SOURCE for arch ('sm_90': cubin, 'compute_90': PTX); needs no GPU."""
    return compile_source(KERNEL_SOURCE, arch, 'gpu_masks.cu')


class _Buffer:
    """A device buffer and its pinned host twin, grown on demand. A host buffer that is
    outgrown is kept until close(): masks returned earlier may still view it."""

    def __init__(self, cuda: CudaRuntime) -> None:
        self.cuda = cuda
        self.device = self.host = 0
        self.nbytes = 0
        self._old: list[tuple[int, int]] = []

    def fit(self, nbytes: int) -> None:
        if nbytes <= self.nbytes:
            return
        nbytes = max(nbytes, 2 * self.nbytes, 1 << 16)
        if self.nbytes:
            self._old.append((self.device, self.host))
        self.device = self.host = 0
        self.device = self.cuda.malloc(nbytes)
        self.host = self.cuda.malloc_host(nbytes)
        self.nbytes = nbytes

    def array(self, dtype, count: int) -> np.ndarray:
        """The first count items of the host buffer as a numpy array (a view)."""
        nbytes = max(count * np.dtype(dtype).itemsize, 1)
        return np.frombuffer((ctypes.c_byte * nbytes).from_address(self.host), dtype, count)

    def close(self) -> None:
        for device, host in [*self._old, (self.device, self.host)]:
            if device:
                self.cuda.free(device)
            if host:
                self.cuda.free_host(host)
        self._old.clear()
        self.device = self.host = self.nbytes = 0


class GpuMasks:
    """Instance masks and label image of one image's kept detections, from prototypes that
    lie on the GPU (the engine's second output), equal to pipeline/masks.assemble's.

    dtype: the prototypes' (float32 or float16); slots: images per batch. A call's masks
    view pinned memory of its slot: valid until the next call for the same slot (the next
    batch). All work is queued on `stream`; a call synchronises it once."""

    def __init__(self, dtype=np.float32, slots: int = 1, stream: int = 0,
                 cuda: CudaRuntime | None = None,
                 compute_capability: tuple[int, int] | None = None) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float16):
            raise ValueError(f'GPU masks read float32 or float16 prototypes, not {self.dtype}')
        cc = compute_capability or probe_gpu().compute_capability
        if cc is None:
            raise CudaError(f'no GPU for GPU masks: {probe_gpu().reason}')
        functions = load_functions(KERNEL_SOURCE, 'gpu_masks.cu', KERNEL_NAMES, cc)
        f32 = self.dtype == np.float32
        self._masks = functions['masks_f32' if f32 else 'masks_f16']
        self._finite = functions['finite_f32' if f32 else 'finite_f16']
        self._labels = {np.dtype(np.uint8): functions['label_u8'],
                        np.dtype(np.uint16): functions['label_u16']}
        self.cuda, self.stream = cuda or CudaRuntime(), stream
        self._inputs = _Buffer(self.cuda)  # coefficients, regions, starts, NaN flag
        self._slots = [(_Buffer(self.cuda), _Buffer(self.cuda)) for _ in range(slots)]

    def __call__(self, protos_ptr: int, mask_dim: int, proto_hw: tuple[int, int],
                 coefficients: np.ndarray, boxes: np.ndarray, geometry: MaskGeometry,
                 slot: int = 0) -> InstanceMasks:
        """protos_ptr: this image's prototypes on the device, (M, Hp, Wp) of this dtype;
        coefficients: (N, M) float32 of the kept detections; boxes: (N, 4) float32 xyxy
        in source pixels. OutputError where a mask value comes out NaN."""
        box = geometry.box
        n, (ph, pw) = len(boxes), proto_hw
        height, width = box.src_height, box.src_width
        regions = mask_regions(boxes, width, height)
        sizes = (regions[:, 2] - regions[:, 0]).astype(np.int64) * \
            (regions[:, 3] - regions[:, 1])
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        total = int(sizes.sum())
        ltype = label_dtype(n)
        if n == 0:
            return InstanceMasks(height, width, regions, np.zeros(0, np.uint8), starts,
                                 np.zeros((height, width), ltype))
        check_finite(coefficients, True)  # the prototypes: on the device, below
        # Inputs packed into one upload: starts (8-aligned), coefficients, regions, flag.
        coeff_at, regions_at = n * 8, n * 8 + n * mask_dim * 4
        flag_at = regions_at + n * 16
        self._inputs.fit(flag_at + 4)
        packed = self._inputs.array(np.uint8, flag_at + 4)
        packed[:coeff_at] = starts.view(np.uint8)
        packed[coeff_at:regions_at] = np.ascontiguousarray(coefficients, np.float32).view(
            np.uint8).reshape(-1)
        packed[regions_at:flag_at] = regions.view(np.uint8).reshape(-1)
        packed[flag_at:] = 0
        inputs = self._inputs.device
        self.cuda.copy_to_device(inputs, self._inputs.host, flag_at + 4, self.stream)
        out, labels = self._slots[slot]
        out.fit(max(total, 1))  # a host buffer to view, even for empty regions
        labels.fit(height * width * ltype.itemsize)
        protos_count = mask_dim * ph * pw
        launch(self._finite, ((protos_count + BLOCK - 1) // BLOCK, 1, 1), (BLOCK, 1, 1),
               [np.uint64(protos_ptr), np.int64(protos_count), np.uint64(inputs + flag_at)],
               self.stream)
        lo_x, hi_x = geometry.band(1)
        lo_y, hi_y = geometry.band(0)
        biggest = int(sizes.max())
        for first in range(0, n, MAX_GRID_Y):
            if biggest == 0:
                break
            count = min(MAX_GRID_Y, n - first)
            launch(self._masks, ((biggest + BLOCK - 1) // BLOCK, count, 1), (BLOCK, 1, 1),
                   [np.uint64(protos_ptr), np.int32(mask_dim), np.int32(ph), np.int32(pw),
                    np.uint64(inputs + coeff_at), np.uint64(inputs + regions_at),
                    np.uint64(inputs), np.int32(first), np.float32(box.scale_x),
                    np.float32(box.scale_y), np.float32(box.pad_x), np.float32(box.pad_y),
                    np.float32(geometry.stride), np.int32(lo_x), np.int32(hi_x),
                    np.int32(lo_y), np.int32(hi_y), np.uint64(out.device),
                    np.uint64(inputs + flag_at)], self.stream)
        pixels = height * width
        launch(self._labels[ltype], ((pixels + BLOCK - 1) // BLOCK, 1, 1), (BLOCK, 1, 1),
               [np.uint64(out.device), np.uint64(inputs + regions_at), np.uint64(inputs),
                np.int32(n), np.int32(width), np.int32(height), np.uint64(labels.device)],
               self.stream)
        if total:
            self.cuda.copy_to_host(out.host, out.device, total, self.stream)
        self.cuda.copy_to_host(labels.host, labels.device, pixels * ltype.itemsize,
                               self.stream)
        self.cuda.copy_to_host(self._inputs.host + flag_at, inputs + flag_at, 4, self.stream)
        self.cuda.stream_synchronize(self.stream)
        if self._inputs.array(np.uint8, flag_at + 4)[flag_at:].view(np.int32)[0]:
            raise OutputError(NOT_FINITE)
        return InstanceMasks(height, width, regions, out.array(np.uint8, total), starts,
                             labels.array(ltype, pixels).reshape(height, width))

    def close(self) -> None:
        self.cuda.stream_synchronize(self.stream)
        self._inputs.close()
        for out, labels in self._slots:
            out.close()
            labels.close()

    def __enter__(self) -> GpuMasks:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
