"""INT8 entropy calibration for TensorRT 10 (weakly typed builds), fed by the core's own
preprocessing so calibration sees exactly what inference will see.

The image batches are plain Python (`calibration_batches`), testable anywhere; the
calibrator class needs the full TensorRT and a GPU, which no machine here has.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np

from .cuda import CudaRuntime
from .errors import EngineError, ImageError
from .images import read_image
from .preprocess import Preprocessor

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')


def calibration_batches(directory: Path, batch: int, height: int,
                        width: int) -> Iterator[np.ndarray]:
    """(batch, 3, H, W) float32 batches of the images in directory (unreadable files are
    skipped); the last partial batch is dropped, as TensorRT wants full batches."""
    files = sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < batch:
        raise EngineError(f'calibration needs at least {batch} images in {directory}, '
                          f'found {len(files)}')
    pre = Preprocessor(height, width, batch=batch)
    slot = 0
    for path in files:
        try:
            pre(read_image(str(path)), slot)
        except ImageError:
            continue
        slot += 1
        if slot == batch:
            yield pre.buffer
            slot = 0


def make_calibrator(trt: ModuleType, input_tensor, directory: Path, cache_file: Path):
    """An IInt8EntropyCalibrator2 over directory; the calibration cache is reused."""
    n, _, h, w = (d if d > 0 else 1 for d in input_tensor.shape)
    if h == 1 or w == 1:
        raise EngineError('int8 calibration needs a static image size in the ONNX input')

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.cuda = CudaRuntime()
            self.batches = calibration_batches(directory, n, h, w)
            self.device = self.cuda.malloc(n * 3 * h * w * 4)

        def get_batch_size(self) -> int:
            return n

        def get_batch(self, names):
            try:
                batch = next(self.batches)
            except StopIteration:
                self.cuda.free(self.device)
                return None
            stream = 0  # legacy default stream: calibration is not latency-critical
            self.cuda.copy_to_device(self.device, batch.ctypes.data, batch.nbytes, stream)
            self.cuda.stream_synchronize(stream)
            return [self.device]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            cache_file.write_bytes(bytes(cache))

    return Calibrator()
