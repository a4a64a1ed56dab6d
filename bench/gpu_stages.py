"""The GPU stages of issue 12 timed on the GPU machine at 1080p, p50/p99 after warm-up,
each beside the CPU way in the same run, and each checked against it before it is timed:

- upload + preprocessing kernel (GpuPreprocessor) vs the CPU Preprocessor
- output decode + NMS: GpuDecoder (kernel, candidates downloaded) vs download + postprocess
- JPEG 1080p q90: nvImageCodec (one frame, and a batch of 8 cameras) vs cv2.imdecode, and
  nvImageCodec decode + preprocessing kernel reading the decoded frame in device memory
- Detection2DArray: CDR writer vs rclpy message + serialization (where rclpy is installed)

    python bench/gpu_stages.py [--frames 300] [--json bench/results/gpu_stages_h200.json]
"""
from __future__ import annotations

import sys

import numpy as np
from common import camera_jpeg
from stage_report import Log, run_stages

from yolo_trt_ros.benchmarks.stages import Report, measure
from yolo_trt_ros.core.gpu.cuda import CudaRuntime, host_array
from yolo_trt_ros.core.gpu.decode import GpuDecoder
from yolo_trt_ros.core.gpu.jpeg import open_gpu_jpeg
from yolo_trt_ros.core.gpu.preprocess import GpuPreprocessor
from yolo_trt_ros.core.image.buffers import ImageView
from yolo_trt_ros.core.image.decode import decode_compressed
from yolo_trt_ros.core.models.synthetic import yolov8_output
from yolo_trt_ros.core.pipeline.decode import postprocess
from yolo_trt_ros.core.pipeline.preprocess import Letterbox, Preprocessor
from yolo_trt_ros.core.pipeline.results import PostprocessConfig

H, W, INPUT, CAMERAS = 1080, 1920, 640, 8
SIZE = f'{W}x{H}'


def preprocess_stages(report: Report, cuda: CudaRuntime, stream: int, frames: int) -> None:
    bgr = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    view = ImageView(bgr, 'bgr')
    cpu = Preprocessor(INPUT, INPUT)
    report.add('preprocess CPU (Preprocessor)', SIZE, measure(lambda: cpu(view), frames, 20))
    with GpuPreprocessor(INPUT, INPUT, stream=stream, cuda=cuda) as gpu:
        def upload_and_kernel():
            gpu(view)
            cuda.stream_synchronize(stream)

        report.add('preprocess GPU (upload + kernel)', SIZE,
                   measure(upload_and_kernel, frames, 20))


def decode_stages(report: Report, cuda: CudaRuntime, stream: int, frames: int) -> None:
    for batch, dtype in ((1, np.float32), (1, np.float16), (CAMERAS, np.float32)):
        decode_stage(report, cuda, stream, frames, batch, np.dtype(dtype))


def decode_stage(report: Report, cuda: CudaRuntime, stream: int, frames: int, batch: int,
                 dtype: np.dtype) -> None:
    """batch realistic (84, 8400) outputs of dtype: downloaded whole and decoded on the CPU,
    against GpuDecoder, after checking that both give the same detections."""
    output = np.stack([yolov8_output(seed=i) for i in range(batch)]).astype(dtype)
    boxes, cfg = [Letterbox.fit(W, H, INPUT, INPUT)] * batch, PostprocessConfig()
    what = f'({batch}, 84, 8400) {dtype.name}'
    d_out = cuda.malloc(output.nbytes)
    h_ptr = cuda.malloc_host(output.nbytes)
    h_out = host_array(h_ptr, output.nbytes, dtype, output.shape)
    try:
        cuda.copy_to_device(d_out, output.ctypes.data, output.nbytes, stream)

        def cpu_way():
            cuda.copy_to_host(h_out.ctypes.data, d_out, output.nbytes, stream)
            cuda.stream_synchronize(stream)
            return [postprocess(h_out[i], 'yolov8', box, cfg) for i, box in enumerate(boxes)]

        with GpuDecoder('yolov8', output.shape, dtype, stream=stream, cuda=cuda) as dec:
            cpu_det, gpu_det = cpu_way(), dec(d_out, boxes, cfg)
            same = all(np.array_equal(c.boxes, g.boxes) and np.array_equal(c.scores, g.scores)
                       and np.array_equal(c.class_ids, g.class_ids)
                       for c, g in zip(cpu_det, gpu_det, strict=True))
            cpu_r = report.add(f'decode+NMS CPU: download {what} + postprocess', SIZE,
                               measure(cpu_way, frames, 20))
            gpu_r = report.add(f'decode+NMS GPU: GpuDecoder {what}', SIZE,
                               measure(lambda: dec(d_out, boxes, cfg), frames, 20))
            gpu_r.note = (f'{cpu_r.median_ms / gpu_r.median_ms:.1f}x faster; '
                          f'{sum(map(len, gpu_det))} detections, '
                          f'{"identical" if same else "DIFFERENT"}')
    finally:
        cuda.free(d_out)
        cuda.free_host(h_ptr)


def jpeg_stages(report: Report, cuda: CudaRuntime, stream: int, frames: int, log: Log) -> None:
    data = camera_jpeg(H, W)
    size = f'{SIZE} q90 {len(data) // 1024} KB'
    cpu = report.add('JPEG decode CPU (cv2.imdecode)', size,
                     measure(lambda: decode_compressed(data, 'jpeg'), frames, 10))
    decoder, reason = open_gpu_jpeg(W * H, stream)
    if decoder is None:
        log(f'JPEG on the GPU skipped: {reason}')
        return
    with decoder, GpuPreprocessor(INPUT, INPUT, stream=stream, cuda=cuda) as pre:
        def decode(batch: list[bytes]) -> list:
            images = decoder(batch)
            cuda.stream_synchronize(stream)
            return images

        def decode_and_preprocess():
            pre.from_device(decoder([data])[0])
            cuda.stream_synchronize(stream)

        one = report.add('JPEG decode GPU (nvImageCodec, 1 frame)', size,
                         measure(lambda: decode([data]), frames, 10), reason)
        one.note += f'; {cpu.median_ms / one.median_ms:.1f}x faster than cv2'
        batch = report.add(f'JPEG decode GPU (nvImageCodec, batch of {CAMERAS}), whole batch',
                           size, measure(lambda: decode([data] * CAMERAS), frames // 4, 5))
        batch.note = f'{batch.median_ms / CAMERAS:.2f} ms per frame'
        report.add('JPEG decode GPU + preprocessing kernel (device input)', size,
                   measure(decode_and_preprocess, frames, 10))
        # The device-input path letterboxes the decoded frame as the CPU path does the cv2 one.
        pre.from_device(decoder([data])[0])
        ref = Preprocessor(INPUT, INPUT)
        ref(decode_compressed(data, 'jpeg'))
        diff = np.abs(pre.download()[0] - ref.buffer[0])
        log(f'decoded-on-GPU preprocessing vs CPU: mean {diff.mean() * 255:.3f}, '
            f'max {diff.max() * 255:.1f} levels')


def message_stages(report: Report, frames: int, log: Log) -> None:
    try:
        from message_build import compare, detections
    except ImportError as exc:  # no rclpy / vision_msgs on this machine
        log(f'message build skipped: {exc}')
        return
    compare(report, detections(20), frames)


def stages(report: Report, frames: int, log: Log) -> None:
    cuda = CudaRuntime()
    stream = cuda.stream_create()
    try:
        preprocess_stages(report, cuda, stream, frames)
        decode_stages(report, cuda, stream, frames)
        jpeg_stages(report, cuda, stream, frames, log)
        message_stages(report, frames, log)
    finally:
        cuda.stream_destroy(stream)


if __name__ == '__main__':
    sys.exit(run_stages(__doc__.splitlines()[0], stages))
