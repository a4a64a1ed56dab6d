"""The ONNX Runtime backend between runs: a detector runs once a frame, and the time between
frames belongs to the camera drivers and DDS, not to threads waiting for the next run."""
from __future__ import annotations

import statistics
import time

import numpy as np
from support.models import conv_stack

from yolo_trt_ros.core.backends.onnxruntime import OnnxRuntimeBackend

IDLE_S = 0.1


def idle_cpu_ms(backend: OnnxRuntimeBackend, x: np.ndarray, windows: int = 5) -> float:
    """The process's CPU time over IDLE_S of sleep right after a run (median of windows)."""
    for _ in range(3):
        backend.infer(x)
    spent = []
    for _ in range(windows):
        backend.infer(x)
        start = time.process_time()
        time.sleep(IDLE_S)
        spent.append((time.process_time() - start) * 1e3)
    return statistics.median(spent)


def test_intra_op_threads_sleep_between_runs(tmp_path):
    """ONNX Runtime's default spin-wait after a run took 40 ms of CPU in the next 100 ms on
    the dev machine (a detector at 10 fps: 96 CPU ms a frame instead of 57,
    bench/ort_threads.py); the backend's threads sleep instead."""
    model = conv_stack(tmp_path / 'convs.onnx', 4)
    x = np.zeros((1, 3, 160, 160), np.float32)
    with OnnxRuntimeBackend(model, threads=2) as backend:  # one worker thread beside ours
        spent = idle_cpu_ms(backend, x)
    assert spent < 0.1 * IDLE_S * 1e3, f'{spent:.1f} ms of CPU in {IDLE_S * 1e3:.0f} ms idle'


def test_spinning_is_there_to_be_turned_off(tmp_path):
    """The measurement sees spinning where ONNX Runtime does it (spin=True, its default)."""
    model = conv_stack(tmp_path / 'convs.onnx', 4)
    x = np.zeros((1, 3, 160, 160), np.float32)
    with OnnxRuntimeBackend(model, threads=2, spin=True) as spinning, \
            OnnxRuntimeBackend(model, threads=2) as sleeping:
        assert idle_cpu_ms(spinning, x) > idle_cpu_ms(sleeping, x)
