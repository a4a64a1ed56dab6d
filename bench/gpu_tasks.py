"""What a segmentation (and an obb, a pose) frame costs beyond detection alone, at 1080p with
20 objects, side by side in the same run (issue 20's target on the H200 host: a segment
frame <= 0.5 ms more than a detect frame). Each way is checked against the CPU twin before
it is timed.

Per frame, after inference, what the node does:
  detect   decode + NMS of a (1, 84, 8400) output, the Detection2DArray
  segment  decode + NMS of a (1, 116, 8400) output, the 20 masks from (1, 32, 160, 160)
           prototypes at 1920x1080, the label image, the Detection2DArray and the masks Image
  obb/pose decode + rotated NMS / keypoints, the message(s)
GPU rows: the output and prototypes lie on the GPU where an engine leaves them (GpuDecoder,
GpuMasks); CPU rows: the CPU twin (postprocess) on the same outputs.

    python bench/gpu_tasks.py [--frames 300] [--json bench/results/gpu_tasks_h200.json]
    python bench/gpu_tasks.py --cpu [--json bench/results/tasks_dev.json]   # no GPU needed
"""
from __future__ import annotations

import sys
from functools import partial

import numpy as np
from stage_report import Log, run_stages

from yolo_trt_ros.benchmarks.stages import Report, measure
from yolo_trt_ros.core.models.synthetic import task_output, yolov8_output
from yolo_trt_ros.core.pipeline.decode import postprocess
from yolo_trt_ros.core.pipeline.head import Head
from yolo_trt_ros.core.pipeline.masks import MaskGeometry, label_dtype
from yolo_trt_ros.core.pipeline.preprocess import Letterbox
from yolo_trt_ros.core.pipeline.results import Detections, PostprocessConfig
from yolo_trt_ros.core.serving.cdr import Stamped
from yolo_trt_ros.core.serving.cdr_writer import (
    detection_array_cdr,
    image_cdr,
    keypoints_array_cdr,
)

H, W, INPUT, OBJECTS = 1080, 1920, 640, 20
SIZE = f'{W}x{H}, {OBJECTS} objects'
BOX = Letterbox.fit(W, H, INPUT, INPUT)
CFG = PostprocessConfig()
STAMP = Stamped(1, 2, 'camera')
HEADS = {'detect': Head(), 'obb': Head('obb', 'yolov8', 1),
         'segment': Head('segment', 'yolov8', 32, mask_dim=32, proto_output=1),
         'pose': Head('pose', 'yolov8', 51, kpt_shape=(17, 3))}


def outputs(task: str) -> tuple[np.ndarray, ...]:
    if task == 'detect':
        return (yolov8_output(objects=OBJECTS, seed=7),)
    return task_output(task, classes=1 if task == 'pose' else 80, objects=OBJECTS, seed=7)


def messages(det: Detections, head: Head) -> list[bytes]:
    """What the node publishes for one frame of this head."""
    out = [detection_array_cdr(det, STAMP, str)]
    if det.masks is not None:
        label = det.masks.label_image()
        out.append(image_cdr(label, 'mono8' if label.dtype == label_dtype(1) else 'mono16',
                             STAMP))
    if det.keypoints is not None:
        out.append(keypoints_array_cdr(det, STAMP, head.keypoint_names))
    return out


def cpu_stages(report: Report, frames: int, log: Log) -> dict[str, Detections]:
    found = {}
    for task, head in HEADS.items():
        outs = outputs(task)
        protos = outs[1] if task == 'segment' else None

        def frame(outs=outs, head=head, protos=protos):
            det = postprocess(outs[0], 'yolov8', BOX, CFG, head, protos)
            messages(det, head)
            return det
        found[task] = det = frame()
        report.add(f'{task} CPU: decode + NMS{" + masks" if protos is not None else ""} + '
                   f'messages', SIZE, measure(frame, frames, 10),
                   f'{len(det)} detections')
    return found


def gpu_stages(report: Report, frames: int, log: Log, cpu: dict[str, Detections]) -> None:
    from yolo_trt_ros.core.gpu.cuda import CudaRuntime
    from yolo_trt_ros.core.gpu.decode import GpuDecoder
    from yolo_trt_ros.core.gpu.masks import GpuMasks

    cuda = CudaRuntime()
    stream = cuda.stream_create()
    pointers = []

    def upload(array: np.ndarray) -> int:
        array = np.ascontiguousarray(array[None])
        pointers.append(ptr := cuda.malloc(array.nbytes))
        cuda.copy_to_device(ptr, array.ctypes.data, array.nbytes, stream)
        cuda.stream_synchronize(stream)
        return ptr

    rows = {}
    try:
        for task, head in HEADS.items():
            outs = outputs(task)
            d_out = upload(outs[0])
            masks = maskers = None
            if task == 'segment':
                d_protos = upload(outs[1])
                masks = GpuMasks(stream=stream, cuda=cuda)
                geometry = MaskGeometry(BOX, 4.0, outs[1].shape[1:])
                maskers = [partial(masks, d_protos, 32, outs[1].shape[1:],
                                   geometry=geometry)]
            with GpuDecoder('yolov8', (1, *outs[0].shape), stream=stream, cuda=cuda,
                            head=head) as dec:
                def frame(dec=dec, d_out=d_out, maskers=maskers, head=head):
                    det = dec(d_out, [BOX], CFG, maskers)[0]
                    messages(det, head)
                    return det
                same = _same(frame(), cpu[task])
                rows[task] = report.add(
                    f'{task} GPU: decode kernel + NMS'
                    f'{" + mask and label kernels" if masks else ""} + messages', SIZE,
                    measure(frame, frames, 20),
                    f'{len(cpu[task])} detections, {"identical" if same else "DIFFERENT"} '
                    f'to the CPU twin')
            if masks is not None:
                masks.close()
        extra = rows['segment'].median_ms - rows['detect'].median_ms
        rows['segment'].note += (f'; {extra:.3f} ms more than detect (target <= 0.5 ms: '
                                 f'{"met" if extra <= 0.5 else "NOT met"})')
        log(f'segment - detect, GPU, p50: {extra:.3f} ms')
    finally:
        for ptr in pointers:
            cuda.free(ptr)
        cuda.stream_destroy(stream)


def _same(a: Detections, b: Detections) -> bool:
    fields = ('boxes', 'scores', 'class_ids', 'rboxes', 'keypoints')
    same = all((getattr(a, f) is None and getattr(b, f) is None) or
               np.array_equal(getattr(a, f), getattr(b, f)) for f in fields)
    if a.masks is not None:
        same &= (np.array_equal(a.masks.data, b.masks.data) and
                 np.array_equal(a.masks.label_image(), b.masks.label_image()))
    return same


def main() -> int:
    cpu_only = '--cpu' in sys.argv  # the CPU rows only (run_stages parses the rest)
    if cpu_only:
        sys.argv.remove('--cpu')

    def stages(report: Report, frames: int, log: Log) -> None:
        cpu = cpu_stages(report, frames, log)
        if not cpu_only:
            gpu_stages(report, frames, log, cpu)
    return run_stages(__doc__.splitlines()[0], stages)


if __name__ == '__main__':
    sys.exit(main())
