"""Our TensorRT calls against the REAL TensorRT Python bindings: 10.3 (JetPack 6), 10.13,
11.4 and tensorrt_rtx. Each binding is imported in a process of its own on stub libraries
(test/support/trt_stub.c) and read through its pybind signatures by trt_conformance.py
(its docstring says exactly what is checked): names, properties set, receivers followed
through the code, argument counts, keywords and types, and the parameter order of every
method we override. The shared fake of the runtime API is held to the same bindings, and
the strongly-typed gate to what each binding has."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.needs import optional_module, reference_install

SUPPORT = Path(__file__).resolve().parent / 'support'
ROOT = SUPPORT.parents[1]
BINDINGS = Path(sys.prefix) / 'opt' / 'tensorrt-bindings'  # installed by pip_env/setup.sh
VERSIONS = ['10.3.0', '10.13.3.9', '11.4.0.106', 'rtx']
# TensorRT 11 and TensorRT-RTX build only strongly typed networks: the weak-typing API is
# gone there, and our code uses it only behind trt_build.strongly_typed_only().
STRONGLY_TYPED_ONLY = {
    'calibrator.py: IInt8EntropyCalibrator2 does not exist',
    'trt_build.py: BuilderFlag.FP16 does not exist',
    'trt_build.py: BuilderFlag.INT8 does not exist',
    'trt_build.py: IBuilderConfig.int8_calibrator does not exist',
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


def scan(version: str, stub_libs: Path, *args: str | Path):
    """trt_conformance.py's JSON answer under one binding (args: a mode and/or FILEs)."""
    env = dict(os.environ)
    path = [str(SUPPORT), str(ROOT)]
    if version == 'rtx':
        optional_module('tensorrt_rtx', 'TensorRT-RTX is one of the bindings checked')
        module = 'tensorrt_rtx'
    else:
        folder = BINDINGS / version
        reference_install(folder, f'the TensorRT {version} bindings')
        module = 'tensorrt_bindings'
        path.insert(0, str(folder))
        env['LD_LIBRARY_PATH'] = str(stub_libs)
    env['PYTHONPATH'] = os.pathsep.join(path)
    out = subprocess.run([sys.executable, str(SUPPORT / 'trt_conformance.py'), module,
                          *map(str, args)], env=env, capture_output=True, text=True,
                         timeout=120, cwd=SUPPORT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def without_lines(found: list[str]) -> set[str]:
    return {re.sub(r':\d+:', ':', line) for line in found}


@pytest.mark.parametrize('version', VERSIONS)
def test_our_tensorrt_calls_match_the_real_bindings(version, stub_libs):
    assert without_lines(scan(version, stub_libs)) == EXPECTED[version]


def test_the_scan_sees_what_it_must(stub_libs):
    """Every TensorRT object the code uses is followed to its class, whatever its variable
    is called: through factories, tuple returns, parameters, attributes and chains."""
    uses = {tuple(u) for u in scan('10.13.3.9', stub_libs, '--uses')}
    for needed in [('IExecutionContext', 'execute_async_v3'), ('IExecutionContext', 'set_input_shape'),
                   ('IExecutionContext', 'set_tensor_address'), ('IExecutionContext', 'get_tensor_shape'),
                   ('ICudaEngine', 'get_tensor_profile_shape'), ('ICudaEngine', 'get_tensor_dtype'),
                   ('Runtime', 'deserialize_cuda_engine'), ('Runtime', '__init__'),
                   ('IProgressMonitor', 'phase_start'), ('IBuilderConfig', 'set_timing_cache'),
                   ('IBuilderConfig', 'set_memory_pool_limit'), ('IBuilderConfig', 'int8_calibrator'),
                   ('IBuilderConfig', 'progress_monitor'), ('IBuilderConfig', 'builder_optimization_level'),
                   ('IBuilderConfig', 'set_flag'), ('IBuilderConfig', 'add_optimization_profile'),
                   ('ITimingCache', 'serialize'), ('IOptimizationProfile', 'set_shape'),
                   ('ITensor', 'shape'), ('ITensor', 'dtype'), ('ParserError', 'node_operator'),
                   ('IInt8EntropyCalibrator2', 'get_batch'), ('ILogger', 'log'),
                   ('Builder', 'build_serialized_network'), ('Builder', 'create_network'),
                   ('OnnxParser', '__init__'), ('module', 'TensorIOMode.INPUT'),
                   ('module', 'MemoryPoolType.WORKSPACE')]:
        assert needed in uses


BAD = '''\
def monitor(trt: ModuleType):
    class Monitor(trt.IProgressMonitor):
        def phase_start(self, parent_phase, phase_name, num_steps):
            pass
    return Monitor()

def make(trt):
    builder = trt.Builder(trt.Logger())
    return builder, builder.create_builder_config()

def f(trt: ModuleType, size: int):
    builder, cfg = make(trt)
    context = builder.create_network(0)
    context.execute_async_v2(0)
    store = cfg
    store.set_flags(trt.BuilderFlag.TF32)
    store.set_memory_pool_limit(size << 20, trt.MemoryPoolType.WORKSPACE)
    store.set_memory_pool_limit(trt.BuilderFlag.TF32, size)
    store.set_timing_cache(store.create_timing_cache(b""), ignore_mismatches=True)
    store.get_timing_cache().serialise()
    store.int8_calibratr = None
    store.builder_optimization_level = "3"
    store.num_optimization_profiles = 2
    profile = builder.create_optimization_profile()
    profile.set_shape("images", *[(1, 3, 8, 8), (1, 3, 8, 8)])
    profile.set_shape("images", *[(1, 3, 8, 8) for _ in ("min", "opt", "max")])
    builder.create_network("0")
    trt.TensorIOMode.INPT
    return context
'''


@pytest.mark.parametrize('version', ['10.3.0', '11.4.0.106', 'rtx'])
def test_every_kind_of_mistake_is_reported(version, stub_libs, tmp_path):
    """Misspelt names, methods and properties (also through an alias of a receiver, a
    factory's tuple, a chain), wrong counts, keywords, argument order and types, read-only
    properties, and a swapped override; a correct call next to them stays quiet."""
    bad = tmp_path / 'bad.py'
    bad.write_text(BAD)
    found = without_lines(scan(version, stub_libs, bad))
    assert "bad.py: IProgressMonitor.phase_start overridden with parameters ['parent_phase', 'phase_name', 'num_steps'], TensorRT declares [['phase_name', 'parent_phase', 'num_steps']]" in found
    assert 'bad.py: INetworkDefinition.execute_async_v2 does not exist' in found
    assert 'bad.py: IBuilderConfig.set_flags does not exist' in found
    assert any(line.startswith('bad.py: IBuilderConfig.set_memory_pool_limit called with 2 '
                               'positional (int, MemoryPoolType)') for line in found), found
    assert any(line.startswith('bad.py: IBuilderConfig.set_memory_pool_limit called with 2 '
                               'positional (BuilderFlag, int)') for line in found), found
    assert any(line.startswith("bad.py: IBuilderConfig.set_timing_cache called with 1 "
                               "positional (ITimingCache) and keywords ['ignore_mismatches']")
               for line in found), found
    assert 'bad.py: ITimingCache.serialise does not exist' in found
    assert 'bad.py: IBuilderConfig.int8_calibratr does not exist' in found
    assert 'bad.py: IBuilderConfig.builder_optimization_level set to str; TensorRT takes int' in found
    assert 'bad.py: IBuilderConfig.num_optimization_profiles is read-only' in found
    assert any(line.startswith('bad.py: IOptimizationProfile.set_shape called with 3 positional '
                               '(str, tuple, tuple)') for line in found), found
    assert any(line.startswith('bad.py: Builder.create_network called with 1 positional (str)')
               for line in found), found
    assert 'bad.py: TensorIOMode.INPT does not exist' in found
    assert len(found) == 13, found  # nothing else: the correct calls pass


def test_the_fake_matches_the_real_bindings(stub_libs, tmp_path):
    """The shared fake of the runtime API takes the bindings' parameter names, has their
    enum values and their nptype, for every version; its old names would be caught."""
    for version in VERSIONS:
        assert scan(version, stub_libs, '--fake') == [], version
    old = tmp_path / 'fake_tensorrt.py'
    source = (ROOT / 'yolo_trt_ros' / 'testing' / 'fake_tensorrt.py').read_text()
    old.write_text(source.replace('def execute_async_v3(self, stream_handle: int)',
                                  'def execute_async_v3(self, stream: int)')
                   .replace('def set_tensor_address(self, name: str, memory: int)',
                            'def set_tensor_address(self, name: str, ptr: int)')
                   .replace('DataType.INT8: np.int8,', 'DataType.INT8: np.int8, DataType.BF16: '
                                                       'np.float16,'))
    assert scan('10.13.3.9', stub_libs, '--fake', old) == [
        "fake IExecutionContext.execute_async_v3['stream']: the binding declares [['stream_handle']]",
        "fake IExecutionContext.set_tensor_address['name', 'ptr']: the binding declares [['name', 'memory']]",
        'fake nptype(DataType.BF16): float16, TensorRT: TypeError']


@pytest.mark.parametrize('version,strong', [('10.3.0', False), ('10.13.3.9', False),
                                            ('11.4.0.106', True), ('rtx', True)])
def test_the_strongly_typed_gate_follows_each_bindings_version(version, strong, stub_libs):
    """trt_build.strongly_typed_only(), from the real module's name and version string:
    TensorRT 10 weakly typed, TensorRT 11 and TensorRT-RTX strongly typed, exactly where
    the weak-typing flag BuilderFlag.FP16 is gone."""
    answer = scan(version, stub_libs, '--gate')
    assert answer['strongly_typed'] is strong
    assert answer['fp16_flag'] is not strong
