"""`yolo-trt bench`: per-stage and end-to-end timings, median and p99 after warm-up, with
the straightforward way of doing each stage measured beside ours in the same run.

Stages: image view, preprocess (CPU: ours and the straightforward version; GPU: upload and
fused kernel, where a GPU exists), inference (ONNX Runtime; TensorRT cannot run on any
machine this project has), output download (GPU), decode + NMS (ours and the
straightforward version), message build. Inputs: 640x480, 1280x720, 1920x1080 bgr8.
Prints a table and writes JSON with the machine it ran on.
"""
from __future__ import annotations

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

from yolo_trt_ros.core.defaults import CONF_THRESHOLD, IOU_THRESHOLD, MAX_DETECTIONS
from yolo_trt_ros.core.image.buffers import ImageView, view_image
from yolo_trt_ros.core.models.synthetic import yolov8_output
from yolo_trt_ros.core.pipeline.decode import postprocess
from yolo_trt_ros.core.pipeline.preprocess import Letterbox, Preprocessor
from yolo_trt_ros.core.pipeline.results import PostprocessConfig

SIZES = ((480, 640), (720, 1280), (1080, 1920))
COPY_THREADS = (1, 2, 4)  # pinned staging's copy threads measured (core/gpu/host_copy.py)
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
    from yolo_trt_ros.core.gpu.cuda import probe_gpu

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


def naive_decode_nms(output: np.ndarray, box: Letterbox, conf: float = CONF_THRESHOLD,
                     iou: float = IOU_THRESHOLD) -> list[tuple[int, float, list[float]]]:
    """Decode + NMS as a competent node writes it in numpy: best class of every anchor
    vectorised, threshold mask, OpenCV's batched NMS (no per-anchor Python loop)."""
    rows = output[0].T  # (8400, 84)
    scores_all = rows[:, 4:]
    class_ids = scores_all.argmax(axis=1)
    scores = scores_all[np.arange(len(rows)), class_ids]
    keep_mask = scores > conf
    xywh, scores, class_ids = rows[keep_mask, :4], scores[keep_mask], class_ids[keep_mask]
    boxes = np.column_stack([xywh[:, 0] - xywh[:, 2] / 2, xywh[:, 1] - xywh[:, 3] / 2,
                             xywh[:, 2], xywh[:, 3]])
    keep = cv2.dnn.NMSBoxesBatched(boxes.tolist(), scores.tolist(), class_ids.tolist(), conf,
                                   iou) if len(boxes) else []
    keep = np.asarray(keep, dtype=np.int64).reshape(-1)
    xyxy = np.column_stack([boxes[keep, :2], boxes[keep, :2] + boxes[keep, 2:]]).astype(np.float32)
    out = [(int(class_ids[i]), float(scores[i]), b.tolist())
           for i, b in zip(keep, box.to_original(xyxy) if len(keep) else [], strict=True)]
    return sorted(out, key=lambda d: -d[1])


def synthetic_output() -> np.ndarray:
    return yolov8_output(CLASSES, ANCHORS, INPUT)[None]


def _frame(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(h)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def run(frames: int = 300, warmup: int = 30, model: Path | None = None) -> Report:
    report = Report(machine_info())
    output = synthetic_output()
    for h, w in SIZES:
        _size_stages(report, h, w, output, frames, warmup)
    _inference(report, model, frames, warmup)
    return report


def _size_stages(report: Report, h: int, w: int, output: np.ndarray, frames: int,
                 warmup: int) -> None:
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
    naive_d = report.add('decode+NMS: straightforward (vectorised numpy)', size,
                         measure(lambda: naive_decode_nms(output, box), frames, warmup))
    det = postprocess(output[0], 'yolov8', box, cfg)
    ref = naive_decode_nms(output, box)
    same = ([int(c) for c in det.class_ids] == [c for c, _, _ in ref] and
            np.allclose(det.boxes, [b for _, _, b in ref], atol=1e-3))
    ours_d.note = (f'{naive_d.median_ms / ours_d.median_ms:.1f}x faster; '
                   f'{len(det)} detections, {"identical" if same else "DIFFERENT"}')
    _message_build(report, det, size, frames, warmup)
    ultra = _ultralytics(report, bgr, output, size, frames, warmup)
    if ultra is not None:
        ours_all = ours.median_ms + ours_d.median_ms
        ultra.note += (f'; ours on the CPU (pre + decode+NMS): '
                       f'{ours_all / ultra.median_ms:.2f}x of it')
    gpu_all = _gpu_stages(report, view, output, data, h, w, size, frames, warmup)
    if ultra is not None and gpu_all is not None:
        ultra.note += f'; ours on the GPU, all but inference: {gpu_all / ultra.median_ms:.2f}x'


def _message_builder():
    """detections -> Detection2DArray where rclpy and vision_msgs are installed, else None."""
    try:
        from std_msgs.msg import Header

        from yolo_trt_ros.ros.conversions import detection_array
    except ImportError:
        return None
    header = Header(frame_id='camera')
    return lambda det: detection_array(det, header, str)


def _message_build(report, det, size, frames, warmup) -> None:
    from yolo_trt_ros.core.serving.cdr import Stamped
    from yolo_trt_ros.core.serving.cdr_writer import detection_array_cdr

    header = Stamped(1, 2, 'camera')
    cdr = report.add('message as CDR bytes (what the node publishes)', size,
                     measure(lambda: detection_array_cdr(det, header, str), frames, warmup),
                     f'{len(det)} detections')
    build = _message_builder()
    if build is not None:
        python = report.add('message build (rclpy Detection2DArray, before serialisation)',
                            size, measure(lambda: build(det), frames, warmup),
                            f'{len(det)} detections')
        cdr.note += f'; {python.median_ms / cdr.median_ms:.0f}x faster than the rclpy message'


def _ultralytics(report, bgr, output, size, frames, warmup) -> Result | None:
    """Ultralytics as its users run it, when `ultralytics` is importable (an optional extra,
    never a dependency), on the same frame and the same raw output as ours:

    - its predictor (`YOLO(...).predict`), timed by itself (`results[0].speed`: preprocess
      and postprocess; inference replaced by a copy of the same fixed output, as our GPU
      rows replace TensorRT by the stand-in). 640x640 input (rect=False), as our engine;
    - its pieces as the predictor calls them (LetterBox + tensor on the GPU,
      non_max_suppression + scale_boxes) with torchvision loaded, as the predictor loads it
      (Ultralytics' NMS uses torchvision's kernel only when torchvision is imported);
    - the NMS once more with torchvision hidden: the pure-torch fallback that this bench
      timed before issue 21, which Ultralytics' users never run.
    Returns the predictor's pre+post row (what its users see), or None."""
    os.environ.setdefault('YOLO_OFFLINE', '1')  # Ultralytics: no online checks
    try:
        import torch
        import torchvision  # noqa: F401  (as Ultralytics' predictor does: its NMS needs it)
        from ultralytics.data.augment import LetterBox
        from ultralytics.utils import ops
        from ultralytics.utils.nms import non_max_suppression
    except Exception as exc:  # not installed (an optional extra), or torchvision missing
        report.machine.setdefault('not_measured', {})['ultralytics'] = str(exc)[:200]
        return None
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    letterbox = LetterBox(new_shape=(INPUT, INPUT), auto=False, stride=32)
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)

    def pre():
        im = np.stack([letterbox(image=bgr)])[..., ::-1].transpose((0, 3, 1, 2))
        t = torch.from_numpy(np.ascontiguousarray(im)).to(device).float() / 255
        sync()
        return t

    raw = torch.from_numpy(output).to(device)

    def post():  # NMS transforms its input in place: a copy each time, as a fresh output
        det = non_max_suppression(raw.clone(), CONF_THRESHOLD, IOU_THRESHOLD,
                                  max_det=MAX_DETECTIONS)[0]
        det[:, :4] = ops.scale_boxes((INPUT, INPUT), det[:, :4], bgr.shape)
        return det.cpu()

    pre_times, post_times = measure(pre, frames, warmup), measure(post, frames, warmup)
    report.add(f'Ultralytics preprocess (LetterBox + tensor, {device})', size, pre_times)
    report.add(f'Ultralytics NMS + scale_boxes ({device}, torchvision NMS)', size, post_times)
    hidden = sys.modules.pop('torchvision')  # what `"torchvision" in sys.modules` looks at
    try:
        report.add(f'Ultralytics NMS + scale_boxes ({device}), pure-torch fallback: without '
                   f'torchvision, not what its users run', size, measure(post, frames, warmup))
    finally:
        sys.modules['torchvision'] = hidden
    both = [a + b for a, b in zip(pre_times, post_times, strict=True)]
    report.add(f'Ultralytics pre+post ({device})', size, both)
    return _ultralytics_predictor(report, bgr, output, size, frames, warmup, device)


def _ultralytics_predictor(report, bgr, output, size, frames, warmup, device) -> Result:
    """Ultralytics' predictor on the frame, its own per-image timings (results[0].speed).
    The model is YOLOv8n built from Ultralytics' own YAML (no weights to download); its
    forward is replaced by a copy of the fixed output after the predictor has set itself up
    (and warmed up, which imports torchvision), so pre- and postprocessing see our output."""
    import torch
    from ultralytics import YOLO

    model = YOLO('yolov8n.yaml', task='detect')
    options = dict(imgsz=INPUT, rect=False, conf=CONF_THRESHOLD, iou=IOU_THRESHOLD,
                   max_det=MAX_DETECTIONS, device=0 if device == 'cuda' else 'cpu',
                   verbose=False, save=False, half=False)
    model.predict(bgr, **options)  # the predictor made, set up and warmed up
    fixed = torch.from_numpy(output).to(device)
    model.predictor.inference = lambda im, *args, **kwargs: fixed.clone()  # the stand-in
    speeds, found = [], 0
    for i in range(warmup + frames):
        result = model.predict(bgr, **options)[0]
        found = len(result.boxes)  # the fixed output's objects: the stand-in was used
        if i >= warmup:
            speeds.append(result.speed)
    where = f'{device}, torchvision NMS' if 'torchvision' in sys.modules else device
    for key in ('preprocess', 'postprocess'):
        report.add(f"Ultralytics predictor {key} (results[0].speed, {where})", size,
                   [s[key] / 1e3 for s in speeds])
    return report.add(f'Ultralytics predictor pre+post (results[0].speed, {where})', size,
                      [(s['preprocess'] + s['postprocess']) / 1e3 for s in speeds],
                      f'inference replaced by a copy of the same fixed output; '
                      f'{found} detections')


def _gpu_stages(report, view, output, data, h, w, size, frames, warmup) -> float | None:
    """GPU rows where there is a GPU; the median of the whole GPU path, or None."""
    from yolo_trt_ros.core.gpu.cuda import CudaRuntime, host_array, probe_gpu

    if probe_gpu().count == 0:
        return None
    from yolo_trt_ros.core.gpu.preprocess import GpuPreprocessor

    cuda = CudaRuntime()
    stream = cuda.stream_create()
    out_bytes = output.nbytes
    d_out, h_out_ptr = cuda.malloc(out_bytes), cuda.malloc_host(out_bytes)
    h_out = host_array(h_out_ptr, out_bytes, np.float32, output.shape)
    cuda.copy_to_device(d_out, output.ctypes.data, out_bytes, stream)
    try:
        with GpuPreprocessor(INPUT, INPUT, stream=stream, cuda=cuda, staging='direct') as direct:
            def upload_direct():
                direct(view)
                cuda.stream_synchronize(stream)

            report.add('preprocess GPU: upload from pageable + kernel', size,
                       measure(upload_direct, frames, warmup), 'staging=direct')
            # The node takes frames into pinned memory (ros/rcl_take.py): the same upload
            # is then one asynchronous DMA.
            pinned = host_array(cuda.malloc_host(view.pixels.nbytes), view.pixels.nbytes,
                                np.uint8, view.pixels.shape)
            try:
                pinned[:] = view.pixels
                in_pinned = ImageView(pinned, view.order)

                def upload_pinned():
                    direct(in_pinned)
                    cuda.stream_synchronize(stream)

                report.add('preprocess GPU: upload from the frame in pinned memory + kernel',
                           size, measure(upload_pinned, frames, warmup),
                           'as the node takes frames (rcl into pinned buffers)')
            finally:
                cuda.free_host(pinned.ctypes.data)
        for threads in COPY_THREADS:
            with GpuPreprocessor(INPUT, INPUT, stream=stream, cuda=cuda, staging='pinned',
                                 copy_threads=threads) as gpu:
                def preprocess(gpu=gpu):
                    gpu(view)
                    cuda.stream_synchronize(stream)

                report.add(f'preprocess GPU: copy to pinned ({threads} thread'
                           f'{"s" if threads > 1 else ""}) + upload + kernel', size,
                           measure(preprocess, frames, warmup), probe_gpu().name)

        def download():
            cuda.copy_to_host(h_out.ctypes.data, d_out, out_bytes, stream)
            cuda.stream_synchronize(stream)

        report.add('download (1, 84, 8400) float32', size, measure(download, frames, warmup))
    finally:
        cuda.free(d_out)
        cuda.free_host(h_out_ptr)
        cuda.stream_destroy(stream)
    return _gpu_detector(report, view, data, h, w, size, frames, warmup)


def camera_frame(h: int, w: int) -> np.ndarray:
    """A natural-looking frame for JPEG rows (noise would make a JPEG of unrealistic size):
    the bus sample photo resized where it is at hand, else a smooth synthetic scene."""
    from yolo_trt_ros.core.models import paths

    path = paths.sample_image_paths()[0]
    if path.is_file():
        return cv2.resize(cv2.imread(str(path)), (w, h), interpolation=cv2.INTER_LINEAR)
    yy, xx = np.mgrid[0:h, 0:w]
    scene = (np.sin(xx / 40) + np.cos(yy / 30)) * 60 + 128
    return np.repeat(scene[..., None], 3, 2).astype(np.uint8)


def _gpu_detector(report, view, data, h, w, size, frames, warmup) -> float | None:
    """The Detector's whole GPU path per frame with inference taken out by the stand-in
    engine: view, upload + preprocessing kernel into the engine input, stand-in, decode on
    the GPU (candidates downloaded), NMS, message as CDR bytes. And the same from a JPEG
    (CompressedImage) decoded on the GPU."""
    import tempfile

    from yolo_trt_ros.core.backends.tensorrt import TensorRTBackend
    from yolo_trt_ros.core.gpu.cuda import CudaRuntime
    from yolo_trt_ros.core.runtime.detector import Detector
    from yolo_trt_ros.core.serving.cdr import Stamped
    from yolo_trt_ros.core.serving.cdr_writer import detection_array_cdr
    from yolo_trt_ros.testing import gpu_standin as standin

    header = Stamped(1, 2, 'camera')
    with tempfile.TemporaryDirectory() as tmp:
        engine = standin.make_engine(Path(tmp) / 'standin.engine', INPUT, CLASSES, max_batch=8)
        with Detector(TensorRTBackend(engine, trt=standin, cuda=CudaRuntime()),
                      cuda_graphs=False) as plain:
            plain_all = _gpu_path(report, plain, data, h, w, size, frames, warmup, header)
        with Detector(TensorRTBackend(engine, trt=standin, cuda=CudaRuntime()),
                      gpu_nms=False) as host_nms:
            host_all = _gpu_path(report, host_nms, data, h, w, size, frames, warmup, header)
        backend = TensorRTBackend(engine, trt=standin, cuda=CudaRuntime())
        with Detector(backend) as det:
            names = det.label
            gpu_all = _gpu_path(report, det, data, h, w, size, frames, warmup, header)
            gpu_all.note += (f'; {plain_all.median_ms / gpu_all.median_ms:.2f}x as fast as '
                             f'without a graph, {host_all.median_ms / gpu_all.median_ms:.2f}x '
                             f'as with NMS on the host, same run')
            # The frame where the node has it: taken by rcl into the detector's pinned
            # buffers (ros/rcl_take.py), one of them handed to the view.
            buffers = det.frame_buffers()
            block = buffers.get(len(data))
            block[:len(data)] = np.frombuffer(data, np.uint8)
            taken = _gpu_path(report, det, block[:len(data)], h, w, size, frames, warmup,
                              header, f'frame in {buffers.kind} memory, as the node takes it')
            taken.note += (f'; {gpu_all.median_ms / taken.median_ms:.2f}x as fast as from '
                           'pageable memory, same run')
            del block
            buffers.close()
            jpeg = cv2.imencode('.jpg', camera_frame(h, w),
                                [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()

            def from_jpeg():
                frame = det.decode_compressed([(jpeg, 'jpeg')])[0]
                result = det.detect([frame])[0]
                return detection_array_cdr(result, header, names)

            from_jpeg()
            report.add(f'CompressedImage path, all but inference (JPEG q90 {len(jpeg) >> 10} '
                       f'KB, decode on {det.jpeg_device})', size,
                       measure(from_jpeg, frames, warmup))

            def jpeg_and_preprocess():
                det.preprocess(det.decode_compressed([(jpeg, 'jpeg')]))
                CudaRuntime().stream_synchronize(det.backend.device_io().stream)

            report.add(f'JPEG decode ({det.jpeg_device}) + preprocessing kernel', size,
                       measure(jpeg_and_preprocess, frames, warmup))
    return gpu_all.median_ms


def _gpu_path(report, det, data, h, w, size, frames, warmup, header,
              memory: str = '') -> Result:
    """The whole GPU path per frame through det: view, upload, the frame's work (a CUDA
    graph where det replays one), NMS, message as CDR bytes. memory: where the frame is,
    named in the row where it is not pageable."""
    from yolo_trt_ros.core.image.buffers import view_image as view_of
    from yolo_trt_ros.core.serving.cdr_writer import detection_array_cdr

    def everything():
        v = view_of(data, h, w, 'bgr8', w * 3)
        return detection_array_cdr(det.detect([v])[0], header, det.label)

    times = measure(everything, frames, warmup)
    graphs = det.graphs is not None and det.graphs.enabled and det.graphs.launches > 0
    where = (f'preprocess {det.preprocess_device} (staging {det.staging}), decode '
             f'{det.decode_device}, NMS {det.nms_device}, '
             f'{"one CUDA graph" if graphs else "no CUDA graph"}')
    what = ('CUDA graph' if graphs else 'stream-ordered, no CUDA graph') + (
        ', NMS on the host' if det.nms_device == 'cpu' else '') + (f', {memory}' if memory else '')
    return report.add(f'GPU path, all but inference ({what}): view, upload, kernel, stand-in, '
                      f'GPU decode, NMS, CDR message', size, times, where)


def _inference(report, model: Path | None, frames: int, warmup: int) -> None:
    from yolo_trt_ros.core.backends.onnxruntime import OnnxRuntimeBackend
    from yolo_trt_ros.core.models import paths

    model = model or paths.default_model_path()
    if not model.is_file():
        return
    with OnnxRuntimeBackend(model) as backend:
        _, c, h, w = backend.profile.opt  # as the detector feeds it (a dynamic size too)
        x = np.random.default_rng(0).uniform(0, 1, (1, c, h, w)).astype(np.float32)
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


def check_output(path: Path) -> None:
    """FileError now where the JSON could not be written after the run (minutes later):
    its folder must take a file, and what is there must be a file (written atomically
    then: a device or a pipe is not replaced); nothing is created or removed."""
    from yolo_trt_ros.core.files import FileError, folder_write_problem, regular_file_problem

    if path.exists() and (problem := regular_file_problem(path)):
        raise FileError(f'--json {path}: {problem}')
    if problem := folder_write_problem(path.parent):
        raise FileError(f'--json {path}: cannot write: {problem}')


def main(frames: int, warmup: int, json_path: str | None, model: str | None) -> int:
    from yolo_trt_ros.core.files import atomic_write

    report = run(frames, warmup, Path(model) if model else None)
    print(format_table(report))
    if json_path:
        try:  # the old results stay whole where the new cannot be written
            atomic_write(Path(json_path), json.dumps(
                {'machine': report.machine, 'results': [r.__dict__ for r in report.results]},
                indent=2).encode())
        except OSError as exc:
            print(f'yolo-trt: --json {json_path}: cannot write: {exc.strerror or exc}',
                  file=sys.stderr)
            return 1
        print(f'wrote {json_path}')
    return 0
