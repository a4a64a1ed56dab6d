"""Shared pieces of the ROS benchmarks: the null-inference model and node processes."""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from yolo_trt_ros.core.dds import PROFILE_VARIABLES, with_profile
from yolo_trt_ros.core.models.synthetic import constant_output_model, yolov8_output
from yolo_trt_ros.launcher import param_args

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / 'config' / 'fastdds_large_frames.xml'
STAMP_SEC, STAMP_NANOSEC = 4, 8  # CDR: 4 bytes of encapsulation, then header.stamp


def answer_taker(got: dict, deserialize_ms: list[float], key: Callable[[int, int], object]):
    """A raw subscription's callback for the detector's answers: the arrival time into
    got[key(sec, nanosec)], read from the CDR bytes before anything else; then the answer
    is deserialized as a Python subscriber would, and that time goes to deserialize_ms.

    Timed after rclpy's deserialization (as the round trip was until 2026-12-06), a
    Detection2DArray of 20 detections added 1.12 ms to the node's round trip on the dev
    machine, against 0.03 ms for the echo's empty answer: the benchmark's own Python
    conversion of a larger message, counted as what the node adds. It is reported beside
    the round trip instead (what a Python subscriber of these answers pays)."""
    from rclpy.serialization import deserialize_message
    from vision_msgs.msg import Detection2DArray

    def take(data: bytes) -> None:
        t = time.perf_counter()
        got.setdefault(key(*struct.unpack_from('<iI', data, STAMP_SEC)), t)
        deserialize_message(data, Detection2DArray)
        deserialize_ms.append((time.perf_counter() - t) * 1e3)
    return take


def null_model(directory: Path, batch: int | str = 1) -> Path:
    """YOLOv8n-640 shapes ((N, 3, 640, 640) -> (N, 84, 8400)) with inference taken out: the
    graph only reads the input (ReduceMean) and adds a fixed, realistic output."""
    return constant_output_model(directory / f'null_yolov8_640_b{batch}.onnx',
                                 yolov8_output(), (640, 640), batch=batch)


def inference(directory: Path, max_batch: int = 8) -> tuple[dict, dict]:
    """(detector parameters, environment additions) that take inference out. On a GPU: the
    TensorRT backend on the stand-in engine (yolo_trt_ros/testing/gpu_standin.py), so the
    whole GPU path runs; elsewhere the null-inference model on ONNX Runtime."""
    from yolo_trt_ros.core.backends.trt_module import RUNTIME_MODULE_ENV
    from yolo_trt_ros.core.gpu.cuda import probe_gpu

    if probe_gpu().count == 0:
        return {'model': str(null_model(directory, batch='N')), 'backend': 'onnxruntime'}, {}
    from yolo_trt_ros.testing import gpu_standin

    engine = gpu_standin.make_engine(directory / 'standin' / 'standin.engine',
                                     max_batch=max_batch)
    return ({'model': str(null_model(directory, batch='N')), 'backend': 'auto',
             'engine_path': str(engine)},
            {RUNTIME_MODULE_ENV: gpu_standin.__name__})


def camera_jpeg(h: int, w: int, quality: int = 90) -> bytes:
    """A camera-like frame (yolo_trt_ros.bench.camera_frame) as JPEG."""
    import cv2

    from yolo_trt_ros.benchmarks.stages import camera_frame

    ok, data = cv2.imencode('.jpg', camera_frame(h, w), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return data.tobytes()


def start_node(module: str, params: dict, env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, '-m', module, '--ros-args', *param_args(params)],
                            env=env, stdout=open(log, 'w'), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def environment(profile: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in PROFILE_VARIABLES}
    return with_profile(env, str(PROFILE)) if profile else env


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix='yolo_trt_bench_'))


def serialized_frame(h: int, w: int, compressed: bool) -> bytearray:
    """The frame as the bytes a publisher sends; its stamp's nanosec at STAMP_NANOSEC."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CompressedImage

    from yolo_trt_ros.ros.image_source_node import to_message

    if compressed:
        msg = CompressedImage(format='jpeg', data=camera_jpeg(h, w))
    else:
        msg = to_message(np.random.default_rng(h).integers(0, 256, (h, w, 3),
                                                           dtype=np.uint8), 'bgr8')
    msg.header.stamp.nanosec = 0x01020304
    data = bytearray(serialize_message(msg))
    assert struct.unpack_from('<I', data, STAMP_NANOSEC)[0] == 0x01020304, 'not CDR LE'
    return data


def spin_while(node, busy: Callable[[], bool], seconds: float, step: float = 0.05) -> bool:
    """Spin node while busy() holds, for at most seconds; whether busy() stopped holding."""
    import rclpy

    end = time.monotonic() + seconds
    while busy():
        if time.monotonic() >= end:
            return False
        rclpy.spin_once(node, timeout_sec=step)
    return True


def spin_until_time(node, t: float) -> None:
    """Spin node until time.perf_counter() reaches t (pacing a publisher)."""
    import rclpy

    while (left := t - time.perf_counter()) > 0:
        rclpy.spin_once(node, timeout_sec=left)
