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

from yolo_trt_ros.core.build.lookup import calibration_files
from yolo_trt_ros.core.errors import EngineError, ImageError
from yolo_trt_ros.core.gpu.cuda import CudaRuntime
from yolo_trt_ros.core.image.decode import read_image
from yolo_trt_ros.core.pipeline.preprocess import Preprocessor
from yolo_trt_ros.core.store.trust import TrustedDir

# What calibration feeds the network: part of the calibration table's key, so a change to
# the preprocessing (letterbox, colour order, scaling) invalidates old tables.
PREPROCESSING = 'letterbox-pad114-rgb-chw-div255-v1'


def calibration_batches(directory: Path, batch: int, height: int,
                        width: int) -> Iterator[np.ndarray]:
    """(batch, 3, H, W) float32 batches of the images in directory (unreadable files are
    skipped); the last partial batch is dropped, as TensorRT wants full batches. The
    directory is checked now, not at the first batch."""
    files = calibration_files(directory)
    if len(files) < batch:
        raise EngineError(f'calibration needs at least {batch} images in {directory}, '
                          f'found {len(files)}')
    return _batches(files, batch, height, width)


def _batches(files: list[Path], batch: int, height: int, width: int) -> Iterator[np.ndarray]:
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


def make_calibrator(trt: ModuleType, input_tensor, directory: Path, store: TrustedDir,
                    cache_name: str, cuda=None):
    """An IInt8EntropyCalibrator2 over directory. Its table is cached under cache_name
    (keyed by model, images, shape and preprocessing: see builder.calibration_cache_name),
    read and written under the trust policy.

    TensorRT calls get_batch from C++ and only prints what it raises, taking it for "no
    more batches": a failure would end calibration early and still build. So get_batch
    keeps the error (`error`) for the builder to raise after the build, and the device
    buffer is freed by release(), which the builder calls whatever happened."""
    n, _, h, w = (d if d > 0 else 1 for d in input_tensor.shape)
    if h == 1 or w == 1:
        raise EngineError('int8 calibration needs a static image size in the ONNX input')
    batches = calibration_batches(directory, n, h, w)  # checked here, before the build

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.cuda = cuda or CudaRuntime()
            self.device = 0
            self.error: BaseException | None = None

        def get_batch_size(self) -> int:
            return n

        # Argument names and order as TensorRT's IInt8Calibrator declares them (checked
        # against the real bindings by test_trt_conformance.py).
        def get_batch(self, names):
            try:
                batch = next(batches, None)
                if batch is None:
                    return None
                if not self.device:
                    self.device = self.cuda.malloc(batch.nbytes)
                stream = 0  # legacy default stream: calibration is not latency-critical
                self.cuda.copy_to_device(self.device, batch.ctypes.data, batch.nbytes, stream)
                self.cuda.stream_synchronize(stream)
                return [self.device]
            except Exception as exc:
                self.error = exc
                return None

        def read_calibration_cache(self):
            return store.read(cache_name)[0]

        def write_calibration_cache(self, cache) -> None:
            store.write(cache_name, bytes(cache))

        def _release(self) -> None:  # ours, not TensorRT's (see release())
            if self.device:
                self.cuda.free(self.device)
                self.device = 0

    return Calibrator()


def release(calibrator) -> None:
    """Free the calibrator's device buffer (after the build, whatever happened)."""
    calibrator._release()
