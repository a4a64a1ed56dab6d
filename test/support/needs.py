"""Optional packages a test needs: imported inside the tests that need them, so every test
file is collected on every machine (the GPU machine has no tensorrt_rtx: its 95 MB wheel
does not travel there). Missing: the test skips with the reason; in CI, whose setup
installs them all, it fails instead."""
from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def optional_module(name: str, why: str) -> ModuleType:
    if os.environ.get('CI'):
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=f'{name} is not installed here ({why})')


def reference_install(path, what: str) -> None:
    """A reference that pip_env/setup.sh installs beside the environment (an older
    cuda-python, OpenCV 4, TensorRT bindings): missing, the test skips with the reason
    (the GPU machine runs the suite without them); in CI it fails."""
    if not path.exists():
        message = f'{what} missing at {path}: run `bash pip_env/setup.sh`'
        if os.environ.get('CI'):
            pytest.fail(message)
        pytest.skip(message)
