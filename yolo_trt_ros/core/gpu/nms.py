"""Non-maximum suppression on the GPU, on the candidate rows the decode kernel wrote, with
the host's result exactly: the same boxes kept, in the same order (issue 21, item 6).

On the H200 host the host's NMS and box un-mapping took about 0.3 ms per 1080p frame of
the GPU path's 1.15 ms (its CPU runs numpy 2.5x slower than the dev machine's). Here three
kernels, queued after the decode kernel (and captured in the frame's CUDA graph with it),
leave the host only the kept rows to un-map:

1. `nms_prepare` (a block per image): sorts the candidates by score, highest first, ties in
   anchor order (what the host does: candidates in anchor order, then OpenCV's stable sort
   by score); computes each one's box exactly as the host hands it to OpenCV, in float64:
   xyxy from cx cy w h in float32, then, class-aware, shifted by class x span (span = twice
   the largest |coordinate| + 1), then x y w h.
2. `nms_mask` (a grid per image): for each pair, whether the higher-ranked box suppresses
   the other, with OpenCV's arithmetic for `NMSBoxes` on `Rect2d` (cv::jaccardDistance and
   the overflow-safe Rect intersection of OpenCV 4.7+, the IoU then rounded to float and
   compared with the float threshold: suppressed unless IoU <= threshold). Every operation
   is an explicitly rounded intrinsic, so no fused multiply-add changes a result.
   OpenCV 4.5 and 4.6 (the python3-opencv of Humble and Jazzy) intersect as
   min(x + w) - max(x) instead: equal in exact arithmetic, and equal in every case a
   review compared (20,000 shifted random pairs), but a double's last bit could differ
   where a sum rounds. `gpu_nms:=false` keeps NMS on the host.
3. `nms_scan` (a warp per image): the greedy pass in rank order, which keeps a candidate
   unless a kept one suppresses it, up to max_detections, and copies the kept rows out.

Where the host's answer cannot be reproduced, the image is marked for the host's NMS
instead (its candidate rows are downloaded and decoded as before): more than LIMIT
candidates (the host keeps the best MAX_NMS_CANDIDATES with argpartition), a non-finite
coordinate (NaN breaks the host's span and every overlap after it), or more candidates than
the decode buffer held.
"""
from __future__ import annotations

import numpy as np

from yolo_trt_ros.core.gpu.cuda import CudaRuntime, host_array
from yolo_trt_ros.core.gpu.nvrtc import compile_source, launch, load_functions

LIMIT = 4096  # candidates per image sorted in one block's shared memory (32 KB of keys)
WORDS = LIMIT // 64  # suppression bits per candidate, in 64-bit words
PREPARE_THREADS, MASK_BLOCKS, MASK_THREADS = 1024, 32, 256
OK, HOST = 0, 1  # per-image status: decided on the GPU, or left for the host's NMS

KERNEL_SOURCE = (f'#define LIMIT {LIMIT}\n#define WORDS {WORDS}\n'
                 f'#define STATUS_OK {OK}\n#define STATUS_HOST {HOST}\n') + r'''
typedef unsigned long long u64;
struct Box { double x, y, w, h; };  // a Rect2d as OpenCV gets it (double4 is deprecated)

// A candidate row: anchor (int bits), class (int bits), score, cx, cy, w, h, unused, extras.
__device__ __forceinline__ int row_int(const float* row, int f) { return __float_as_int(row[f]); }

extern "C" __global__ void nms_prepare(const int* __restrict__ counts, int capacity,
                                       const float* __restrict__ rows, int row_fields,
                                       int agnostic, int* __restrict__ status,
                                       int* __restrict__ sizes, int* __restrict__ order,
                                       Box* __restrict__ rects) {
    __shared__ u64 keys[LIMIT];
    __shared__ float largest;
    __shared__ int finite;
    int img = blockIdx.x, t = threadIdx.x;
    int n = counts[img];
    if (n > capacity || n > LIMIT) {  // rows were not all kept, or too many for one block
        if (t == 0) { status[img] = STATUS_HOST; sizes[img] = 0; }
        return;
    }
    const float* image = rows + (size_t)img * capacity * row_fields;
    if (t == 0) { largest = 0.0f; finite = 1; }
    __syncthreads();
    int padded = 1;
    while (padded < n) padded <<= 1;
    float local = 0.0f;
    for (int i = t; i < padded; i += blockDim.x) {
        u64 key = ~0ull;  // padding sorts last
        if (i < n) {
            const float* row = image + (size_t)i * row_fields;
            // Scores are > conf >= 0: their bits order as the floats do; inverted, the
            // ascending sort puts the highest first, then the lower anchor.
            unsigned score = (unsigned)__float_as_int(row[2]);
            key = ((u64)(0xffffffffu - score) << 32) | ((u64)row_int(row, 0) << 12) | (u64)i;
            float hw = __fmul_rn(row[5], 0.5f), hh = __fmul_rn(row[6], 0.5f);
            float c[4] = {__fsub_rn(row[3], hw), __fsub_rn(row[4], hh),
                          __fadd_rn(row[3], hw), __fadd_rn(row[4], hh)};
            for (int k = 0; k < 4; ++k) {
                if (!isfinite(c[k])) finite = 0;
                local = fmaxf(local, fabsf(c[k]));
            }
        }
        keys[i] = key;
    }
    atomicMax((int*)&largest, __float_as_int(local));  // non-negative floats order as ints
    // Bitonic sort of the keys, ascending.
    for (int k = 2; k <= padded; k <<= 1) {
        for (int j = k >> 1; j > 0; j >>= 1) {
            __syncthreads();
            for (int i = t; i < padded; i += blockDim.x) {
                int l = i ^ j;
                if (l > i) {
                    u64 a = keys[i], b = keys[l];
                    bool up = (i & k) == 0;
                    if ((a > b) == up) { keys[i] = b; keys[l] = a; }
                }
            }
        }
    }
    __syncthreads();
    if (!finite) {  // the host's span and overlaps are NaN: leave it to the host
        if (t == 0) { status[img] = STATUS_HOST; sizes[img] = 0; }
        return;
    }
    double span = __dadd_rn(__dmul_rn((double)largest, 2.0), 1.0);
    for (int i = t; i < n; i += blockDim.x) {
        int r = (int)(keys[i] & 0xfffull);
        const float* row = image + (size_t)r * row_fields;
        float hw = __fmul_rn(row[5], 0.5f), hh = __fmul_rn(row[6], 0.5f);
        double x1 = __fsub_rn(row[3], hw), y1 = __fsub_rn(row[4], hh);
        double x2 = __fadd_rn(row[3], hw), y2 = __fadd_rn(row[4], hh);
        if (!agnostic) {
            double off = __dmul_rn((double)row_int(row, 1), span);
            x1 = __dadd_rn(x1, off); y1 = __dadd_rn(y1, off);
            x2 = __dadd_rn(x2, off); y2 = __dadd_rn(y2, off);
        }
        order[(size_t)img * LIMIT + i] = r;
        rects[(size_t)img * LIMIT + i] = Box{x1, y1, __dsub_rn(x2, x1), __dsub_rn(y2, y1)};
    }
    if (t == 0) { status[img] = STATUS_OK; sizes[img] = n; }
}

// Whether box a (x y w h) overlaps kept box b by more than thr, as OpenCV decides it.
__device__ bool suppressed(Box a, Box b, float thr) {
    double area_a = __dmul_rn(a.w, a.h), area_b = __dmul_rn(b.w, b.h);
    double distance = 0.0;  // jaccardDistance: 0 where both areas are ~0
    if (!(__dadd_rn(area_a, area_b) <= 2.220446049250313e-16)) {
        double inter = 0.0;
        if (a.w > 0 && a.h > 0 && b.w > 0 && b.h > 0) {  // neither Rect empty
            const Box& xl = (a.x < b.x) ? a : b;
            const Box& xr = (a.x < b.x) ? b : a;
            const Box& yl = (a.y < b.y) ? a : b;
            const Box& yr = (a.y < b.y) ? b : a;
            if (!((xl.x < 0 && __dadd_rn(xl.x, xl.w) < xr.x) ||
                  (yl.y < 0 && __dadd_rn(yl.y, yl.h) < yr.y))) {
                double w = __dsub_rn(xl.w, __dsub_rn(xr.x, xl.x));
                double h = __dsub_rn(yl.h, __dsub_rn(yr.y, yl.y));
                w = (xr.w < w) ? xr.w : w;  // std::min
                h = (yr.h < h) ? yr.h : h;
                if (w > 0 && h > 0) inter = __dmul_rn(w, h);
            }
        }
        distance = __dsub_rn(1.0, __ddiv_rn(inter, __dsub_rn(__dadd_rn(area_a, area_b),
                                                                inter)));
    }
    float overlap = __fsub_rn(1.0f, __double2float_rn(distance));
    return !(overlap <= thr);
}

extern "C" __global__ void nms_mask(const int* __restrict__ sizes,
                                    const Box* __restrict__ rects, float thr,
                                    u64* __restrict__ mask) {
    int img = blockIdx.y;
    int n = sizes[img];
    int words = (n + 63) >> 6;
    const Box* r = rects + (size_t)img * LIMIT;
    u64* m = mask + (size_t)img * LIMIT * WORDS;
    long long pairs = (long long)n * words;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < pairs;
         p += (long long)gridDim.x * blockDim.x) {
        int i = (int)(p / words), w = (int)(p % words);
        if (w < (i >> 6)) continue;  // only later candidates matter to the scan
        Box kept = r[i];
        u64 bits = 0;
        for (int b = 0; b < 64; ++b) {
            int j = w * 64 + b;
            if (j > i && j < n && suppressed(r[j], kept, thr)) bits |= 1ull << b;
        }
        m[(size_t)i * WORDS + w] = bits;
    }
}

extern "C" __global__ void nms_scan(const int* __restrict__ sizes,
                                    const int* __restrict__ order,
                                    const u64* __restrict__ mask, int max_detections,
                                    const float* __restrict__ rows, int capacity,
                                    int row_fields, int* __restrict__ kept_count,
                                    float* __restrict__ kept_rows) {
    __shared__ u64 removed[WORDS];
    __shared__ int kept[LIMIT];
    int img = blockIdx.x, lane = threadIdx.x;
    int n = sizes[img];
    int words = (n + 63) >> 6;
    const u64* m = mask + (size_t)img * LIMIT * WORDS;
    for (int w = lane; w < WORDS; w += 32) removed[w] = 0;
    __syncwarp();
    int count = 0;
    for (int i = 0; i < n && count < max_detections; ++i) {
        if ((removed[i >> 6] >> (i & 63)) & 1ull) continue;
        if (lane == 0) kept[count] = order[(size_t)img * LIMIT + i];
        ++count;
        for (int w = (i >> 6) + lane; w < words; w += 32) removed[w] |= m[(size_t)i * WORDS + w];
        __syncwarp();
    }
    __syncwarp();
    const float* image = rows + (size_t)img * capacity * row_fields;
    float* out = kept_rows + (size_t)img * LIMIT * row_fields;
    for (int e = lane; e < count * row_fields; e += 32)
        out[e] = image[(size_t)kept[e / row_fields] * row_fields + e % row_fields];
    if (lane == 0) kept_count[img] = count;
}
'''
KERNEL_NAMES = ('nms_prepare', 'nms_mask', 'nms_scan')


def compile_kernel(arch: str) -> bytes:
    """KERNEL_SOURCE for arch ('sm_90': cubin, 'compute_90': PTX); needs no GPU."""
    return compile_source(KERNEL_SOURCE, arch, 'gpu_nms.cu')


class GpuNms:
    """NMS for up to `batch` images of candidate rows (the decode kernel's layout), queued on
    `stream` with no synchronisation (capturable). Device scratch and the pinned buffers
    the kept rows and counts land in are allocated once, here, through `alloc`."""

    def __init__(self, batch: int, row_fields: int, cuda: CudaRuntime, stream: int,
                 compute_capability: tuple[int, int], alloc) -> None:
        self.batch, self.row_fields, self.cuda, self.stream = batch, row_fields, cuda, stream
        self._kernels = load_functions(KERNEL_SOURCE, 'gpu_nms.cu', KERNEL_NAMES,
                                       compute_capability)
        ints = batch * 4
        self._d_sizes = alloc('device', ints)
        self._d_flags = alloc('device', 2 * ints)  # status, then kept count: one download
        self._d_order = alloc('device', batch * LIMIT * 4)
        self._d_rects = alloc('device', batch * LIMIT * 32)
        self._d_mask = alloc('device', batch * LIMIT * WORDS * 8)
        self.row_bytes = row_fields * 4
        self._d_rows = alloc('device', batch * LIMIT * self.row_bytes)
        self._flags = host_array(alloc('host', 2 * ints), 2 * ints, np.int32, (2, batch))
        nbytes = batch * LIMIT * self.row_bytes
        self.rows = host_array(alloc('host', nbytes), nbytes, np.float32,
                               (batch, LIMIT, row_fields))

    def queue(self, d_counts: int, d_rows: int, capacity: int, images: int,
              iou_threshold: float, max_detections: int, agnostic: bool) -> None:
        """Queue the three kernels and the download of each image's status, kept count and
        its first max_detections kept rows."""
        k = self._kernels
        launch(k['nms_prepare'], (images, 1, 1), (PREPARE_THREADS, 1, 1),
               [np.uint64(d_counts), np.int32(capacity), np.uint64(d_rows),
                np.int32(self.row_fields), np.int32(agnostic), np.uint64(self._d_flags),
                np.uint64(self._d_sizes), np.uint64(self._d_order),
                np.uint64(self._d_rects)], self.stream)
        launch(k['nms_mask'], (MASK_BLOCKS, images, 1), (MASK_THREADS, 1, 1),
               [np.uint64(self._d_sizes), np.uint64(self._d_rects),
                np.float32(iou_threshold), np.uint64(self._d_mask)], self.stream)
        launch(k['nms_scan'], (images, 1, 1), (32, 1, 1),
               [np.uint64(self._d_sizes), np.uint64(self._d_order), np.uint64(self._d_mask),
                np.int32(max_detections), np.uint64(d_rows), np.int32(capacity),
                np.int32(self.row_fields), np.uint64(self._d_flags + self.batch * 4),
                np.uint64(self._d_rows)], self.stream)
        self.cuda.copy_to_host(self._flags.ctypes.data, self._d_flags, 2 * self.batch * 4,
                               self.stream)
        width = min(max_detections, LIMIT) * self.row_bytes
        self.cuda.copy_rows_to_host(self.rows.ctypes.data, self._d_rows,
                                    LIMIT * self.row_bytes, width, images, self.stream)

    def kept(self, image: int) -> np.ndarray | None:
        """After the stream is synchronised: image's kept rows, best first (a view of the
        pinned buffer, valid until the next queue), or None where the host must decide."""
        status, count = self._flags[0, image], self._flags[1, image]
        return None if status != OK else self.rows[image, :count]
