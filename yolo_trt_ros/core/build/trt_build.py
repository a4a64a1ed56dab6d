"""The TensorRT build itself: network from ONNX, builder config (profile, precision by
TensorRT version, timing cache, progress), serialized plan.

Serves TensorRT 10 (`tensorrt`, weakly typed: precision through builder flags), TensorRT
11 and TensorRT-RTX (strongly typed: precision comes from the ONNX). Every API this module
touches is checked against the real 10.3, 10.13, 11.4 and tensorrt_rtx bindings by
test/test_trt_conformance.py: names, properties set, argument counts, keywords and types,
and the parameters of the progress monitor's overrides.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import onnx

from yolo_trt_ros.core.backends.trt_module import flavour_of, make_logger
from yolo_trt_ros.core.build.options import ShapeProfile
from yolo_trt_ros.core.errors import Cancelled, EngineError
from yolo_trt_ros.core.gpu.cuda import probe_gpu
from yolo_trt_ros.core.store.trust import TrustedDir

_LOG = logging.getLogger(__name__)


def strongly_typed_only(trt: ModuleType) -> bool:
    """TensorRT-RTX and TensorRT 11+ take precision from the network, not from flags."""
    return flavour_of(trt) == 'tensorrt_rtx' or int(trt.__version__.split('.')[0]) >= 11


def uses_timing_cache(trt: ModuleType) -> bool:
    """TensorRT keeps tactic timings across builds; in TensorRT-RTX (1.2+) the timing cache
    calls are deprecated no-ops, so they are skipped there."""
    return flavour_of(trt) == 'tensorrt'


def timing_cache_name(trt: ModuleType) -> str:
    """Tactic timings are only valid for the GPU and TensorRT that measured them: the name
    carries both, so another GPU or version starts a cache of its own."""
    gpu = probe_gpu()
    target = f'{gpu.name}-sm{"".join(map(str, gpu.compute_capability))}' if gpu.count \
        else 'no-gpu'
    safe = re.sub(r'[^A-Za-z0-9.]+', '_', f'{flavour_of(trt)}-{trt.__version__}-{target}')
    return f'timing-{safe}.cache'


class Progress:
    """TensorRT's progress monitor where the installed version has one, and a heartbeat:
    a long build is never silent."""

    def __init__(self, trt: ModuleType, cancel: threading.Event | None = None,
                 heartbeat_s: float = 10.0) -> None:
        self.start = time.monotonic()
        self.cancel = cancel or threading.Event()
        self.monitor = None
        self._stop = threading.Event()
        if hasattr(trt, 'IProgressMonitor'):
            outer = self

            class Monitor(trt.IProgressMonitor):
                def __init__(self) -> None:
                    trt.IProgressMonitor.__init__(self)

                # TensorRT calls these positionally, in exactly this order
                # (IProgressMonitor::phaseStart(phaseName, parentPhase, nbSteps)).
                def phase_start(self, phase_name, parent_phase, num_steps) -> None:
                    if parent_phase is None:  # top-level phases only: enough to see it move
                        _LOG.info(f'  {phase_name} ({outer.elapsed():.1f} s)')

                def step_complete(self, phase_name, step) -> bool:
                    return not outer.cancel.is_set()  # False: TensorRT stops the build

                def phase_finish(self, phase_name) -> None:
                    pass

            self.monitor = Monitor()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            _LOG.info(f'  still building ({self.elapsed():.0f} s)')

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def create_builder(trt: ModuleType, logger):
    """trt.Builder raises TypeError ('factory function returned nullptr') when TensorRT
    cannot initialise (no CUDA for the full TensorRT, a broken install): say so."""
    try:
        return trt.Builder(logger)
    except TypeError as exc:
        raise EngineError(f'{flavour_of(trt)} {trt.__version__} could not create a builder '
                          f'({exc}): TensorRT needs a working CUDA driver and GPU for the '
                          f'full TensorRT; tensorrt_rtx builds without one') from exc


def parse(trt: ModuleType, builder, logger, model: onnx.ModelProto, strongly_typed: bool):
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, 'STRONGLY_TYPED'):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString()):
        errors = []
        for i in range(parser.num_errors):
            error = parser.get_error(i)
            where = f" (node {error.node()} '{error.node_name()}', {error.node_operator()})" \
                if error.node() >= 0 else ''
            errors.append(f'{error.desc()}{where}')
        raise EngineError('TensorRT could not parse the ONNX model: ' + '; '.join(errors))
    if network.num_inputs != 1:
        raise EngineError(f'the model has {network.num_inputs} inputs; expected one image input')
    return network, parser


def tensors_of(network) -> dict:
    def spec(tensor) -> dict:
        return {'name': tensor.name, 'shape': list(tensor.shape),
                'dtype': str(tensor.dtype).split('.')[-1]}
    return {'inputs': [spec(network.get_input(i)) for i in range(network.num_inputs)],
            'outputs': [spec(network.get_output(i)) for i in range(network.num_outputs)]}


@dataclass(frozen=True)
class TrtSettings:
    """What the build needs besides the network (from BuildOptions, resolved)."""

    precision: str
    dynamic: ShapeProfile | None
    workspace_mb: int | None
    opt_level: int | None
    calib_dir: Path | None
    calibration_cache: str  # file name in the cache directory (keyed, see builder.py)


def _set_timing_cache(trt: ModuleType, config, cache: TrustedDir) -> None:
    """Reuse the tactic timings of earlier builds for this GPU and TensorRT; a cache that
    TensorRT rejects (mismatch, damage) is replaced by a fresh one, never forced."""
    name = timing_cache_name(trt)
    data, _ = cache.read(name)
    timing = config.create_timing_cache(data or b'')
    if timing is not None and config.set_timing_cache(timing, ignore_mismatch=False):
        return
    if data:
        _LOG.info(f'  timing cache {name} rejected by TensorRT: starting a new one')
        timing = config.create_timing_cache(b'')
        if timing is not None and config.set_timing_cache(timing, ignore_mismatch=False):
            return
    raise EngineError(f'TensorRT cannot create a timing cache ({name})')


def configure(trt: ModuleType, builder, network, settings: TrtSettings, strongly_typed: bool,
              cache: TrustedDir, progress: Progress):
    config = builder.create_builder_config()
    if settings.workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    if settings.opt_level is not None:
        config.builder_optimization_level = settings.opt_level
    if progress.monitor is not None:
        config.progress_monitor = progress.monitor
    if uses_timing_cache(trt):
        _set_timing_cache(trt, config, cache)
    if not strongly_typed and settings.precision in ('fp16', 'int8'):
        config.set_flag(trt.BuilderFlag.FP16)  # int8 layers fall back to fp16, not fp32
        if settings.precision == 'int8':
            from yolo_trt_ros.core.build.calibrator import make_calibrator
            config.set_flag(trt.BuilderFlag.INT8)
            config.int8_calibrator = make_calibrator(trt, network.get_input(0),
                                                     settings.calib_dir, cache,
                                                     settings.calibration_cache)
    inp = network.get_input(0)
    if settings.dynamic is not None or any(d < 0 for d in inp.shape):
        prof = settings.dynamic
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


def build_plan(trt: ModuleType, model: onnx.ModelProto, settings: TrtSettings,
               strongly_typed: bool, cache: TrustedDir,
               cancel: threading.Event | None = None) -> tuple[bytes, dict]:
    """The serialized engine and its I/O tensors; EngineError with TensorRT's last
    messages when the build fails, Cancelled when cancel was set during it (TensorRT stops
    at its next progress step)."""
    messages: list[str] = []
    logger = make_logger(trt, messages)
    builder = create_builder(trt, logger)
    network, _parser = parse(trt, builder, logger, model, strongly_typed)
    with Progress(trt, cancel) as progress:
        config = configure(trt, builder, network, settings, strongly_typed, cache, progress)
        calibrator = getattr(config, 'int8_calibrator', None)
        try:
            plan = builder.build_serialized_network(network, config)
        finally:
            if calibrator is not None:
                from yolo_trt_ros.core.build.calibrator import release
                release(calibrator)
    if calibrator is not None and calibrator.error is not None:
        raise EngineError(f'int8 calibration failed: {calibrator.error}') from calibrator.error
    if progress.cancel.is_set():
        raise Cancelled('the build was stopped before it finished')
    if plan is None:
        raise EngineError('TensorRT failed to build the engine: ' + ('; '.join(messages[-5:])
                                                                      or 'no message'))
    if uses_timing_cache(trt):
        cache.write(timing_cache_name(trt), bytes(config.get_timing_cache().serialize()))
    return bytes(plan), tensors_of(network)
