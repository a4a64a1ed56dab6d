"""A fixed list of TensorRT mistakes, each applied alone to a copy of the package, and the
smallest set of tests that must fail on it (test_trt_mutations.py runs them).

Run as a script, this is the worker: `python trt_mutations.py PLAN RESULTS` runs pytest
in-process on each copy that PLAN (JSON: [{name, root, tests}]) names, one after the
other, and writes RESULTS (JSON: name -> {rc, failed, passed}). Between runs it forgets
every module of the package and of the tests, so each run imports its own copy; the
heavy third-party modules stay loaded, which keeps the whole list to one process.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

BUILD = 'yolo_trt_ros/core/build/trt_build.py'
BACKEND = 'yolo_trt_ros/core/backends/tensorrt.py'
TRT_MODULE = 'yolo_trt_ros/core/backends/trt_module.py'
CALIBRATOR = 'yolo_trt_ros/core/build/calibrator.py'
SCAN = 'test/test_trt_conformance.py::test_our_tensorrt_calls_match_the_real_bindings[10.13.3.9]'
WORKSPACE = 'test/test_builder.py::test_workspace_mb_reaches_tensorrt_in_bytes'


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the repository root
    old: str
    new: str
    tests: tuple[str, ...]  # node ids, relative to the root: at least one must fail
    count: int = 1  # occurrences of old (all replaced)


MUTATIONS = [
    # What passed every test before issue 16.
    Mutation('set_memory_pool_limit arguments swapped', BUILD,
             'set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)',
             'set_memory_pool_limit(settings.workspace_mb << 20, trt.MemoryPoolType.WORKSPACE)',
             (SCAN,)),
    Mutation('another MemoryPoolType member', BUILD, 'trt.MemoryPoolType.WORKSPACE,',
             'trt.MemoryPoolType.TACTIC_SHARED_MEMORY,', (WORKSPACE,)),
    Mutation('workspace in MB instead of bytes', BUILD, 'settings.workspace_mb << 20)',
             'settings.workspace_mb)', (WORKSPACE,)),
    Mutation('int8_calibrator property misspelt', BUILD, 'config.int8_calibrator = ',
             'config.int8_calibratr = ', (SCAN,)),
    Mutation('timing cache loaded with ignore_mismatch=True', BUILD,
             'set_timing_cache(timing, ignore_mismatch=False)',
             'set_timing_cache(timing, ignore_mismatch=True)',
             ('test/test_builder.py::test_a_timing_cache_from_another_gpu_is_replaced_never_'
              'forced[another GPU-True]',), count=2),
    Mutation('get_timing_cache().serialise()', BUILD, '.get_timing_cache().serialize()',
             '.get_timing_cache().serialise()', (SCAN,)),
    Mutation('TensorRT 11 treated as weakly typed', BUILD,
             "int(trt.__version__.split('.')[0]) >= 11", "int(trt.__version__.split('.')[0]) >= 12",
             ('test/test_builder.py::test_strongly_typed_by_version[tensorrt-11.4.0.106-True]',)),
    Mutation('logger drops warnings', TRT_MODULE, 'severity <= trt.ILogger.Severity.WARNING',
             'severity < trt.ILogger.Severity.WARNING',
             ('test/test_builder.py::test_the_logger_keeps_warnings_and_errors_only',)),
    Mutation('failed build (plan None) not checked', BUILD, '    if plan is None:\n',
             '    if False:  # mutation\n',
             ('test/test_builder.py::test_a_build_that_fails_after_parsing_is_one_error',)),
    Mutation('misspelt method through an alias of the config', BUILD,
             '        config.set_flag(trt.BuilderFlag.FP16)',
             '        cfg = config\n        cfg.set_flags(trt.BuilderFlag.FP16)', (SCAN,)),
    Mutation('data-dependent output not refused', BACKEND,
             'if any(d < 0 for d in out_shape):', 'if False:',
             ('test/test_tensorrt_backend.py::test_a_data_dependent_output_is_minus_one_and_'
              'refused',)),
    # What the scan caught before issue 16, and must still catch.
    Mutation('execute_async_v2', BACKEND, 'self._context.execute_async_v3(self._stream)',
             'self._context.execute_async_v2(self._stream)', (SCAN,)),
    Mutation('execute_async_v3(stream=...)', BACKEND,
             'self._context.execute_async_v3(self._stream)',
             'self._context.execute_async_v3(stream=self._stream)', (SCAN,)),
    Mutation('set_tensor_address(..., ptr=...)', BACKEND, 'ctx.set_tensor_address(name, ptr)',
             'ctx.set_tensor_address(name, ptr=ptr)', (SCAN,)),
    Mutation('get_tensor_profile_shape without the profile index', BACKEND,
             'get_tensor_profile_shape(self.input.name, 0)',
             'get_tensor_profile_shape(self.input.name)', (SCAN,)),
    Mutation('progress monitor parameters swapped', BUILD,
             'def phase_start(self, phase_name, parent_phase, num_steps)',
             'def phase_start(self, parent_phase, phase_name, num_steps)', (SCAN,)),
    Mutation('TensorIOMode.INPT', BACKEND, 'trt.TensorIOMode.INPUT', 'trt.TensorIOMode.INPT',
             (SCAN,)),
    Mutation('deserialize_engine', BACKEND, 'self._runtime.deserialize_cuda_engine(',
             'self._runtime.deserialize_engine(', (SCAN,)),
    Mutation('calibrator override misspelt', CALIBRATOR, 'def get_batch_size(self)',
             'def get_batchsize(self)', (SCAN,)),
]


def copy_package(source: Path, target: Path) -> Path:
    """The package, the tests and the pytest settings: all a test run needs."""
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc')
    for folder in ('yolo_trt_ros', 'test'):
        shutil.copytree(source / folder, target / folder, ignore=ignore)
    shutil.copy2(source / 'pytest.ini', target / 'pytest.ini')
    return target


def apply(root: Path, mutation: Mutation) -> None:
    path = root / mutation.path
    text = path.read_text()
    found = text.count(mutation.old)
    if found != mutation.count:
        raise AssertionError(f'mutation {mutation.name!r}: {mutation.old!r} occurs {found} '
                             f'times in {mutation.path}, not {mutation.count}: update '
                             f'test/support/trt_mutations.py to the code')
    path.write_text(text.replace(mutation.old, mutation.new))


# -- the worker ------------------------------------------------------------------------------
class _Outcomes:
    """A pytest plugin: which tests failed and which passed."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.passed: list[str] = []

    def pytest_runtest_logreport(self, report) -> None:
        if report.failed:
            self.failed.append(report.nodeid)
        elif report.passed and report.when == 'call':
            self.passed.append(report.nodeid)


def _forget(prefixes: tuple[str, ...] = ('yolo_trt_ros', 'support', 'conftest', 'test_')) -> None:
    for name in [n for n in sys.modules if n.split('.')[0].startswith(prefixes)]:
        del sys.modules[name]


def run_copy(root: Path, tests: list[str]) -> dict:
    import pytest

    saved_path, saved_cwd = list(sys.path), os.getcwd()
    _forget()
    sys.path.insert(0, str(root))
    os.environ['PYTHONPATH'] = str(root)  # for the subprocesses the tests start
    os.chdir(root)
    outcomes = _Outcomes()
    try:
        rc = pytest.main(['-x', '-q', '-p', 'no:cacheprovider', *[str(root / t) for t in tests]],
                         plugins=[outcomes])
    finally:
        sys.path[:] = saved_path
        os.chdir(saved_cwd)
    return {'rc': int(rc), 'failed': outcomes.failed, 'passed': outcomes.passed}


if __name__ == '__main__':
    plan = json.loads(Path(sys.argv[1]).read_text())
    results = {run['name']: run_copy(Path(run['root']), run['tests']) for run in plan}
    Path(sys.argv[2]).write_text(json.dumps(results))
