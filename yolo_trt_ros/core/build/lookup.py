"""The engine cache key of a build, and the cached engine for it, without building.

The runtime finds the engine the builder made through this module alone: it imports no
onnx and no builder, only the TensorRT module (for its flavour and version) and the cache.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

from yolo_trt_ros.core.backends.trt_module import flavour_of, import_tensorrt
from yolo_trt_ros.core.build.options import BuildOptions
from yolo_trt_ros.core.errors import BackendError, EngineError
from yolo_trt_ros.core.files import MODEL_FILE_LIMIT, FileError, read_regular
from yolo_trt_ros.core.gpu.cuda import probe_gpu
from yolo_trt_ros.core.image.files import image_files
from yolo_trt_ros.core.store.cache import EngineCache, key_of


def target_fields() -> dict:
    """The GPU an engine is built for (its name and compute capability)."""
    gpu = probe_gpu()
    if gpu.count:
        return {'gpu': gpu.name, 'compute_capability': list(gpu.compute_capability)}
    # No GPU: TensorRT-RTX compiles ahead of time for its default set of architectures.
    return {'gpu': None, 'compute_capability': 'builder default (no GPU present)'}


def calibration_files(directory: Path) -> list[Path]:
    """The image files of a calibration directory, in a stable order."""
    try:
        return image_files(directory)
    except OSError as exc:
        raise EngineError(f'cannot read the calibration directory {directory}: '
                          f'{exc.strerror}') from exc


def calibration_set_hash(directory: Path) -> str:
    """The calibration images by name and content: another image set, or an edited image,
    is another int8 engine and another calibration table."""
    h = hashlib.sha256()
    for path in calibration_files(directory):
        h.update(path.name.encode() + b'\0')
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:24]


def key_fields(onnx_sha256: str, trt: ModuleType, options: BuildOptions) -> dict:
    """Everything that makes an engine invalid, as the JSON sidecar records it."""
    calib = None
    if options.precision == 'int8' and options.calib_dir is not None:
        calib = calibration_set_hash(options.calib_dir)
    fields = {
        'onnx_sha256': onnx_sha256,
        'flavour': flavour_of(trt),
        'tensorrt_version': trt.__version__,
        'target': target_fields(),
        'precision': options.precision,
        'profile': asdict(options.dynamic) if options.dynamic else 'static',
        'workspace_mb': options.workspace_mb,
        'opt_level': options.opt_level,
        'simplify': options.simplify,
        'calibration': calib,
    }
    return json.loads(json.dumps(fields))  # exactly what the JSON sidecar will hold


def find_cached_engine(onnx_path: str | Path, options: BuildOptions,
                       cache_dir: Path | None = None) -> tuple[Path | None, str]:
    """The cached engine that build_engine would return, without building: (path, why)."""
    try:
        trt = import_tensorrt(options.flavour)
        data = read_regular(onnx_path, MODEL_FILE_LIMIT, 'ONNX model')
    except (BackendError, FileError) as exc:
        return None, str(exc)
    fields = key_fields(hashlib.sha256(data).hexdigest(), trt, options)
    found, why = EngineCache(cache_dir).lookup(key_of(fields), fields)
    return (found.path if found else None), why
