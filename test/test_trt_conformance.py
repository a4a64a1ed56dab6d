"""Our TensorRT calls against the REAL TensorRT Python bindings: 10.3 (JetPack 6), 10.13,
11.4 and tensorrt_rtx. Each binding is imported in a process of its own on stub libraries
(test/support/trt_stub.c) and checked from its pybind signatures by trt_conformance.py: names,
arity, keywords, and the parameter order of every method we override."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.needs import reference_install

SUPPORT = Path(__file__).resolve().parent / 'support'
BINDINGS = Path(sys.prefix) / 'opt' / 'tensorrt-bindings'  # installed by pip_env/setup.sh
VERSIONS = ['10.3.0', '10.13.3.9', '11.4.0.106', 'rtx']
# TensorRT 11 and TensorRT-RTX build only strongly typed networks: the weak-typing API is
# gone there, and our code uses it only behind trt_build.strongly_typed_only().
STRONGLY_TYPED_ONLY = {
    'calibrator.py: IInt8EntropyCalibrator2 does not exist',
    'calibrator.py: IInt8EntropyCalibrator2.__init__ does not exist',
    'calibrator.py: IInt8EntropyCalibrator2.get_batch_size does not exist',
    'calibrator.py: IInt8EntropyCalibrator2.get_batch does not exist',
    'calibrator.py: IInt8EntropyCalibrator2.read_calibration_cache does not exist',
    'calibrator.py: IInt8EntropyCalibrator2.write_calibration_cache does not exist',
    'trt_build.py: BuilderFlag.FP16 does not exist',
    'trt_build.py: BuilderFlag.INT8 does not exist',
}
EXPECTED = {'10.3.0': set(), '10.13.3.9': set(), '11.4.0.106': STRONGLY_TYPED_ONLY,
            'rtx': STRONGLY_TYPED_ONLY}


@pytest.fixture(scope='session')
def stub_libs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('trt_stub')
    for major in (10, 11):
        for lib in ('nvinfer', 'nvinfer_plugin', 'nvonnxparser'):
            subprocess.run(['cc', '-shared', '-fPIC', '-o', str(out / f'lib{lib}.so.{major}'),
                            str(SUPPORT / 'trt_stub.c')], check=True)
    return out


def check(version: str, stub_libs: Path, *files: Path) -> list[str]:
    env = dict(os.environ)
    if version == 'rtx':
        module = 'tensorrt_rtx'
    else:
        folder = BINDINGS / version
        reference_install(folder, f'the TensorRT {version} bindings')
        module = 'tensorrt_bindings'
        env['PYTHONPATH'] = os.pathsep.join([str(folder), str(SUPPORT)])
        env['LD_LIBRARY_PATH'] = str(stub_libs)
    out = subprocess.run([sys.executable, str(SUPPORT / 'trt_conformance.py'), module,
                          *map(str, files)], env=env, capture_output=True, text=True,
                         timeout=120, cwd=SUPPORT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def without_lines(found: list[str]) -> set[str]:
    return {re.sub(r':\d+:', ':', line) for line in found}


@pytest.mark.parametrize('version', VERSIONS)
def test_our_tensorrt_calls_match_the_real_bindings(version, stub_libs):
    assert without_lines(check(version, stub_libs)) == EXPECTED[version]


def test_the_scan_sees_what_it_must():
    from support import trt_conformance as scan
    uses = {(u.owner, u.attr) for u in scan.all_uses()}
    for needed in [('IExecutionContext', 'execute_async_v3'), ('IExecutionContext', 'set_input_shape'),
                   ('ICudaEngine', 'get_tensor_profile_shape'), ('Runtime', 'deserialize_cuda_engine'),
                   ('IProgressMonitor', 'phase_start'), ('IBuilderConfig', 'set_timing_cache'),
                   ('IInt8EntropyCalibrator2', 'get_batch'), ('Builder', 'build_serialized_network'),
                   ('module', 'TensorIOMode.INPUT')]:
        assert needed in uses


@pytest.mark.parametrize('version', ['10.3.0', '11.4.0.106', 'rtx'])
def test_a_wrong_argument_order_misspelling_or_arity_fails(version, stub_libs, tmp_path):
    """Defect 3's swapped progress-monitor parameters, and other mistakes, are caught."""
    bad = tmp_path / 'bad.py'
    bad.write_text(
        'class Monitor(trt.IProgressMonitor):\n'
        '    def phase_start(self, parent_phase, phase_name, num_steps):\n'
        '        pass\n'
        'def f(trt, context, config, timing):\n'
        '    context.execute_async_v2(0)\n'
        '    context.set_input_shape("x")\n'
        '    config.set_timing_cache(timing, ignore_mismatches=True)\n'
        '    trt.TensorIOMode.INPT\n')
    found = without_lines(check(version, stub_libs, bad))
    assert any(line.startswith("bad.py: IProgressMonitor.phase_start overridden with "
                               "parameters ['parent_phase', 'phase_name', 'num_steps']")
               for line in found), found
    assert 'bad.py: IExecutionContext.execute_async_v2 does not exist' in found
    assert any(line.startswith('bad.py: IExecutionContext.set_input_shape called with 1 '
                               'positional') for line in found)
    assert any(line.startswith('bad.py: IBuilderConfig.set_timing_cache called with')
               for line in found)
    assert 'bad.py: TensorIOMode.INPT does not exist' in found
