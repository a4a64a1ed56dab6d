"""The TensorRT Python module, shared by the build and the runtime: which one is installed
(`tensorrt` or `tensorrt_rtx`), its logger, and whether an engine's builder matches it.

Below both the builder (build/) and the TensorRT backend: neither imports the other.
"""
from __future__ import annotations

import importlib
import logging
from types import ModuleType

from yolo_trt_ros.core.defaults import FLAVOURS
from yolo_trt_ros.core.errors import BackendError, EngineError

# For benchmarks only: a module with TensorRT's runtime API to load engines with instead
# (yolo_trt_ros/testing/gpu_standin.py runs a GPU stand-in for inference). Never set in production.
RUNTIME_MODULE_ENV = 'YOLO_TRT_ROS_RUNTIME_MODULE'
_LOG = logging.getLogger(__name__)


def import_tensorrt(flavour: str | None = None) -> ModuleType:
    """The TensorRT Python module: `flavour` if given, else the first importable one."""
    errors = []
    for name in ([flavour] if flavour else FLAVOURS):
        if name not in FLAVOURS:
            raise BackendError(f"unknown TensorRT flavour '{name}': use {' or '.join(FLAVOURS)}")
        try:
            return importlib.import_module(name)
        except ImportError as exc:  # the PyPI 'tensorrt' stub raises on import too
            errors.append(f'{name}: {exc}')
    raise BackendError('TensorRT is not installed (' + '; '.join(errors) + ')')


def flavour_of(trt: ModuleType) -> str:
    return trt.__name__.split('.')[0]


def make_logger(trt: ModuleType, messages: list[str]):
    """A TensorRT logger that keeps warnings and errors (for our error messages) and sends
    them to stderr through Python logging: nothing of TensorRT's reaches stdout, where it
    would corrupt `yolo-trt detect --json`."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg) -> None:
            if severity <= trt.ILogger.Severity.WARNING:
                messages.append(str(msg))
                _LOG.warning('TensorRT: %s', msg)

    return Logger()


def check_built_by(trt: ModuleType, key: dict) -> None:
    built = f"{key.get('flavour')} {key.get('tensorrt_version')}"
    here = f'{flavour_of(trt)} {trt.__version__}'
    if built != here:
        raise EngineError(f'the engine was built with {built}, this machine has {here}: '
                          f'rebuild it here (yolo-trt build --force)')
