"""ONNX -> TensorRT engine, through the engine cache: the orchestration.

`build_engine(onnx_path, options)` returns a cached engine when one matches, and builds
(under a per-key file lock) when none does. The work is split along its seams: ONNX
preparation (onnx_prep.py: simplify, fp16, dynamic rewrite, profile check), the TensorRT
build (trt_build.py: network, config, precision by TensorRT version, progress) and the
cache (engine_cache.py, under the trust policy of trust.py). This module decides the key,
what the sidecar records and when to build.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

import onnx

from .backends.tensorrt import flavour_of, import_tensorrt
from .cuda import probe_gpu
from .defaults import PRECISIONS
from .engine_cache import CachedEngine, EngineCache, key_of
from .errors import BackendError, EngineError, ModelError, YoloTrtError
from .onnx_prep import prepare_onnx
from .profile import ShapeProfile
from .trt_build import TrtSettings, build_plan, strongly_typed_only

Log = Callable[[str], None]


@dataclass(frozen=True)
class BuildOptions:
    precision: str = 'fp32'
    calib_dir: Path | None = None  # images for int8 calibration
    dynamic: ShapeProfile | None = None  # None: the ONNX input's own (static) shape
    workspace_mb: int | None = None
    opt_level: int | None = None  # builder optimisation level 0..5
    simplify: bool = True  # onnxslim before parsing (where installed)
    flavour: str | None = None  # 'tensorrt' or 'tensorrt_rtx'; None: whichever imports

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision '{self.precision}': use one of {', '.join(PRECISIONS)}")
        if self.opt_level is not None and not 0 <= self.opt_level <= 5:
            raise ValueError(f'builder optimisation level {self.opt_level}: use 0..5')
        if self.workspace_mb is not None and self.workspace_mb < 1:
            raise ValueError(f'workspace {self.workspace_mb} MB: must be at least 1')
        if self.precision == 'int8' and self.calib_dir is None:
            raise ValueError('int8 needs --calib-dir: a directory of representative images')


@dataclass(frozen=True)
class BuildResult:
    engine_path: Path
    cache_hit: bool
    seconds: float
    sidecar: dict


def _target() -> dict:
    gpu = probe_gpu()
    if gpu.count:
        return {'gpu': gpu.name, 'compute_capability': list(gpu.compute_capability)}
    # No GPU: TensorRT-RTX compiles ahead of time for its default set of architectures.
    return {'gpu': None, 'compute_capability': 'builder default (no GPU present)'}


def calibration_set_hash(directory: Path) -> str:
    """The calibration images by name and content: another image set, or an edited image,
    is another int8 engine and another calibration table."""
    from .calibrator import calibration_files

    h = hashlib.sha256()
    for path in calibration_files(directory):
        h.update(path.name.encode() + b'\0')
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:24]


def key_fields(onnx_sha256: str, trt: ModuleType, options: BuildOptions) -> dict:
    calib = None
    if options.precision == 'int8' and options.calib_dir is not None:
        calib = calibration_set_hash(options.calib_dir)
    fields = {
        'onnx_sha256': onnx_sha256,
        'flavour': flavour_of(trt),
        'tensorrt_version': trt.__version__,
        'target': _target(),
        'precision': options.precision,
        'profile': asdict(options.dynamic) if options.dynamic else 'static',
        'workspace_mb': options.workspace_mb,
        'opt_level': options.opt_level,
        'simplify': options.simplify,
        'calibration': calib,
    }
    return json.loads(json.dumps(fields))  # exactly what the JSON sidecar will hold


def calibration_cache_name(fields: dict, input_shape: list[int]) -> str:
    """TensorRT's docs: recalibrate when the model or the image set changes. The table is
    keyed by the ONNX, the images' contents, the input shape and our preprocessing."""
    from .calibrator import PREPROCESSING

    text = f"{fields['onnx_sha256']}|{fields['calibration']}|{input_shape}|{PREPROCESSING}"
    return f'calibration-{hashlib.sha256(text.encode()).hexdigest()[:24]}.cache'


def build_engine(onnx_path: str | Path, options: BuildOptions = BuildOptions(),
                 cache_dir: Path | None = None, force: bool = False,
                 log: Log = print) -> BuildResult:
    """The engine for onnx_path and options: from the cache, or built and cached."""
    t0 = time.monotonic()
    onnx_path = Path(onnx_path)
    try:
        data = onnx_path.read_bytes()
    except OSError as exc:
        raise ModelError(f'cannot read ONNX model {onnx_path}: {exc.strerror}') from exc
    try:
        trt = import_tensorrt(options.flavour)
    except BackendError as exc:
        raise EngineError(str(exc)) from exc
    onnx_sha256 = hashlib.sha256(data).hexdigest()
    fields = key_fields(onnx_sha256, trt, options)
    key = key_of(fields)
    cache = EngineCache(cache_dir)

    def hit(found: CachedEngine) -> BuildResult:
        log(f'using cached engine {found.path}')
        return BuildResult(found.path, True, time.monotonic() - t0, found.sidecar)

    if not force:
        found, why = cache.lookup(key, fields)
        if found:
            return hit(found)
        log(f'building engine: {why}')
    with cache.lock(key):
        if not force:  # another builder may have finished while we waited
            found, why = cache.lookup(key, fields)
            if found:
                return hit(found)
        return _build(trt, data, onnx_path, onnx_sha256, fields, key, options, cache, log, t0)


def _build(trt, data: bytes, onnx_path: Path, onnx_sha256: str, fields: dict, key: str,
           options: BuildOptions, cache: EngineCache, log: Log, t0: float) -> BuildResult:
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(f'{onnx_path} is not an ONNX model: {exc}') from exc
    strongly_typed = strongly_typed_only(trt)
    log(f'building {options.precision} engine for {onnx_path.name} with '
        f'{flavour_of(trt)} {trt.__version__}{" (strongly typed)" if strongly_typed else ""}')
    meta = {m.key: m.value for m in model.metadata_props}
    static_input = [d.dim_value or -1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    model = prepare_onnx(model, onnx_sha256, options.precision, options.simplify,
                         options.dynamic, strongly_typed, cache.store_dir, log)
    settings = TrtSettings(options.precision, options.dynamic, options.workspace_mb,
                           options.opt_level, options.calib_dir,
                           calibration_cache_name(fields, static_input))
    plan, tensors = build_plan(trt, model, settings, strongly_typed, cache.store_dir, log)
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
    log(f'built {path} in {seconds:.1f} s')
    return BuildResult(path, False, seconds, sidecar)


def _names(meta: dict[str, str]) -> list[str] | None:
    from .labels import labels_from_metadata

    try:
        return labels_from_metadata(meta)
    except YoloTrtError:
        return None


def _output_format(tensors: dict, names: list[str] | None) -> str | None:
    """The output layout, decided once at build time from the ONNX (the detector reads it
    from the sidecar instead of guessing from the engine)."""
    from .postprocess import detect_format

    try:
        return detect_format(tuple(tensors['outputs'][0]['shape']),
                             len(names) if names else None)
    except (YoloTrtError, IndexError):
        return None


def find_cached_engine(onnx_path: str | Path, options: BuildOptions,
                       cache_dir: Path | None = None) -> tuple[Path | None, str]:
    """The cached engine that build_engine would return, without building: (path, why)."""
    try:
        trt = import_tensorrt(options.flavour)
        data = Path(onnx_path).read_bytes()
    except (BackendError, OSError) as exc:
        return None, str(exc)
    fields = key_fields(hashlib.sha256(data).hexdigest(), trt, options)
    found, why = EngineCache(cache_dir).lookup(key_of(fields), fields)
    return (found.path if found else None), why


def engine_for_backend(onnx_path: str | Path, options: BuildOptions, backend: str = 'auto',
                       cache_dir: Path | None = None, force: bool = False,
                       log: Log = print) -> BuildResult | None:
    """What the launch-time builder does: the engine, or None where the detector will run
    ONNX Runtime anyway (backend onnxruntime, or auto with no usable TensorRT builder).
    With backend tensorrt a missing builder is an error."""
    if backend == 'onnxruntime':
        log('backend onnxruntime: no engine needed')
        return None
    try:
        trt = import_tensorrt(options.flavour)
    except BackendError as exc:
        if backend == 'auto':
            log(f'no TensorRT builder ({exc}); the detector will use ONNX Runtime')
            return None
        raise EngineError(str(exc)) from exc
    if flavour_of(trt) == 'tensorrt' and probe_gpu().count == 0:
        why = f'full TensorRT needs a GPU to build engines ({probe_gpu().reason})'
        if backend == 'auto':
            log(f'{why}; the detector will use ONNX Runtime')
            return None
        raise EngineError(why)
    return build_engine(onnx_path, options, cache_dir, force, log)
