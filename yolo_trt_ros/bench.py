"""`yolo-trt bench`: per-stage and end-to-end timings, median and p99 after warm-up, with
the straightforward way of doing each stage measured beside ours in the same run.

Stages: image view, preprocess (CPU: ours and the straightforward version; GPU: upload and
fused kernel, where a GPU exists), inference (ONNX Runtime; TensorRT cannot run on any
machine this project has), output download (GPU), decode + NMS (ours and the
straightforward version), message build. Inputs: 640x480, 1280x720, 1920x1080 bgr8.
Prints a table and writes JSON with the machine it ran on.
"""
from __future__ import annotations

import ctypes
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .core.images import view_image
from .core.postprocess import PostprocessConfig, postprocess
from .core.preprocess import Letterbox, Preprocessor
from .core.synthetic import yolov8_output

SIZES = ((480, 640), (720, 1280), (1080, 1920))
CLASSES, ANCHORS, INPUT = 80, 8400, 640  # a YOLOv8/11 640 export: output (1, 84, 8400)


@dataclass
class Result:
    stage: str
    size: str
    median_ms: float
    p99_ms: float
    note: str = ''


@dataclass
class Report:
    machine: dict
    results: list[Result] = field(default_factory=list)

    def add(self, stage: str, size: str, times: list[float], note: str = '') -> Result:
        ms = np.asarray(times) * 1e3
        r = Result(stage, size, round(float(np.median(ms)), 3),
                   round(float(np.percentile(ms, 99)), 3), note)
        self.results.append(r)
        return r


def measure(fn: Callable[[], object], frames: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(frames):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def machine_info() -> dict:
    from .core.cuda import probe_gpu

    cpu = platform.processor()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    gpu = probe_gpu()
    versions = {'python': platform.python_version(), 'numpy': np.__version__,
                'opencv': cv2.__version__}
    for mod in ('onnxruntime', 'tensorrt_rtx', 'tensorrt'):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # not installed, or the PyPI stub that raises on import
            pass
    return {'cpu': cpu, 'cores': os.cpu_count(), 'gpu': gpu.name or None,
            'gpu_compute_capability': gpu.compute_capability, 'versions': versions,
            'date': time.strftime('%Y-%m-%d %H:%M:%S %Z')}


# -- the straightforward versions, as most Python detection nodes write them ---------------
def naive_preprocess(bgr: np.ndarray, size: int = INPUT) -> np.ndarray:
    h, w = bgr.shape[:2]
    r = min(size / h, size / w)
    nw, nh = round(w * r), round(h * r)
    img = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, left = (size - nh) // 2, (size - nw) // 2
    img = cv2.copyMakeBorder(img, top, size - nh - top, left, size - nw - left,
                             cv2.BORDER_CONSTANT, value=(114, 114, 114))
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img = img.transpose(2, 0, 1)
    img = np.ascontiguousarray(img) / 255.0
    return img[None].astype(np.float32)


def naive_decode_nms(output: np.ndarray, box: Letterbox, conf: float = 0.25,
                     iou: float = 0.45) -> list[tuple[int, float, list[float]]]:
    rows = output[0].T  # (8400, 84)
    boxes, scores, class_ids = [], [], []
    for row in rows:
        cls_scores = row[4:]
        cid = int(np.argmax(cls_scores))
        score = float(cls_scores[cid])
        if score > conf:
            cx, cy, w, h = row[:4]
            boxes.append([float(cx - w / 2), float(cy - h / 2), float(w), float(h)])
            scores.append(score)
            class_ids.append(cid)
    keep = cv2.dnn.NMSBoxesBatched(boxes, scores, class_ids, conf, iou) if boxes else []
    out = []
    for i in np.asarray(keep).reshape(-1):
        x, y, w, h = boxes[i]
        xyxy = np.array([[x, y, x + w, y + h]], np.float32)
        out.append((class_ids[i], scores[i], box.to_original(xyxy)[0].tolist()))
    return sorted(out, key=lambda d: -d[1])


def synthetic_output() -> np.ndarray:
    return yolov8_output(CLASSES, ANCHORS, INPUT)[None]


def _frame(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(h)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def run(frames: int = 300, warmup: int = 30, model: Path | None = None,
        log=print) -> Report:
    report = Report(machine_info())
    output = synthetic_output()
    for h, w in SIZES:
        _size_stages(report, h, w, output, frames, warmup, log)
    _inference(report, model, frames, warmup)
    return report


def _size_stages(report: Report, h: int, w: int, output: np.ndarray, frames: int,
                 warmup: int, log) -> None:
    size, cfg = f'{w}x{h}', PostprocessConfig()
    bgr = _frame(h, w)
    data = bgr.tobytes()
    view = view_image(data, h, w, 'bgr8', w * 3)
    report.add('image view (zero copy)', size,
               measure(lambda: view_image(data, h, w, 'bgr8', w * 3), frames, warmup))
    pre = Preprocessor(INPUT, INPUT)
    ours = report.add('preprocess CPU: ours', size, measure(lambda: pre(view), frames, warmup))
    naive = report.add('preprocess CPU: straightforward', size,
                       measure(lambda: naive_preprocess(bgr), frames, warmup))
    ours.note = f'{naive.median_ms / ours.median_ms:.1f}x faster than straightforward'
    box = pre(view)
    np.testing.assert_allclose(pre.buffer, naive_preprocess(bgr), atol=1 / 255)
    ours_d = report.add('decode+NMS: ours', size,
                        measure(lambda: postprocess(output[0], 'yolov8', box, cfg),
                                frames, warmup))
    naive_d = report.add('decode+NMS: straightforward', size,
                         measure(lambda: naive_decode_nms(output, box), max(frames // 10, 10), 3))
    det = postprocess(output[0], 'yolov8', box, cfg)
    ref = naive_decode_nms(output, box)
    same = ([int(c) for c in det.class_ids] == [c for c, _, _ in ref] and
            np.allclose(det.boxes, [b for _, _, b in ref], atol=1e-3))
    ours_d.note = (f'{naive_d.median_ms / ours_d.median_ms:.0f}x faster; '
                   f'{len(det)} detections, {"identical" if same else "DIFFERENT"}')
    _message_build(report, det, size, frames, warmup)
    _gpu_stages(report, view, output, data, h, w, size, frames, warmup)


def _message_builder():
    """detections -> Detection2DArray where rclpy and vision_msgs are installed, else None."""
    try:
        from std_msgs.msg import Header

        from .ros.conversions import detection_array
    except ImportError:
        return None
    header = Header(frame_id='camera')
    return lambda det: detection_array(det, header, str)


def _message_build(report, det, size, frames, warmup) -> None:
    build = _message_builder()
    if build is not None:
        report.add('message build (Detection2DArray)', size,
                   measure(lambda: build(det), frames, warmup), f'{len(det)} detections')


def _gpu_stages(report, view, output, data, h, w, size, frames, warmup) -> None:
    from .core.cuda import CudaRuntime, probe_gpu

    if probe_gpu().count == 0:
        return
    from .core.gpu_preprocess import GpuPreprocessor
    from .core.images import view_image as view_of

    cuda = CudaRuntime()
    stream = cuda.stream_create()
    out_bytes = output.nbytes
    d_out, h_out_ptr = cuda.malloc(out_bytes), cuda.malloc_host(out_bytes)
    h_out = np.frombuffer((ctypes.c_byte * out_bytes).from_address(h_out_ptr),
                          np.float32).reshape(output.shape)
    cuda.copy_to_device(d_out, output.ctypes.data, out_bytes, stream)
    try:
        with GpuPreprocessor(INPUT, INPUT, stream=stream, cuda=cuda, staging='direct') as direct:
            def upload_direct():
                direct(view)
                cuda.stream_synchronize(stream)

            report.add('preprocess GPU: upload from pageable + kernel', size,
                       measure(upload_direct, frames, warmup), 'staging=direct')
        with GpuPreprocessor(INPUT, INPUT, stream=stream, cuda=cuda, staging='pinned') as gpu:
            def preprocess():
                gpu(view)
                cuda.stream_synchronize(stream)

            def download():
                cuda.copy_to_host(h_out.ctypes.data, d_out, out_bytes, stream)
                cuda.stream_synchronize(stream)

            report.add('preprocess GPU: copy to pinned + upload + kernel', size,
                       measure(preprocess, frames, warmup), probe_gpu().name)
            report.add('download (1, 84, 8400) float32', size, measure(download, frames, warmup))
            build_message = _message_builder()
            cfg = PostprocessConfig()

            def pipeline():  # all but inference, as the detector runs it per frame
                v = view_of(data, h, w, 'bgr8', w * 3)
                box = gpu(v)
                cuda.copy_to_host(h_out.ctypes.data, d_out, out_bytes, stream)
                cuda.stream_synchronize(stream)
                result = postprocess(h_out[0], 'yolov8', box, cfg)
                if build_message is not None:
                    build_message(result)

            report.add('GPU pipeline without inference (view, upload, kernel, download, '
                       'decode, NMS, message)', size, measure(pipeline, frames, warmup))
    finally:
        cuda.free(d_out)
        cuda.free_host(h_out_ptr)
        cuda.stream_destroy(stream)


def _inference(report, model: Path | None, frames: int, warmup: int) -> None:
    from .core import assets
    from .core.backends.onnxruntime import OnnxRuntimeBackend

    model = model or assets.default_model_path()
    if not model.is_file():
        return
    with OnnxRuntimeBackend(model) as backend:
        _, _, h, w = backend.input.shape
        x = np.random.default_rng(0).uniform(0, 1, (1, 3, h, w)).astype(np.float32)
        report.add(f'inference ONNX Runtime CPU ({model.name})', f'{w}x{h} input',
                   measure(lambda: backend.infer(x), max(frames // 5, 20), 5))


def format_table(report: Report) -> str:
    m = report.machine
    lines = [f"machine: {m['cpu']} ({m['cores']} cores), GPU: {m['gpu'] or 'none'}",
             f"{'stage':<62} {'input':>11} {'median ms':>10} {'p99 ms':>8}  note"]
    for r in report.results:
        lines.append(f'{r.stage:<62} {r.size:>11} {r.median_ms:>10.3f} {r.p99_ms:>8.3f}  '
                     f'{r.note}')
    return '\n'.join(lines)


def main(frames: int, warmup: int, json_path: str | None, model: str | None) -> int:
    report = run(frames, warmup, Path(model) if model else None,
                 log=lambda m: print(m, file=sys.stderr))
    print(format_table(report))
    if json_path:
        Path(json_path).write_text(json.dumps(
            {'machine': report.machine, 'results': [r.__dict__ for r in report.results]},
            indent=2))
        print(f'wrote {json_path}')
    return 0
