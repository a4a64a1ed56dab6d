"""ONNX Runtime's thread spinning, on and off, in the same run: a run's latency and the CPU
the whole process spends per frame.

    python bench/ort_threads.py [--model M] [--frames 60] [--json out.json]

ONNX Runtime's intra-op threads spin-wait after each run by default, for the next run to
start sooner. A detector node runs once a frame (every 33 ms at 30 fps): the spinning then
burns CPU between frames, on the cores the camera drivers and the DDS threads need. The
backend turns it off (core/backends/onnxruntime.py); this says what that costs and saves.
Paces: frames back to back (a folder of files) and at camera rates (a run, then the rest
of 1/fps asleep). The two settings alternate in blocks of 10 frames, so drift on a
shared machine falls on both.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

BLOCK = 10  # frames per block; the settings alternate block by block


def measure(model: Path, frames: int, fps: list[float]) -> list[dict]:
    from yolo_trt_ros.core.backends.onnxruntime import OnnxRuntimeBackend

    backends = {spin: OnnxRuntimeBackend(model, spin=spin) for spin in (True, False)}
    _, _, h, w = backends[True].input.shape
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, h, w)).astype(np.float32)
    rows = []
    for pace, period in (('back to back', 0.0), *((f'{f:g} fps', 1.0 / f) for f in fps)):
        runs: dict[bool, list[float]] = {True: [], False: []}
        cpu: dict[bool, float] = {True: 0.0, False: 0.0}
        for backend in backends.values():
            for _ in range(5):  # warm-up
                backend.infer(x)
        for block in range(2 * -(-frames // BLOCK)):
            spin = block % 2 == 0
            backend = backends[spin]
            time.sleep(0.2)  # the other setting's threads stop spinning first
            c0 = time.process_time()
            for _ in range(BLOCK):
                t = time.perf_counter()
                backend.infer(x)
                took = time.perf_counter() - t
                runs[spin].append(took)
                if period:
                    time.sleep(max(0.0, period - took))
            if period:  # the last frame's spinning falls in its own frame time
                time.sleep(period)
            cpu[spin] += time.process_time() - c0
        for spin in (True, False):
            t = np.array(runs[spin]) * 1e3
            rows.append({'pace': pace, 'spinning': spin, 'frames': len(t),
                         'run_p50_ms': round(float(np.median(t)), 2),
                         'run_p99_ms': round(float(np.percentile(t, 99)), 2),
                         'cpu_ms_per_frame': round(cpu[spin] / len(t) * 1e3, 2)})
            print(json.dumps(rows[-1]), flush=True)
    for backend in backends.values():
        backend.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', type=Path, help='ONNX model (default: the default model)')
    parser.add_argument('--frames', type=int, default=60, help='frames per setting and pace')
    parser.add_argument('--fps', type=float, nargs='+', default=[30.0, 10.0],
                        help='camera rates')
    parser.add_argument('--json')
    args = parser.parse_args()
    from yolo_trt_ros.benchmarks.stages import machine_info
    from yolo_trt_ros.core.models.assets import ensure_default_model

    model = args.model or ensure_default_model()
    rows = measure(model, args.frames, args.fps)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {'machine': machine_info(), 'model': model.name, 'results': rows}, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
