"""Decode YOLO outputs on the GPU where the engine wrote them; download what NMS kept.

One CUDA kernel (compiled by NVRTC, see nvrtc.py) gives each anchor a thread: it finds
the anchor's best allowed class, applies the confidence threshold (YOLOv5: objectness
first, then objectness x class score) and appends the survivors through an atomic counter
to a device buffer. NMS then runs on the GPU too (nms.py, the host's result exactly), and
the host downloads each image's count and the rows NMS kept, in the same queue (one
synchronisation per frame), a few kilobytes instead of the 2.7 MB (1, 84, 8400) output,
and un-maps the boxes to the frame as the CPU decoder does (postprocess.kept_detections),
so the detections are identical to `postprocess()`'s. Where NMS stays on the host (an
oriented head, or an image the GPU's NMS leaves to it), the count comes with the first
rows of each image (HEAD_BYTES: a real frame's candidates nearly always fit; the rows
beyond them are fetched after a second synchronisation) and the host runs the CPU
decoder's NMS (postprocess.select).

Exactness: scores are compared in float32 (as numpy compares a float32 array with a
Python float), fp16 outputs are widened exactly, YOLOv5 products are rounded once
(__fmul_rn, no fused multiply-add), classes are scanned in the order numpy's argmax
sees them (first maximum wins), a NaN score rejects the anchor (numpy's max is NaN), and
candidates are sorted back into anchor order before NMS.

The candidate buffer holds `capacity` rows per image (default: every anchor, so it cannot
overflow). With a smaller capacity, an image with more candidates is decoded on the CPU
from its downloaded output instead: never truncated.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from yolo_trt_ros.core.errors import CudaError, OutputError
from yolo_trt_ros.core.gpu.cuda import CudaRuntime, check, host_array, probe_gpu
from yolo_trt_ros.core.gpu.nms import GpuNms
from yolo_trt_ros.core.gpu.nvrtc import FLOAT_LOADS, compile_source, launch, load_functions
from yolo_trt_ros.core.pipeline.decode import (
    Masker,
    decode_candidates,
    kept_detections,
    select,
    xywh_to_xyxy,
)
from yolo_trt_ros.core.pipeline.head import Head
from yolo_trt_ros.core.pipeline.preprocess import Letterbox
from yolo_trt_ros.core.pipeline.results import Detections, PostprocessConfig

KERNEL_SOURCE = FLOAT_LOADS + r'''

// One candidate row, (8 + extras) x 4 bytes: anchor, class, score, cx, cy, w, h, unused,
// then the head's extra values (angle, mask coefficients or keypoints), copied as they are.
template <typename T, bool V5>
__device__ void decode(const T* __restrict__ output, int anchors, int classes, int extras,
                       const int* __restrict__ allowed, int n_allowed, float conf,
                       int* __restrict__ counts, float* __restrict__ rows, int capacity) {
    int a = blockIdx.x * blockDim.x + threadIdx.x;
    int n = blockIdx.y;
    if (a >= anchors) return;
    int fields = (V5 ? 5 : 4) + classes + extras;
    const T* image = output + (size_t)n * fields * anchors;
    // Field f of anchor a: yolov8 (4+C, A) is field-major, yolov5 (A, 5+C) anchor-major.
    #define FIELD(f) load(V5 ? image + (size_t)a * fields + (f) : image + (size_t)(f) * anchors + a)
    float obj = 1.0f;
    if (V5) {
        obj = FIELD(4);
        if (!(obj > conf)) return;
    }
    int first = V5 ? 5 : 4;
    int scanned = n_allowed < 0 ? classes : n_allowed;
    float best = __int_as_float(0xff800000);  // -infinity
    int best_class = -1;
    for (int k = 0; k < scanned; ++k) {
        int c = n_allowed < 0 ? k : allowed[k];
        float s = FIELD(first + c);
        if (V5) s = __fmul_rn(s, obj);
        if (s != s) return;  // NaN: numpy's max is NaN, which passes no threshold
        if (s > best) { best = s; best_class = c; }
    }
    if (!(best > conf)) return;
    int i = atomicAdd(counts + n, 1);
    if (i >= capacity) return;  // counted all the same: the host sees the overflow
    float* row = rows + ((size_t)n * capacity + i) * (8 + extras);
    row[0] = __int_as_float(a);
    row[1] = __int_as_float(best_class);
    row[2] = best;
    row[3] = FIELD(0); row[4] = FIELD(1); row[5] = FIELD(2); row[6] = FIELD(3);
    for (int e = 0; e < extras; ++e) row[8 + e] = FIELD(first + classes + e);
    #undef FIELD
}

#define DECODE_ENTRY(NAME, T, V5)                                                         \
extern "C" __global__ void NAME(const T* output, int anchors, int classes, int extras,  \
                                const int* allowed, int n_allowed, float conf,          \
                                int* counts, float* rows, int capacity) {               \
    decode<T, V5>(output, anchors, classes, extras, allowed, n_allowed, conf, counts,     \
                  rows, capacity);                                                        \
}
DECODE_ENTRY(decode_yolov8_f32, float, false)
DECODE_ENTRY(decode_yolov8_f16, u16, false)
DECODE_ENTRY(decode_yolov5_f32, float, true)
DECODE_ENTRY(decode_yolov5_f16, u16, true)
'''
KERNEL_NAMES = tuple(f'decode_{fmt}_{t}' for fmt in ('yolov8', 'yolov5') for t in ('f32', 'f16'))
FORMATS = ('yolov8', 'yolov5')  # end2end outputs are already decoded: download them whole
_LOG = logging.getLogger(__name__)
ROW_FIELDS = 8
BLOCK = 256
# Candidate rows per image downloaded with the counts, before they are known: 32 KB (1024
# rows of a detect head, 204 of a segment head's) costs about a microsecond of copy and
# saves a second round trip to the GPU for nearly every frame.
HEAD_BYTES = 32 << 10


def compile_kernel(arch: str) -> bytes:
    """KERNEL_SOURCE for arch ('sm_90': cubin, 'compute_90': PTX); needs no GPU."""
    return compile_source(KERNEL_SOURCE, arch, 'gpu_decode.cu')


class GpuDecoder:
    """Decode an engine output lying on the GPU: (N, 4+C, A) yolov8 or (N, A, 5+C) yolov5,
    float32 or float16, into one Detections per image, equal to `postprocess()`'s.
    head: an obb, segment or pose head (yolov8 layout): its extra values per anchor (the
    angle, mask coefficients, keypoints) come back with each candidate's row.

    shape: the output's largest shape (batch first); a call may decode fewer images.
    capacity: candidate rows per image (default: all anchors, which cannot overflow).
    nms: suppress on the GPU (nms.py) where the head allows (not an oriented head, whose
    rotated NMS stays on the host): only the kept rows come back.
    All work is queued on `stream`; a call synchronises it once, twice where an image's
    rows must come after its count (more candidates than the head rows that came with the
    counts, or an image the GPU's NMS left to the host).
    A call is prepare() + queue() (capturable in a CUDA graph) + collect().
    Device and pinned buffers are allocated once, in the constructor; `close()` frees them.
    """

    def __init__(self, fmt: str, shape: tuple[int, int, int], dtype=np.float32,
                 capacity: int | None = None, stream: int = 0, cuda: CudaRuntime | None = None,
                 compute_capability: tuple[int, int] | None = None,
                 head: Head | None = None, nms: bool = True) -> None:
        self.head = head or Head(fmt=fmt)
        self.extras = self.head.extras
        if self.extras and fmt != 'yolov8':
            raise ValueError(f'GPU decoding reads a {self.head.task} head in the yolov8 '
                             f"layout, not '{fmt}'")
        self.row_fields = ROW_FIELDS + self.extras
        if fmt not in FORMATS:
            raise ValueError(f"GPU decoding takes the {' or '.join(FORMATS)} layout, not "
                             f"'{fmt}'")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float16):
            raise ValueError(f'GPU decoding reads float32 or float16 outputs, not {self.dtype}')
        self.fmt, self.batch = fmt, int(shape[0])
        rows, cols = int(shape[1]), int(shape[2])
        self.anchors, self.classes = ((cols, rows - 4 - self.extras) if fmt == 'yolov8' else
                                      (rows, cols - 5))
        if self.classes < 1 or self.anchors < 1:
            raise ValueError(f'output shape {list(shape)} has no classes or anchors for {fmt}')
        self.capacity = self.anchors if capacity is None else int(capacity)
        if self.capacity < 1:
            raise ValueError(f'capacity must be at least 1, got {capacity}')
        self.head_rows = min(self.capacity, max(1, HEAD_BYTES // (self.row_fields * 4)))
        self.image_bytes = rows * cols * self.dtype.itemsize
        cc = compute_capability or probe_gpu().compute_capability
        if cc is None:
            raise CudaError(f'no GPU for GPU decoding: {probe_gpu().reason}')
        suffix = 'f32' if self.dtype == np.float32 else 'f16'
        self._kernel = load_functions(KERNEL_SOURCE, 'gpu_decode.cu', KERNEL_NAMES,
                                      cc)[f'decode_{fmt}_{suffix}']
        self.cuda, self.stream = cuda or CudaRuntime(), stream
        self._pointers: list[tuple[str, int]] = []  # (kind, pointer) freed by close()
        self.nms: GpuNms | None = None
        try:
            self._allocate()
        except BaseException:
            self.close()  # what was allocated before the failure
            raise
        # anchors below 2^20: the sort key holds an anchor in 20 bits
        if nms and self.head.task != 'obb' and self.anchors < 1 << 20:
            try:
                self.nms = GpuNms(self.batch, self.row_fields, self.cuda, stream, cc,
                                  self._alloc)
            except CudaError as exc:  # decoding stays on the GPU; NMS on the host
                _LOG.warning(f'NMS on the GPU unavailable ({exc}); NMS on the host')

    def _allocate(self) -> None:
        row_bytes = self.batch * self.capacity * self.row_fields * 4
        self._d_counts = self._alloc('device', self.batch * 4)
        self._d_rows = self._alloc('device', row_bytes)
        self._d_allowed = self._alloc('device', self.classes * 4)
        counts_ptr = self._alloc('host', self.batch * 4)
        rows_ptr = self._alloc('host', row_bytes)
        allowed_ptr = self._alloc('host', self.classes * 4)
        self._counts = host_array(counts_ptr, self.batch * 4, np.int32, (self.batch,))
        self._rows = host_array(rows_ptr, row_bytes, np.float32,
                                 (self.batch, self.capacity, self.row_fields))
        self._allowed = host_array(allowed_ptr, self.classes * 4, np.int32, (self.classes,))
        self._allowed_for: tuple[int, ...] | None = None  # cfg.classes _d_allowed holds
        self._fallback: np.ndarray | None = None  # pinned output copy, made on first overflow

    def _alloc(self, kind: str, nbytes: int) -> int:
        ptr = self.cuda.malloc(nbytes) if kind == 'device' else self.cuda.malloc_host(nbytes)
        self._pointers.append((kind, ptr))
        return ptr

    def _class_filter(self, classes: tuple[int, ...] | None) -> int:
        """Upload the allowed classes (in cfg's order, as the CPU decoder scans them, in
        range, first occurrence of each) when they change; -1 means every class."""
        if classes is None:
            return -1
        allowed = list(dict.fromkeys(c for c in classes if 0 <= c < self.classes))
        if classes != self._allowed_for:
            self._allowed[:len(allowed)] = allowed
            self.cuda.copy_to_device(self._d_allowed, self._allowed.ctypes.data,
                                     len(allowed) * 4, self.stream)
            self._allowed_for = classes
        return len(allowed)

    def __call__(self, output_ptr: int, boxes: Sequence[Letterbox], cfg: PostprocessConfig,
                 maskers: Sequence[Masker] | None = None) -> list[Detections | OutputError]:
        """output_ptr: the device output (images back to back, this decoder's dtype and
        layout); boxes: one Letterbox per image to decode (at most the batch); maskers: a
        segment head's mask maker per image. An image whose output cannot be trusted gets
        its OutputError in place of its detections."""
        n_allowed = self.prepare(cfg)
        if n_allowed:
            self.queue(output_ptr, len(boxes), n_allowed, cfg)
        return self.collect(output_ptr, boxes, cfg, maskers, n_allowed)

    def prepare(self, cfg: PostprocessConfig) -> int:
        """Queue the upload of cfg's allowed classes where they changed; the n_allowed that
        queue() takes (-1: every class; 0: none, nothing to queue). Kept out of queue() so
        that a captured queue() reads the buffer as it is at each replay."""
        return self._class_filter(cfg.classes)

    def queue(self, output_ptr: int, images: int, n_allowed: int,
              cfg: PostprocessConfig) -> None:
        """Queue the decode kernel, the GPU's NMS where it runs, and the downloads; no
        synchronisation, no host work that depends on the data (so it can be captured in a
        CUDA graph, keyed by cfg's thresholds, max_detections and agnostic)."""
        if not 0 < images <= self.batch:
            raise ValueError(f'{images} images for a decoder of batch {self.batch}')
        check(self.cuda.rt.cudaMemsetAsync(self._d_counts, 0, images * 4, self.stream),
              'cudaMemsetAsync(counts)')
        launch(self._kernel, ((self.anchors + BLOCK - 1) // BLOCK, images, 1), (BLOCK, 1, 1),
               [np.uint64(output_ptr), np.int32(self.anchors), np.int32(self.classes),
                np.int32(self.extras),
                np.uint64(self._d_allowed), np.int32(n_allowed),
                np.float32(cfg.conf_threshold), np.uint64(self._d_counts),
                np.uint64(self._d_rows), np.int32(self.capacity)], self.stream)
        self.cuda.copy_to_host(self._counts.ctypes.data, self._d_counts, images * 4,
                               self.stream)
        if self.nms is not None:
            self.nms.queue(self._d_counts, self._d_rows, self.capacity, images,
                           cfg.iou_threshold, cfg.max_detections, cfg.agnostic)
            return
        row_bytes = self.row_fields * 4  # each image's head rows: one copy for the batch
        self.cuda.copy_rows_to_host(self._rows.ctypes.data, self._d_rows,
                                    self.capacity * row_bytes, self.head_rows * row_bytes,
                                    images, self.stream)

    def collect(self, output_ptr: int, boxes: Sequence[Letterbox], cfg: PostprocessConfig,
                maskers: Sequence[Masker] | None, n_allowed: int
                ) -> list[Detections | OutputError]:
        """After queue(): wait for the counts, download the candidates, NMS on the host."""
        images = len(boxes)
        if not 0 < images <= self.batch:
            raise ValueError(f'{images} images for a decoder of batch {self.batch}')
        if n_allowed == 0:  # no allowed class in range: as the CPU decoder, nothing
            return [Detections.empty() for _ in boxes]
        self.cuda.stream_synchronize(self.stream)
        counts = self._counts[:images].tolist()
        nms = self.nms
        kept = [None] * images if nms is None else [nms.kept(i) for i in range(images)]
        row_bytes = self.row_fields * 4
        head, more = (self.head_rows if nms is None else 0), False
        for i, count in enumerate(counts):
            if kept[i] is not None:  # decided on the GPU
                continue
            if count > self.capacity:
                self._download_output(output_ptr, i)
            elif count > head:  # the rows beyond the head that came with the counts
                self.cuda.copy_to_host(self._rows[i, head:].ctypes.data,
                                       self._d_rows + (i * self.capacity + head) * row_bytes,
                                       (count - head) * row_bytes, self.stream)
            else:
                continue
            more = True
        if more:
            self.cuda.stream_synchronize(self.stream)
        maskers = maskers or [None] * images
        results: list[Detections | OutputError] = []
        for i, (count, box, masker) in enumerate(zip(counts, boxes, maskers, strict=True)):
            try:
                results.append(self._finish(i, count, box, cfg, masker) if kept[i] is None
                               else self._from_kept(kept[i], box, masker))
            except OutputError as exc:
                results.append(exc)
        return results

    def _from_kept(self, rows: np.ndarray, box: Letterbox, masker: Masker | None
                   ) -> Detections:
        """Detections from the rows the GPU's NMS kept, best first."""
        return kept_detections(xywh_to_xyxy(rows[:, 3:7]), rows[:, 2],
                               rows.view(np.int32)[:, 1], rows[:, ROW_FIELDS:], box,
                               self.head, masker)

    def _download_output(self, output_ptr: int, image: int) -> None:
        if self._fallback is None:
            nbytes = self.batch * self.image_bytes
            self._fallback = host_array(self._alloc('host', nbytes), nbytes, self.dtype,
                                         (self.batch, self.image_bytes // self.dtype.itemsize))
        self.cuda.copy_to_host(self._fallback[image].ctypes.data,
                               output_ptr + image * self.image_bytes, self.image_bytes,
                               self.stream)

    def _finish(self, image: int, count: int, box: Letterbox, cfg: PostprocessConfig,
                masker: Masker | None) -> Detections:
        if count > self.capacity:  # more candidates than rows: the CPU decoder, whole
            shape = ((4 + self.classes + self.extras, self.anchors) if self.fmt == 'yolov8'
                     else (self.anchors, 5 + self.classes))
            return decode_candidates(self._fallback[image].reshape(shape), self.head, box, cfg,
                                     masker)
        rows = self._rows[image, :count]
        ints = rows.view(np.int32)  # columns 0 and 1 hold int32 bits: anchor, class
        rows = rows[np.argsort(ints[:, 0], kind='stable')]  # back into anchor order
        ids = rows.view(np.int32)[:, 1].astype(np.int64)
        xywh = rows[:, 3:7]
        return select(xywh.copy() if self.head.task == 'obb' else xywh_to_xyxy(xywh),
                      rows[:, 2].copy(), ids, rows[:, ROW_FIELDS:], self.fmt, box, cfg,
                      self.head, masker)

    def close(self) -> None:
        if not self._pointers:
            return
        self.cuda.stream_synchronize(self.stream)
        for kind, ptr in reversed(self._pointers):
            (self.cuda.free if kind == 'device' else self.cuda.free_host)(ptr)
        self._pointers.clear()

    def __enter__(self) -> GpuDecoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
