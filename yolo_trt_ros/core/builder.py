"""ONNX -> TensorRT engine, through the engine cache.

`build_engine(onnx_path, options)` returns a cached engine when one matches, and builds
(under a per-key file lock) when none does. It serves TensorRT 10+ (`tensorrt`) and
TensorRT for RTX (`tensorrt_rtx`): one code path where their APIs agree; precision is the
one place they differ (TensorRT 10 sets builder flags; TensorRT 11 and RTX accept only
strongly typed networks, so precision comes from the ONNX itself).
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
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
from .errors import BackendError, EngineError, ModelError
from .files import atomic_write

Log = Callable[[str], None]


@dataclass(frozen=True)
class ShapeProfile:
    """Dynamic input range: (batch, height, width) for min, opt and max."""

    min: tuple[int, int, int]
    opt: tuple[int, int, int]
    max: tuple[int, int, int]

    @classmethod
    def parse(cls, text: str) -> ShapeProfile:
        """'1x416x416:2x416x416:4x640x640' (min:opt:max, each NxHxW)."""
        parts = text.split(':')
        if len(parts) != 3 or not all(re.fullmatch(r'\d+x\d+x\d+', p) for p in parts):
            raise ValueError(f"dynamic profile '{text}': expected MIN:OPT:MAX, each NxHxW "
                             f"(e.g. 1x416x416:2x416x416:4x640x640)")
        mn, op, mx = (tuple(int(v) for v in p.split('x')) for p in parts)
        if not all(a <= b <= c for a, b, c in zip(mn, op, mx, strict=True)) or min(mn) < 1:
            raise ValueError(f"dynamic profile '{text}': need 1 <= min <= opt <= max")
        return cls(mn, op, mx)


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


def strongly_typed_only(trt: ModuleType) -> bool:
    """TensorRT-RTX and TensorRT 11+ take precision from the network, not from flags."""
    return flavour_of(trt) == 'tensorrt_rtx' or int(trt.__version__.split('.')[0]) >= 11


def uses_timing_cache(trt: ModuleType) -> bool:
    """TensorRT keeps tactic timings across builds; in TensorRT-RTX (1.2+) the timing cache
    calls are deprecated no-ops, so they are skipped there."""
    return flavour_of(trt) == 'tensorrt'


def _target() -> dict:
    gpu = probe_gpu()
    if gpu.count:
        return {'gpu': gpu.name, 'compute_capability': list(gpu.compute_capability)}
    # No GPU: TensorRT-RTX compiles ahead of time for its default set of architectures.
    return {'gpu': None, 'compute_capability': 'builder default (no GPU present)'}


def key_fields(onnx_sha256: str, trt: ModuleType, options: BuildOptions) -> dict:
    calib = None
    if options.calib_dir is not None:  # the calibration set changes an int8 engine
        listing = sorted(p.name for p in Path(options.calib_dir).iterdir())
        calib = hashlib.sha256('\n'.join(listing).encode()).hexdigest()[:16]
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


class _Progress:
    """TensorRT's progress monitor where the installed version has one, else a heartbeat:
    a long build is never silent."""

    def __init__(self, trt: ModuleType, log: Log, heartbeat_s: float = 10.0) -> None:
        self.log, self.start = log, time.monotonic()
        self.monitor = None
        self._stop = threading.Event()
        if hasattr(trt, 'IProgressMonitor'):
            outer = self

            class Monitor(trt.IProgressMonitor):
                def __init__(self) -> None:
                    trt.IProgressMonitor.__init__(self)

                def phase_start(self, parent, name, steps) -> None:
                    if parent is None:  # top-level phases only: enough to see it move
                        outer.log(f'  {name} ({outer.elapsed():.1f} s)')

                def phase_finish(self, name) -> None:
                    pass

                def step_complete(self, name, step) -> bool:
                    return True  # never cancel

            self.monitor = Monitor()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            self.log(f'  still building ({self.elapsed():.0f} s)')

    def __enter__(self) -> _Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _logger(trt: ModuleType, messages: list[str]):
    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg) -> None:
            if severity <= trt.ILogger.Severity.WARNING:
                messages.append(str(msg))

    return Logger()


def _simplify(model: onnx.ModelProto, log: Log) -> onnx.ModelProto:
    try:
        import onnxslim
    except ImportError:
        log('  onnxslim not installed: parsing the model as it is')
        return model
    before = len(model.graph.node)
    slim = onnxslim.slim(model)
    log(f'  simplified with onnxslim: {before} -> {len(slim.graph.node)} nodes')
    return slim


def _prepare_onnx(model: onnx.ModelProto, onnx_sha256: str, options: BuildOptions,
                  strongly_typed: bool, cache: EngineCache, log: Log) -> onnx.ModelProto:
    if options.simplify:
        model = _simplify(model, log)
    if strongly_typed and options.precision == 'fp16':
        converted = cache.dir / f'{onnx_sha256[:24]}-fp16.onnx'
        if converted.is_file():
            log(f'  using cached fp16 ONNX {converted.name}')
            return onnx.load(str(converted))
        from .fp16 import to_mixed_fp16
        model = to_mixed_fp16(model)
        atomic_write(converted, model.SerializeToString(), 0o600)
        log(f'  converted to mixed fp16 (float32 kept for sensitive ops): {converted.name}')
    if strongly_typed and options.precision == 'int8':
        raise EngineError('int8 with a strongly typed TensorRT (TensorRT-RTX, TensorRT 11+) '
                          'needs an explicitly quantized (Q/DQ) ONNX: install NVIDIA ModelOpt '
                          "(pip install 'nvidia-modelopt[onnx]') and quantize the model with "
                          'it, then build that ONNX with --precision fp32')
    if options.dynamic is not None:
        for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim,
                              ('batch', None, 'height', 'width'), strict=False):
            if value is not None:
                dim.ClearField('dim_value')
                dim.dim_param = value
    return model


def _parse(trt: ModuleType, builder, logger, model: onnx.ModelProto, strongly_typed: bool):
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, 'STRONGLY_TYPED'):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString()):
        errors = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            where = f" (node {err.node()} '{err.node_name()}', {err.node_operator()})" \
                if err.node() >= 0 else ''
            errors.append(f'{err.desc()}{where}')
        raise EngineError('TensorRT could not parse the ONNX model: ' + '; '.join(errors))
    if network.num_inputs != 1:
        raise EngineError(f'the model has {network.num_inputs} inputs; expected one image input')
    return network, parser


def _tensors(network) -> dict:
    def spec(t) -> dict:
        return {'name': t.name, 'shape': list(t.shape), 'dtype': str(t.dtype).split('.')[-1]}
    return {'inputs': [spec(network.get_input(i)) for i in range(network.num_inputs)],
            'outputs': [spec(network.get_output(i)) for i in range(network.num_outputs)]}


def _configure(trt, builder, network, options: BuildOptions, strongly_typed: bool,
               timing_cache: Path, progress: _Progress):
    config = builder.create_builder_config()
    if options.workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    if options.opt_level is not None:
        config.builder_optimization_level = options.opt_level
    if progress.monitor is not None:
        config.progress_monitor = progress.monitor
    if uses_timing_cache(trt):
        cache = config.create_timing_cache(
            timing_cache.read_bytes() if timing_cache.is_file() else b'')
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=True):
            raise EngineError(f'cannot use the timing cache {timing_cache}')
    if not strongly_typed and options.precision in ('fp16', 'int8'):
        config.set_flag(trt.BuilderFlag.FP16)  # int8 layers fall back to fp16, not fp32
        if options.precision == 'int8':
            from .calibrator import make_calibrator
            config.set_flag(trt.BuilderFlag.INT8)
            config.int8_calibrator = make_calibrator(trt, network.get_input(0), options.calib_dir,
                                                     timing_cache.with_name('calibration.cache'))
    inp = network.get_input(0)
    if options.dynamic is not None or any(d < 0 for d in inp.shape):
        prof = options.dynamic
        if prof is None:
            raise EngineError(f"input '{inp.name}' has dynamic shape {list(inp.shape)}: give "
                              f'a profile with --dynamic MIN:OPT:MAX')
        channels = inp.shape[1] if inp.shape[1] > 0 else 3
        profile = builder.create_optimization_profile()
        shapes = [(n, channels, h, w) for n, h, w in (prof.min, prof.opt, prof.max)]
        profile.set_shape(inp.name, *shapes)
        if config.add_optimization_profile(profile) < 0:
            raise EngineError(f'TensorRT refused the profile {shapes} for {inp.name}')
    return config


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
    model = _prepare_onnx(model, onnx_sha256, options, strongly_typed, cache, log)
    messages: list[str] = []
    logger = _logger(trt, messages)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, model, strongly_typed)
    timing_cache = cache.dir / f'timing-{flavour_of(trt)}-{trt.__version__}.cache'
    with _Progress(trt, log) as progress:
        config = _configure(trt, builder, network, options, strongly_typed, timing_cache, progress)
        plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError('TensorRT failed to build the engine: ' + ('; '.join(messages[-5:])
                                                                      or 'no message'))
    if uses_timing_cache(trt):
        atomic_write(timing_cache, bytes(config.get_timing_cache().serialize()), 0o600)
    meta = {m.key: m.value for m in onnx.load_from_string(data).metadata_props}
    sidecar = {
        'key': fields,
        'onnx_path': str(onnx_path.resolve()),
        'built_at': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
        'build_seconds': round(time.monotonic() - t0, 3),
        'tensors': _tensors(network),
        'names': json.loads(meta['names']) if meta.get('names', '').startswith('[') else None,
        'metadata': meta,
    }
    path = cache.store(key, bytes(plan), sidecar)
    seconds = time.monotonic() - t0
    log(f'built {path} in {seconds:.1f} s')
    return BuildResult(path, False, seconds, sidecar)


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
