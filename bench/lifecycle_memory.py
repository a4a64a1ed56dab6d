"""GPU memory of the detector in each lifecycle state (issue 18: inactive at most 10 % of
active), measured on the GPU machine with the stand-in engine (testing/gpu_standin.py).

One process does what the managed node does in each transition, through the same calls
(Detector.open = configure, frames = active, Detector.suspend = deactivate,
Detector.resume + frames = activate again, Detector.close = cleanup), and reads the
device's used memory (cudaMemGetInfo; the GPU is this run's alone) after each. What the
node holds is that minus the memory used before the detector opened, with the process's
CUDA context already made (the context stays for the life of the process in every state;
it is reported on its own). Frames: 8 raw 1080p images in one batch, then 8 1080p JPEGs
decoded on the GPU (nvImageCodec) where it is installed.

Not measured here: TensorRT's own memory (engine weights, stay while inactive; the
execution context's activation memory, freed by suspend): the stand-in engine has no
network. Detector.suspend frees the context the same way for a real engine.

    python bench/lifecycle_memory.py [--json bench/results/lifecycle_memory_h200.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import camera_jpeg, inference

from yolo_trt_ros.benchmarks.stages import machine_info
from yolo_trt_ros.core.gpu.cuda import _runtime, check
from yolo_trt_ros.core.image.buffers import ImageView

MB = 1 << 20
CAMERAS = 8


def used_bytes() -> int:
    cudart = _runtime()
    free, total = check(cudart.cudaMemGetInfo(), 'cudaMemGetInfo')
    return total - free


def frames(detector, raw: list[ImageView], jpegs: list[bytes]) -> int:
    """One batch of raw frames and one of JPEGs through the detector: detections found."""
    found = sum(len(d.boxes) for d in detector.detect(raw))
    decoded = detector.decode_compressed([(j, 'jpeg') for j in jpegs])
    found += sum(len(d.boxes) for d in detector.detect(decoded))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--json', metavar='PATH')
    args = parser.parse_args()
    from yolo_trt_ros.core.gpu.cuda import probe_gpu
    if probe_gpu().count == 0:
        print('lifecycle_memory: no GPU here; run it on the GPU machine', file=sys.stderr)
        return 2
    directory = Path(tempfile.mkdtemp(prefix='yolo_trt_lifecycle_'))
    params, env = inference(directory, max_batch=CAMERAS)
    os.environ.update(env)
    from yolo_trt_ros.core.runtime.detector import Detector, DetectorConfig

    check(_runtime().cudaFree(0), 'cudaFree')  # the process's CUDA context, made now
    before = used_bytes()
    rng = np.random.default_rng(0)
    raw = [ImageView(rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8), 'bgr')
           for _ in range(CAMERAS)]
    jpegs = [camera_jpeg(1080, 1920)] * CAMERAS
    states = []

    def note(state: str) -> None:
        held = used_bytes() - before
        states.append({'state': state, 'held_mb': round(held / MB, 1)})
        print(f'{state:40s} {held / MB:8.1f} MB', flush=True)

    detector = Detector.open(DetectorConfig(model=Path(params['model']), backend='auto',
                                            engine=Path(params['engine_path'])))
    note('configured (engine loaded)')
    found = frames(detector, raw, jpegs)
    jpeg_device = detector.jpeg_device  # before suspend/close release the decoder
    note('active (after raw + JPEG batches)')
    detector.suspend()
    note('inactive (deactivate: suspend)')
    detector.resume()
    found += frames(detector, raw, jpegs)
    note('active again (activate: resume)')
    detector.suspend()
    note('inactive again')
    detector.close()
    note('unconfigured (cleanup: close)')
    active = max(s['held_mb'] for s in states if s['state'].startswith('active'))
    inactive = max(s['held_mb'] for s in states if s['state'].startswith('inactive'))
    result = {'machine': machine_info(), 'backend': detector.backend.info.name,
              'jpeg_device': jpeg_device, 'cameras': CAMERAS, 'size': '1920x1080',
              'context_and_runtime_mb': round(before / MB, 1), 'detections': found,
              'states': states,
              'inactive_over_active': round(inactive / active, 3) if active else None}
    print(json.dumps({k: v for k, v in result.items() if k != 'machine'}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
