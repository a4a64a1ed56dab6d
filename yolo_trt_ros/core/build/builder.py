"""ONNX -> TensorRT engine, through the engine cache: the orchestration.

`build_engine(onnx_path, options)` returns a cached engine when one matches, and builds
(under a per-key file lock) when none does. The work is split along its seams: ONNX
preparation (onnx_prep.py: simplify, fp16, dynamic rewrite, profile check), the TensorRT
build (trt_build.py: network, config, precision by TensorRT version, progress) and the
cache (store/cache.py, under the trust policy of store/trust.py). This module decides what
the sidecar records and when to build; the key is build/lookup.py's, which the runtime
uses to find the same engine. Progress goes to the `yolo_trt_ros` logger.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from yolo_trt_ros.core.backends.trt_module import flavour_of, import_tensorrt
from yolo_trt_ros.core.build.lookup import key_fields
from yolo_trt_ros.core.build.onnx_prep import prepare_onnx
from yolo_trt_ros.core.build.options import BuildOptions
from yolo_trt_ros.core.build.trt_build import TrtSettings, build_plan, strongly_typed_only
from yolo_trt_ros.core.defaults import BACKEND
from yolo_trt_ros.core.errors import BackendError, EngineError, ModelError, YoloTrtError
from yolo_trt_ros.core.files import MODEL_FILE_LIMIT, FileError, read_regular
from yolo_trt_ros.core.gpu.cuda import probe_gpu
from yolo_trt_ros.core.store.cache import CachedEngine, EngineCache, key_of

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildResult:
    engine_path: Path
    cache_hit: bool
    seconds: float
    sidecar: dict


def calibration_cache_name(fields: dict, input_shape: list[int]) -> str:
    """TensorRT's docs: recalibrate when the model or the image set changes. The table is
    keyed by the ONNX, the images' contents, the input shape and our preprocessing."""
    from yolo_trt_ros.core.build.calibrator import PREPROCESSING

    text = f"{fields['onnx_sha256']}|{fields['calibration']}|{input_shape}|{PREPROCESSING}"
    return f'calibration-{hashlib.sha256(text.encode()).hexdigest()[:24]}.cache'


def build_engine(onnx_path: str | Path, options: BuildOptions = BuildOptions(),
                 cache_dir: Path | None = None, force: bool = False,
                 cancel: threading.Event | None = None) -> BuildResult:
    """The engine for onnx_path and options: from the cache, or built and cached. Setting
    cancel (from a signal handler) stops a build within a progress step of TensorRT's:
    Cancelled is raised and nothing is written."""
    t0 = time.monotonic()
    onnx_path = Path(onnx_path)
    try:
        data = read_regular(onnx_path, MODEL_FILE_LIMIT, 'ONNX model')
    except FileError as exc:
        raise ModelError(str(exc)) from None
    try:
        trt = import_tensorrt(options.flavour)
    except BackendError as exc:
        raise EngineError(str(exc)) from exc
    onnx_sha256 = hashlib.sha256(data).hexdigest()
    fields = key_fields(onnx_sha256, trt, options)
    key = key_of(fields)
    cache = EngineCache(cache_dir)

    def hit(found: CachedEngine) -> BuildResult:
        _LOG.info('using cached engine %s', found.path)
        return BuildResult(found.path, True, time.monotonic() - t0, found.sidecar)

    if not force:
        found, why = cache.lookup(key, fields)
        if found:
            return hit(found)
        _LOG.info('building engine: %s', why)
    with cache.lock(key, cancel):
        if not force:  # another builder may have finished while we waited
            found, why = cache.lookup(key, fields)
            if found:
                return hit(found)
        return _build(trt, data, onnx_path, onnx_sha256, fields, key, options, cache, t0,
                      cancel)


def _build(trt, data: bytes, onnx_path: Path, onnx_sha256: str, fields: dict, key: str,
           options: BuildOptions, cache: EngineCache, t0: float,
           cancel: threading.Event | None) -> BuildResult:
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(f'{onnx_path} is not an ONNX model: {exc}') from exc
    strongly_typed = strongly_typed_only(trt)
    _LOG.info(f'building {options.precision} engine for {onnx_path.name} with '
              f'{flavour_of(trt)} {trt.__version__}'
              f'{" (strongly typed)" if strongly_typed else ""}')
    meta = {m.key: m.value for m in model.metadata_props}
    static_input = [d.dim_value or -1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    model = prepare_onnx(model, onnx_sha256, options.precision, options.simplify,
                         options.dynamic, strongly_typed, cache.store_dir)
    settings = TrtSettings(options.precision, options.dynamic, options.workspace_mb,
                           options.opt_level, options.calib_dir,
                           calibration_cache_name(fields, static_input))
    plan, tensors = build_plan(trt, model, settings, strongly_typed, cache.store_dir, cancel)
    names = _names(meta)
    sidecar = {
        'key': fields,
        'onnx_path': str(onnx_path.resolve()),
        'built_at': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
        'build_seconds': round(time.monotonic() - t0, 3),
        'tensors': tensors,
        'names': names,
        'format': _output_format(tensors, names),
        'metadata': meta,
    }
    path = cache.store(key, plan, sidecar)
    seconds = time.monotonic() - t0
    _LOG.info(f'built {path} in {seconds:.1f} s')
    return BuildResult(path, False, seconds, sidecar)


def _names(meta: dict[str, str]) -> list[str] | None:
    from yolo_trt_ros.core.pipeline.labels import labels_from_metadata

    try:
        return labels_from_metadata(meta)
    except YoloTrtError:
        return None


def _output_format(tensors: dict, names: list[str] | None) -> str | None:
    """The output layout, decided once at build time from the ONNX (the detector reads it
    from the sidecar instead of guessing from the engine)."""
    from yolo_trt_ros.core.pipeline.decode import detect_format

    try:
        return detect_format(tuple(tensors['outputs'][0]['shape']),
                             len(names) if names else None)
    except (YoloTrtError, IndexError):
        return None


def engine_for_backend(onnx_path: str | Path, options: BuildOptions, backend: str = BACKEND,
                       cache_dir: Path | None = None, force: bool = False,
                       cancel: threading.Event | None = None) -> BuildResult | None:
    """What the launch-time builder does: the engine, or None where the detector will run
    ONNX Runtime anyway (backend onnxruntime, or auto with no usable TensorRT builder).
    With backend tensorrt a missing builder is an error."""
    if backend == 'onnxruntime':
        _LOG.info('backend onnxruntime: no engine needed')
        return None
    try:
        trt = import_tensorrt(options.flavour)
    except BackendError as exc:
        if backend == 'auto':
            _LOG.info(f'no TensorRT builder ({exc}); the detector will use ONNX Runtime')
            return None
        raise EngineError(str(exc)) from exc
    if flavour_of(trt) == 'tensorrt' and probe_gpu().count == 0:
        why = f'full TensorRT needs a GPU to build engines ({probe_gpu().reason})'
        if backend == 'auto':
            _LOG.info(f'{why}; the detector will use ONNX Runtime')
            return None
        raise EngineError(why)
    return build_engine(onnx_path, options, cache_dir, force, cancel)
