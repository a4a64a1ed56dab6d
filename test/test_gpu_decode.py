"""The GPU output decoder (its kernel's compilation for every target is checked in
test_gpu_preprocess.py): on a GPU its detections equal the CPU `postprocess()`'s exactly, for both layouts and dtypes."""
from __future__ import annotations

import numpy as np
import pytest
from support.cuda import CountingCuda

from yolo_trt_ros.core.gpu.cuda import CudaRuntime
from yolo_trt_ros.core.gpu.decode import HEAD_BYTES, GpuDecoder
from yolo_trt_ros.core.gpu.nms import LIMIT as NMS_LIMIT
from yolo_trt_ros.core.models.synthetic import yolov8_output
from yolo_trt_ros.core.pipeline.decode import postprocess
from yolo_trt_ros.core.pipeline.preprocess import Letterbox
from yolo_trt_ros.core.pipeline.results import Detections, PostprocessConfig


@pytest.mark.parametrize('fmt, shape, dtype, match', [
    ('end2end', (1, 300, 6), np.float32, 'yolov8 or yolov5'),
    ('yolov8', (1, 84, 8400), np.int8, 'float32 or float16'),
    ('yolov8', (1, 4, 8400), np.float32, 'no classes'),
    ('yolov5', (1, 8400, 5), np.float32, 'no classes'),
])
def test_bad_configuration_is_refused_before_any_gpu_work(fmt, shape, dtype, match):
    with pytest.raises(ValueError, match=match):
        GpuDecoder(fmt, shape, dtype)


# -- outputs ------------------------------------------------------------------------------
def realistic(fmt: str, seed: int, classes: int = 80, anchors: int = 8400) -> np.ndarray:
    """One image's output with a real model's statistics, in fmt's layout."""
    v8 = yolov8_output(classes, anchors, objects=25, seed=seed)
    if fmt == 'yolov8':
        return v8
    rng = np.random.default_rng(seed)
    best = v8[4:].max(axis=0)
    obj = np.where(best > 0.25, rng.uniform(0.6, 1.0, anchors), rng.uniform(0, 0.05, anchors))
    cls = v8[4:] / np.maximum(best, 1e-6)[None] * rng.uniform(0.5, 1.0, anchors)[None]
    return np.concatenate([v8[:4], obj[None], cls], axis=0).T.astype(np.float32)


def random_output(fmt: str, seed: int, classes: int = 7, anchors: int = 3000) -> np.ndarray:
    """Uniform scores (many candidates, many ties once in fp16) and boxes all over."""
    rng = np.random.default_rng(seed)
    fields = (4 if fmt == 'yolov8' else 5) + classes
    out = rng.uniform(0, 1, (fields, anchors)).astype(np.float32)
    out[:2] *= 640
    out[2:4] *= 120
    return out if fmt == 'yolov8' else np.ascontiguousarray(out.T)


def plant_threshold_ties(out: np.ndarray, fmt: str, conf: float) -> np.ndarray:
    """Scores exactly at float32(conf) and NaNs: a float64 comparison or a lost NaN would
    keep anchors the CPU decoder drops."""
    out = out.copy()
    scores = out[4:] if fmt == 'yolov8' else out[:, 5:].T
    scores[:, 5] = np.float32(conf)
    scores[2, 6] = np.nan
    if fmt == 'yolov5':
        out[7, 4] = np.float32(conf)  # objectness exactly at the threshold
        out[8, 4] = np.nan
    return out


def assert_same(gpu: Detections, cpu: Detections) -> None:
    assert len(gpu) == len(cpu)
    np.testing.assert_array_equal(gpu.class_ids, cpu.class_ids)
    np.testing.assert_array_equal(gpu.scores, cpu.scores)
    np.testing.assert_array_equal(gpu.boxes, cpu.boxes)
    assert (gpu.boxes.dtype, gpu.scores.dtype, gpu.class_ids.dtype) == (
        cpu.boxes.dtype, cpu.scores.dtype, cpu.class_ids.dtype)


def decode_on_gpu(outputs: np.ndarray, fmt: str, boxes: list[Letterbox],
                  cfgs: list[PostprocessConfig], capacity: int | None = None,
                  cuda: CudaRuntime | None = None, nms: bool = True
                  ) -> list[list[Detections]]:
    """outputs (N, ...) uploaded once; each cfg decoded by one decoder, in turn (NMS on the
    GPU, or on the host with nms=False)."""
    cuda = cuda or CudaRuntime()
    stream = cuda.stream_create()
    outputs = np.ascontiguousarray(outputs)
    d_out = cuda.malloc(outputs.nbytes)
    try:
        cuda.copy_to_device(d_out, outputs.ctypes.data, outputs.nbytes, stream)
        with GpuDecoder(fmt, outputs.shape, outputs.dtype, capacity, stream, cuda,
                        nms=nms) as dec:
            assert (dec.nms is not None) == nms
            return [dec(d_out, boxes, cfg) for cfg in cfgs]
    finally:
        cuda.free(d_out)
        cuda.stream_destroy(stream)


CONFIGS = [
    PostprocessConfig(),
    PostprocessConfig(conf_threshold=0.3, iou_threshold=0.5),
    PostprocessConfig(conf_threshold=0.1, classes=(5, 2, 999, 2, -1, 0)),  # order, dups, junk
    PostprocessConfig(classes=(999,)),  # no class in range: nothing
    PostprocessConfig(conf_threshold=0.05, max_detections=3),
    PostprocessConfig(conf_threshold=0.2, agnostic=True),
    PostprocessConfig(conf_threshold=0.0),
]
BOXES = [Letterbox.fit(1920, 1080, 640, 640), Letterbox.fit(640, 480, 640, 640),
         Letterbox.fit(333, 517, 640, 640)]


@pytest.mark.gpu
@pytest.mark.parametrize('nms', [True, False], ids=['gpu-nms', 'host-nms'])
@pytest.mark.parametrize('dtype', [np.float32, np.float16])
@pytest.mark.parametrize('fmt', ['yolov8', 'yolov5'])
@pytest.mark.parametrize('kind', ['realistic', 'random'])
def test_gpu_decode_equals_cpu_postprocess(kind, fmt, dtype, nms):
    """Random outputs at conf 0 give the GPU's NMS 3000 candidates per image of boxes all
    over, overlapping in every way; realistic ones at conf 0 give 8400 (above its LIMIT:
    left to the host)."""
    make = realistic if kind == 'realistic' else random_output
    images = [make(fmt, seed) for seed in range(3)]
    images[1] = plant_threshold_ties(images[1], fmt, 0.3)
    outputs = np.stack(images).astype(dtype)
    got = decode_on_gpu(outputs, fmt, BOXES, CONFIGS, nms=nms)
    for cfg, gpu in zip(CONFIGS, got, strict=True):
        for image, box, det in zip(outputs, BOXES, gpu, strict=True):
            assert_same(det, postprocess(image, fmt, box, cfg))
    cpu = postprocess(outputs[0], fmt, BOXES[0], CONFIGS[0])
    assert len(cpu) > (0 if kind == 'realistic' else 50)  # something worth comparing


@pytest.mark.gpu
def test_fewer_images_than_the_batch():
    outputs = np.stack([realistic('yolov8', seed) for seed in range(4)])
    cfg = PostprocessConfig()
    got, = decode_on_gpu(outputs, 'yolov8', BOXES[:2], [cfg])
    assert len(got) == 2
    for image, box, det in zip(outputs[:2], BOXES[:2], got, strict=True):
        assert_same(det, postprocess(image, 'yolov8', box, cfg))


@pytest.mark.gpu
@pytest.mark.parametrize('fmt', ['yolov8', 'yolov5'])
def test_more_candidates_than_the_buffer_fall_back_to_the_cpu_decoder(fmt):
    """Image 0 has hundreds of candidates for 10 rows, image 1 a few: neither loses any."""
    busy = random_output(fmt, 1)
    quiet = random_output(fmt, 2)
    scores = quiet[4:] if fmt == 'yolov8' else quiet[:, 4:].T  # (obj and) class scores
    scores[:, 8:] *= 0.1  # only anchors 0..7 can pass
    outputs = np.stack([busy, quiet])
    cfg = PostprocessConfig(conf_threshold=0.2, max_detections=1000)
    got, = decode_on_gpu(outputs, fmt, BOXES[:2], [cfg], capacity=10)
    for image, box, det in zip(outputs, BOXES[:2], got, strict=True):
        assert_same(det, postprocess(image, fmt, box, cfg))
    assert len(got[0]) > 10


@pytest.mark.gpu
def test_more_candidates_than_nms_takes():
    """More candidates than MAX_NMS_CANDIDATES: the same top ones reach NMS."""
    outputs = random_output('yolov5', 3, classes=2, anchors=40000)[None]
    cfg = PostprocessConfig(conf_threshold=0.01)
    got, = decode_on_gpu(outputs, 'yolov5', BOXES[:1], [cfg])
    assert_same(got[0], postprocess(outputs[0], 'yolov5', BOXES[0], cfg))


@pytest.mark.gpu
@pytest.mark.parametrize('nms', [True, False], ids=['gpu-nms', 'host-nms'])
def test_steady_calls_allocate_nothing_and_download_only_candidates(nms):
    outputs = realistic('yolov8', 0)[None]
    cfgs = [PostprocessConfig(conf_threshold=c) for c in (0.25, 0.1, 0.5, 0.25)]
    one, four = CountingCuda(), CountingCuda()
    decode_on_gpu(outputs, 'yolov8', BOXES[:1], cfgs[:1], cuda=one, nms=nms)
    decode_on_gpu(outputs, 'yolov8', BOXES[:1], cfgs, cuda=four, nms=nms)
    assert four.allocations == one.allocations  # nothing more for three more calls
    counts = [int((outputs[0, 4:].max(axis=0) > np.float32(c.conf_threshold)).sum())
              for c in cfgs]
    head = HEAD_BYTES // 32  # rows of 8 float32 fields
    assert 0 < max(counts) <= min(head, NMS_LIMIT)  # a real frame's candidates
    if nms:  # per call: the count, the status and kept count, max_detections rows
        assert four.downloaded == len(cfgs) * (4 + 2 * 4 + cfgs[0].max_detections * 32)
    else:  # per call: the count, the head rows that come with it, nothing else
        assert four.downloaded == len(cfgs) * (4 + head * 32)
    assert four.synchronisations - one.synchronisations == len(cfgs) - 1  # one per frame


@pytest.mark.gpu
def test_candidates_beyond_the_head_rows_come_after_a_second_wait():
    """Image 0 has every anchor as a candidate (far past the head rows), image 1 a few:
    both equal the CPU decoder's, and only image 0's extra rows are downloaded after the
    counts."""
    busy = random_output('yolov8', 1, classes=80, anchors=8400)
    busy[4:] = np.maximum(busy[4:], 0.5)  # every anchor passes 0.2
    quiet = realistic('yolov8', 2)
    outputs = np.stack([busy, quiet])
    cfg = PostprocessConfig(conf_threshold=0.2)
    one, two = CountingCuda(), CountingCuda()
    decode_on_gpu(outputs, 'yolov8', BOXES[:2], [cfg], cuda=one, nms=False)
    got = decode_on_gpu(outputs, 'yolov8', BOXES[:2], [cfg, cfg], cuda=two, nms=False)[1]
    for image, box, det in zip(outputs, BOXES[:2], got, strict=True):
        assert_same(det, postprocess(image, 'yolov8', box, cfg))
    head = HEAD_BYTES // 32
    per_call = 2 * 4 + 2 * head * 32 + (8400 - head) * 32
    assert two.downloaded - one.downloaded == per_call
    assert two.synchronisations - one.synchronisations == 2  # counts, then the rest


@pytest.mark.gpu
@pytest.mark.parametrize('case', ['too many candidates', 'a NaN coordinate'])
def test_what_the_gpu_nms_cannot_reproduce_is_left_to_the_host(case):
    """Image 0 has more candidates than the GPU's NMS sorts (the host keeps the best
    MAX_NMS_CANDIDATES by argpartition), or a box with a NaN coordinate (NaN in the host's
    class offset); image 1 is ordinary. Image 0's rows come after a second wait and the
    host decides; both equal the CPU decoder's."""
    quiet = realistic('yolov8', 2)
    if case == 'too many candidates':
        busy = random_output('yolov8', 1, classes=80, anchors=8400)
        busy[4:] = np.maximum(busy[4:], 0.5)  # every anchor passes 0.2
        candidates = 8400
    else:
        busy = realistic('yolov8', 1)
        candidates = int((busy[4:].max(axis=0) > np.float32(0.2)).sum())
        busy[2, int(np.argmax(busy[4:].max(axis=0)))] = np.nan  # the best box's width
    outputs = np.stack([busy, quiet])
    cfg = PostprocessConfig(conf_threshold=0.2)
    one, two = CountingCuda(), CountingCuda()
    decode_on_gpu(outputs, 'yolov8', BOXES[:2], [cfg], cuda=one)
    got = decode_on_gpu(outputs, 'yolov8', BOXES[:2], [cfg, cfg], cuda=two)[1]
    for image, box, det in zip(outputs, BOXES[:2], got, strict=True):
        assert_same(det, postprocess(image, 'yolov8', box, cfg))
    per_call = 2 * 4 + 2 * 2 * 4 + 2 * cfg.max_detections * 32 + candidates * 32
    assert two.downloaded - one.downloaded == per_call
    assert two.synchronisations - one.synchronisations == 2  # everything, then image 0's rows


@pytest.mark.gpu
@pytest.mark.parametrize('candidates', [NMS_LIMIT, NMS_LIMIT + 1])
def test_the_gpu_nms_takes_up_to_its_limit_of_candidates(candidates):
    """LIMIT candidates are sorted and suppressed on the GPU (one wait), one more is left
    to the host (a second wait for its rows); both equal the CPU decoder's."""
    out = random_output('yolov8', 4, classes=7, anchors=5000)
    out[4:, :candidates] = np.maximum(out[4:, :candidates], 0.5)
    out[4:, candidates:] = 0.0
    outputs = out[None]
    cfg = PostprocessConfig(conf_threshold=0.2)
    one, two = CountingCuda(), CountingCuda()
    decode_on_gpu(outputs, 'yolov8', BOXES[:1], [cfg], cuda=one)
    got = decode_on_gpu(outputs, 'yolov8', BOXES[:1], [cfg, cfg], cuda=two)[1]
    assert_same(got[0], postprocess(out, 'yolov8', BOXES[0], cfg))
    waits = two.synchronisations - one.synchronisations
    assert waits == (1 if candidates <= NMS_LIMIT else 2)


def planted(boxes: list[tuple[float, float, float, float, int, float]], classes: int = 3,
            anchors: int = 64) -> np.ndarray:
    """A yolov8 output (4+C, A) holding (cx, cy, w, h, class, score) at anchors 0, 1, ...;
    every other anchor scores 0."""
    out = np.zeros((4 + classes, anchors), np.float32)
    out[:4] = 50
    for a, (cx, cy, w, h, c, score) in enumerate(boxes):
        out[:4, a] = cx, cy, w, h
        out[4 + c, a] = score
    return out


@pytest.mark.gpu
def test_gpu_nms_decides_ties_and_degenerate_boxes_as_opencv_does():
    """Boxes whose IoU is exactly the threshold (kept: suppressed only above it), equal
    scores (the lower anchor first), identical boxes, boxes of other classes on top of each
    other, zero and negative widths (areas that sum to ~0 count as overlap 1), boxes partly
    left of 0 (OpenCV's overflow-safe intersection): the GPU keeps what OpenCV keeps."""
    image = planted([
        (10, 10, 20, 20, 0, 0.9), (10, 20, 20, 40, 0, 0.8),   # IoU exactly 0.5
        (10, 10, 20, 20, 1, 0.9), (10, 10, 20, 20, 1, 0.9),   # identical, tied scores
        (10, 10, 20, 20, 2, 0.7),                             # on top, another class
        (300, 300, 0, 10, 0, 0.6), (300, 300, 0, 10, 0, 0.6),  # zero width, twice
        (400, 400, -10, 10, 1, 0.6), (400, 400, 10, 10, 1, 0.5),  # negative width
        (2, 100, 20, 20, 2, 0.6), (3, 102, 20, 20, 2, 0.55),   # partly left of 0
        (200, 200, 30, 30, 0, 0.4), (205, 200, 30, 30, 0, 0.4),  # tied, overlapping
    ])
    outputs = image[None]
    cfgs = [PostprocessConfig(iou_threshold=t, agnostic=a, max_detections=m)
            for t in (0.5, 0.7, 0.0, 1.0) for a in (False, True) for m in (300, 2)]
    got = decode_on_gpu(outputs, 'yolov8', BOXES[:1], cfgs)
    for cfg, (det,) in zip(cfgs, got, strict=True):
        assert_same(det, postprocess(image, 'yolov8', BOXES[0], cfg))
    assert len(got[0][0]) >= 8  # class-aware at 0.5: the pairs at exactly 0.5 both kept

def test_a_kernel_that_does_not_compile_names_its_file_and_the_compiler_message():
    from yolo_trt_ros.core.errors import CudaError
    from yolo_trt_ros.core.gpu.nvrtc import compile_source

    with pytest.raises(CudaError, match=r'could not compile broken\.cu for sm_90: .*error'):
        compile_source('extern "C" __global__ void k() { undeclared(); }', 'sm_90', 'broken.cu')
