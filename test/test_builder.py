"""Engine builds with the real tensorrt_rtx builder on the CPU, and the engine cache."""
from __future__ import annotations

import json
import logging
import os
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from support.logs import core_log
from support.models import conv_stack
from support.needs import optional_module

from yolo_trt_ros.core.build.builder import build_engine, engine_for_backend
from yolo_trt_ros.core.build.calibrator import calibration_batches
from yolo_trt_ros.core.build.options import BuildOptions, ShapeProfile
from yolo_trt_ros.core.errors import Cancelled, EngineError
from yolo_trt_ros.core.gpu.cuda import probe_gpu
from yolo_trt_ros.core.models.synthetic import constant_output_model as make_constant_model
from yolo_trt_ros.core.store.cache import EngineCache

RTX = BuildOptions(flavour='tensorrt_rtx')


@pytest.fixture
def small_model(tmp_path) -> Path:
    out = np.random.default_rng(0).uniform(0, 1, (7, 20)).astype(np.float32)
    return make_constant_model(tmp_path / 'small.onnx', out, input_hw=(32, 32),
                               names=['a', 'b', 'c'])


def rtx():
    return optional_module('tensorrt_rtx', 'the builder that runs without a GPU')


def build(model, cache, log=None, **options):
    rtx()
    with core_log(log) as lines:
        result = build_engine(model, BuildOptions(flavour='tensorrt_rtx', **options), cache)
    return result, lines


@pytest.mark.parametrize('precision', ['fp32', 'fp16'])
def test_build_writes_engine_and_sidecar(small_model, tmp_path, precision):
    result, log = build(small_model, tmp_path / 'cache', precision=precision)
    assert not result.cache_hit and result.engine_path.stat().st_size > 0
    side = json.loads(result.engine_path.with_suffix('.json').read_text())
    key = side['key']
    assert key['flavour'] == 'tensorrt_rtx' and key['precision'] == precision
    assert key['profile'] == 'static' and len(key['onnx_sha256']) == 64
    gpu = probe_gpu()  # no GPU: the builder's default targets
    assert key['target']['gpu'] == (gpu.name if gpu.count else None)
    assert side['tensors'] == {
        'inputs': [{'name': 'images', 'shape': [1, 3, 32, 32], 'dtype': 'FLOAT'}],
        'outputs': [{'name': 'output0', 'shape': [1, 7, 20], 'dtype': 'FLOAT'}]}
    assert side['names'] == ['a', 'b', 'c']
    assert side['engine_size'] == result.engine_path.stat().st_size
    assert side['build_seconds'] > 0 and side['built_at']
    assert any('building' in line for line in log)


@pytest.mark.parametrize('precision', ['fp32', 'fp16'])
def test_default_model_builds(default_model, tmp_path, precision):
    result, _ = build(default_model, tmp_path, precision=precision)
    side = result.sidecar
    assert side['tensors']['outputs'][0]['shape'] == [1, 84, 2535]
    assert side['names'][0] == 'person' and len(side['names']) == 80
    if precision == 'fp16':  # the converted ONNX is cached too
        assert list(tmp_path.glob('fp16-*.onnx'))


def test_second_build_is_a_cache_hit_and_builds_nothing(small_model, tmp_path):
    first, _ = build(small_model, tmp_path)
    mtime = first.engine_path.stat().st_mtime_ns
    second, log = build(small_model, tmp_path)
    assert second.cache_hit and second.engine_path == first.engine_path
    assert first.engine_path.stat().st_mtime_ns == mtime
    assert log == [f'using cached engine {first.engine_path}']
    forced = build_engine(small_model, RTX, tmp_path, force=True)
    assert not forced.cache_hit


def test_key_changes_with_onnx_bytes_precision_and_profile(small_model, tmp_path):
    base, _ = build(small_model, tmp_path)
    other = make_constant_model(tmp_path / 'other.onnx', np.ones((7, 20), np.float32),
                                input_hw=(32, 32), names=['a', 'b', 'c'])
    fp16, _ = build(small_model, tmp_path, precision='fp16')
    dyn_model = make_constant_model(tmp_path / 'dyn.onnx', np.ones((7, 20), np.float32),
                                    input_hw=(32, 32), batch='N')
    dyn1, _ = build(dyn_model, tmp_path, dynamic=ShapeProfile.parse('1x32x32:2x32x32:4x32x32'))
    dyn2, _ = build(dyn_model, tmp_path, dynamic=ShapeProfile.parse('1x32x32:1x32x32:2x32x32'))
    paths = {base.engine_path, build(other, tmp_path)[0].engine_path, fp16.engine_path,
             dyn1.engine_path, dyn2.engine_path}
    assert len(paths) == 5
    assert dyn1.sidecar['key']['profile'] == {'min': [1, 32, 32], 'opt': [2, 32, 32],
                                             'max': [4, 32, 32]}
    assert dyn1.sidecar['tensors']['inputs'][0]['shape'] == [-1, 3, -1, -1]


@pytest.mark.parametrize('damage', ['flip_byte', 'truncate', 'sidecar_key', 'sidecar_garbage',
                                    'no_sidecar', 'world_writable'])
def test_damaged_cache_entries_are_rebuilt_never_loaded(small_model, tmp_path, damage):
    first, _ = build(small_model, tmp_path)
    engine, sidecar = first.engine_path, first.engine_path.with_suffix('.json')
    if damage == 'flip_byte':
        data = bytearray(engine.read_bytes())
        data[len(data) // 2] ^= 0xFF
        engine.write_bytes(bytes(data))
    elif damage == 'truncate':
        engine.write_bytes(engine.read_bytes()[:100])
    elif damage == 'sidecar_key':
        side = json.loads(sidecar.read_text())
        side['key']['precision'] = 'fp16'
        sidecar.write_text(json.dumps(side))
    elif damage == 'sidecar_garbage':
        sidecar.write_text('{not json')
    elif damage == 'no_sidecar':
        sidecar.unlink()
    elif damage == 'world_writable':
        engine.chmod(0o666)
    why = {'flip_byte': 'corrupt', 'truncate': 'truncated', 'sidecar_key': 'does not match',
           'sidecar_garbage': 'unreadable', 'no_sidecar': 'missing',
           'world_writable': 'writable by group or others'}[damage]
    again, log = build(small_model, tmp_path)
    assert not again.cache_hit and why in log[0]
    assert EngineCache(tmp_path).lookup(again.engine_path.stem, again.sidecar['key'])[0] is not None
    assert oct(again.engine_path.stat().st_mode & 0o777) == '0o600'


def test_cache_dir_is_private(small_model, tmp_path):
    cache = tmp_path / 'new' / 'cache'
    build(small_model, cache)
    assert cache.stat().st_mode & 0o777 == 0o700


def test_two_builders_at_once_build_once(small_model, tmp_path):
    cmd = [sys.executable, '-m', 'yolo_trt_ros.cli', 'build', '--model', str(small_model),
           '--cache-dir', str(tmp_path), '--flavour', 'tensorrt_rtx']
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    summaries = sorted(out.strip().splitlines()[-2].split(' in ')[0] for out, _ in outs)
    assert summaries == ['built', 'cache hit']
    assert outs[0][0].strip().splitlines()[-1] == outs[1][0].strip().splitlines()[-1]
    assert len(list(tmp_path.glob('*.engine'))) == 1


def test_crash_between_engine_and_sidecar_leaves_nothing_loadable(small_model, tmp_path):
    script = textwrap.dedent(f'''
        import os
        from yolo_trt_ros.core.store import trust as engine_cache
        real = engine_cache.atomic_write
        def crash_on_sidecar(path, data, mode=0o644):
            if path.suffix == '.json':
                os._exit(9)  # the process dies after the engine landed
            real(path, data, mode)
        engine_cache.atomic_write = crash_on_sidecar
        from yolo_trt_ros.core.build.builder import build_engine
        from yolo_trt_ros.core.build.options import BuildOptions
        build_engine({str(small_model)!r}, BuildOptions(flavour='tensorrt_rtx'), {str(tmp_path)!r})
    ''')
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, timeout=240)
    assert proc.returncode == 9
    assert list(tmp_path.glob('*.engine')) and not list(tmp_path.glob('*.json'))
    result, log = build(small_model, tmp_path)
    assert not result.cache_hit and 'sidecar' in log[0] and 'missing' in log[0]


def test_bad_onnx_reports_the_parser_message_and_node(tmp_path):
    node = helper.make_node('NoSuchOp', ['images'], ['output0'], name='mystery_node',
                            domain='com.example')
    graph = helper.make_graph([node], 'bad', [helper.make_tensor_value_info(
        'images', TensorProto.FLOAT, [1, 3, 8, 8])], [helper.make_tensor_value_info(
            'output0', TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17),
                                                    helper.make_opsetid('com.example', 1)])
    path = tmp_path / 'bad.onnx'
    onnx.save(model, str(path))
    with pytest.raises(EngineError, match=r"TensorRT could not parse the ONNX model: .*"
                                          r"mystery_node.*NoSuchOp"):
        build(path, tmp_path / 'c', simplify=False)


def test_not_an_onnx_file_and_missing_file(tmp_path):
    junk = tmp_path / 'junk.onnx'
    junk.write_bytes(b'\x00\x01 definitely not protobuf \xff' * 3)
    with pytest.raises(Exception, match='not an ONNX model|could not parse'):
        build(junk, tmp_path / 'c')
    with pytest.raises(Exception, match='cannot read ONNX model'):
        build(tmp_path / 'none.onnx', tmp_path / 'c')


def test_int8_on_a_strongly_typed_builder_says_what_to_install(small_model, tmp_path):
    with pytest.raises(EngineError, match=r"install NVIDIA ModelOpt \(pip install 'nvidia-modelopt\[onnx\]'\)"):
        build(small_model, tmp_path, precision='int8', calib_dir=tmp_path)


@pytest.mark.parametrize('kwargs,message', [
    (dict(precision='int4'), "precision: 'int4' is not fp32, fp16 or int8"),
    (dict(precision='int8'), 'int8 needs --calib-dir'),
    (dict(opt_level=9), 'optimisation level 9'),
    (dict(workspace_mb=0), 'workspace 0 MB'),
    # Issue 16: calibration never got a profile and blamed "the ONNX input".
    (dict(precision='int8', calib_dir=Path('images'),
          dynamic=ShapeProfile.parse('1x32x32:2x32x32:4x32x32')),
     r"int8 with --dynamic is not supported: int8 calibration runs at the ONNX input's static "
     r'shape; build int8 without --dynamic, or fp16 with it'),
])
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BuildOptions(**kwargs)


@pytest.mark.parametrize('text', ['1x416x416', '1x416:2x416:4x416', '4x416x416:2x416x416:1x416x416'])
def test_bad_profiles(text):
    with pytest.raises(ValueError, match='dynamic profile'):
        ShapeProfile.parse(text)


def test_engine_for_backend(small_model, tmp_path):
    with core_log() as lines:
        assert engine_for_backend(small_model, RTX, 'onnxruntime', tmp_path) is None
    assert lines == ['backend onnxruntime: no engine needed']
    with core_log(lines):
        result = engine_for_backend(small_model, RTX, 'auto', tmp_path)
    assert result is not None and result.engine_path.is_file()
    with pytest.raises(EngineError, match='TensorRT is not installed'):
        engine_for_backend(small_model, BuildOptions(flavour='tensorrt'), 'tensorrt', tmp_path)
    lines.clear()
    with core_log(lines):
        assert engine_for_backend(small_model, BuildOptions(flavour='tensorrt'), 'auto',
                                  tmp_path) is None
    assert lines[0].startswith('no TensorRT builder (TensorRT is not installed')


def test_cli_build_prints_the_engine_path_last(small_model, tmp_path):
    cmd = [sys.executable, '-m', 'yolo_trt_ros.cli', 'build', '--model', str(small_model),
           '--cache-dir', str(tmp_path), '--precision', 'fp16']
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert first.returncode == second.returncode == 0, first.stderr
    path = Path(first.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.suffix == '.engine'
    assert first.stdout.startswith('built in ') and second.stdout.startswith('cache hit in ')
    bad = subprocess.run(cmd[:5] + [str(tmp_path / 'none.onnx')], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.strip().endswith('No such file or directory')


def test_calibration_batches_use_the_core_preprocessing(tmp_path, bus_jpg):
    for i in range(5):
        cv2.imwrite(str(tmp_path / f'{i}.png'), np.full((40, 80, 3), i * 40, np.uint8))
    (tmp_path / 'notes.txt').write_text('ignored')
    (tmp_path / 'broken.jpg').write_bytes(b'junk')
    batches = [b.copy() for b in calibration_batches(tmp_path, 2, 32, 32)]
    assert len(batches) == 2 and batches[0].shape == (2, 3, 32, 32)  # 5 images: last dropped
    assert np.isclose(batches[0][1, 0, 16, 16], 40 / 255) and np.isclose(batches[0][0, 0, 0, 0], 114 / 255)
    with pytest.raises(EngineError, match='at least 8 images'):
        next(calibration_batches(tmp_path, 8, 32, 32))


def test_cached_engine_owned_by_another_user_is_refused(small_model, tmp_path):
    if os.getuid() != 0:
        pytest.skip('changing a file owner needs root')
    first, _ = build(small_model, tmp_path)
    os.chown(first.engine_path, 12345, -1)
    again, log = build(small_model, tmp_path)
    assert 'owned by uid 12345' in log[0] and not again.cache_hit


# -- issue 9: the TensorRT path held to the real TensorRT -----------------------------------

def test_build_progress_reaches_the_log(small_model, tmp_path):
    """Defect 3: TensorRT calls phase_start(phase_name, parent_phase, num_steps); with the
    arguments taken in another order no phase was ever logged."""
    _, log = build(small_model, tmp_path)
    assert any(line.startswith('  Building engine (') for line in log), log


def test_a_builder_that_cannot_start_is_one_clear_error(small_model, tmp_path, monkeypatch):
    """Defect 4: trt.Builder raises TypeError (never returns None) when TensorRT cannot
    initialise; that must become our error, not a traceback."""
    def no_builder(logger):
        raise TypeError('pybind11::init(): factory function returned nullptr')
    monkeypatch.setattr(rtx(), 'Builder', no_builder)
    with pytest.raises(EngineError, match='could not create a builder .*nullptr'):
        build(small_model, tmp_path)


@pytest.mark.parametrize('precision', ['fp32', 'fp16'])
def test_default_model_takes_a_dynamic_batch(default_model, tmp_path, precision):
    """Defect 14: the darknet converter wrote batch-1 reshapes, so a dynamic batch failed
    inside TensorRT."""
    result, _ = build(default_model, tmp_path, precision=precision,
                      dynamic=ShapeProfile.parse('1x416x416:2x416x416:4x416x416'))
    assert result.sidecar['tensors']['inputs'][0]['shape'] == [-1, 3, -1, -1]
    assert result.sidecar['format'] == 'yolov8'


def test_an_impossible_profile_is_one_line_naming_the_input(tmp_path):
    """Defect 14: a model that cannot take the profile gets our error, not TensorRT's."""
    x = helper.make_tensor_value_info('images', TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info('out', TensorProto.FLOAT, [1, 6, 32])
    shape = onnx.numpy_helper.from_array(np.array([1, 6, 32], np.int64), 'shape')
    graph = helper.make_graph([helper.make_node('Reshape', ['images', 'shape'], ['out'])],
                              'batch1', [x], [y], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    path = tmp_path / 'batch1.onnx'
    onnx.save(model, str(path))
    with pytest.raises(EngineError, match=r"cannot take the profile's opt shape \[2, 3, 8, 8\] "
                                          r"at input 'images'"):
        build(path, tmp_path / 'cache', dynamic=ShapeProfile.parse('1x8x8:2x8x8:4x8x8'))


def test_fp16_then_dynamic_stays_dynamic(small_model, tmp_path):
    """Defect 6: the cached fp16 ONNX was returned before the dynamic rewrite, so the second
    fp16 build (or --force) was static."""
    build(small_model, tmp_path, precision='fp16')
    dynamic = ShapeProfile.parse('1x32x32:2x32x32:4x32x32')
    result, log = build(small_model, tmp_path, precision='fp16', dynamic=dynamic)
    assert any('using cached fp16 ONNX' in line for line in log)
    assert result.sidecar['tensors']['inputs'][0]['shape'] == [-1, 3, -1, -1]


def test_fp16_cache_is_keyed_by_simplification_and_converter(small_model, tmp_path, monkeypatch):
    build(small_model, tmp_path, precision='fp16')
    build(small_model, tmp_path, precision='fp16', simplify=False)
    from yolo_trt_ros.core.build import fp16
    monkeypatch.setattr(fp16, 'CONVERTER_VERSION', fp16.CONVERTER_VERSION + 1)
    _, log = build(small_model, tmp_path, precision='fp16', opt_level=2)
    assert len(list(tmp_path.glob('fp16-*.onnx'))) == 3
    assert not any('using cached fp16 ONNX' in line for line in log)


def test_an_untrusted_fp16_onnx_is_never_used(small_model, tmp_path):
    """Defect 12: the fp16 ONNX cache gets the engine cache's trust checks."""
    _, first = build(small_model, tmp_path, precision='fp16')
    converted, = tmp_path.glob('fp16-*.onnx')
    converted.chmod(0o666)
    _, log = build(small_model, tmp_path, precision='fp16', opt_level=1)
    assert not any('using cached fp16 ONNX' in line for line in log)
    assert converted.stat().st_mode & 0o777 == 0o600  # rewritten privately


def test_calibration_key_follows_image_contents_model_and_shape(small_model, tmp_path):
    """Defect 5: one calibration.cache served every model and image set."""
    from yolo_trt_ros.core.build.builder import calibration_cache_name
    from yolo_trt_ros.core.build.lookup import calibration_set_hash
    images = tmp_path / 'calib'
    images.mkdir()
    for i in range(3):
        cv2.imwrite(str(images / f'{i}.png'), np.full((8, 8, 3), i * 50, np.uint8))
    before = calibration_set_hash(images)
    cv2.imwrite(str(images / '1.png'), np.full((8, 8, 3), 7, np.uint8))  # same name, new pixels
    assert calibration_set_hash(images) != before
    fields = {'onnx_sha256': 'a' * 64, 'calibration': before}
    name = calibration_cache_name(fields, [1, 3, 32, 32])
    assert name.startswith('calibration-') and name != calibration_cache_name(
        dict(fields, onnx_sha256='b' * 64), [1, 3, 32, 32])
    assert name != calibration_cache_name(fields, [1, 3, 64, 64])
    assert name != calibration_cache_name(dict(fields, calibration='c'), [1, 3, 32, 32])


def test_timing_cache_is_keyed_by_gpu_and_version():
    """Defect 9: tactic timings were shared across GPUs (loaded with ignore_mismatch)."""
    import types

    from yolo_trt_ros.core.build.trt_build import timing_cache_name
    a = timing_cache_name(types.SimpleNamespace(__name__='tensorrt', __version__='10.13.3.9'))
    b = timing_cache_name(types.SimpleNamespace(__name__='tensorrt', __version__='10.3.0'))
    assert a != b and '10.13.3.9' in a
    gpu = probe_gpu()  # the GPU's name and compute capability, or no_gpu
    assert ('no_gpu' in a) == (gpu.count == 0)
    if gpu.count:
        assert f'sm{gpu.compute_capability[0]}{gpu.compute_capability[1]}' in a


# -- issue 11: the cache lookup trusts only what the builder would write --------------------

@pytest.mark.parametrize('damage,why', [
    ('dir_777', 'writable by group or others'),
    ('symlinked_engine', 'is a symlink'),
    ('symlinked_sidecar', 'is a symlink'),
    ('edited_names', 'modified after the build'),
    ('edited_format', 'modified after the build'),
])
def test_lookup_applies_the_write_rules(small_model, tmp_path, damage, why):
    cache = tmp_path / 'cache'
    first, _ = build(small_model, cache)
    engine, sidecar = first.engine_path, first.engine_path.with_suffix('.json')
    if damage == 'dir_777':
        cache.chmod(0o777)
    elif damage in ('symlinked_engine', 'symlinked_sidecar'):
        target = engine if damage == 'symlinked_engine' else sidecar
        moved = tmp_path / target.name
        target.rename(moved)
        target.symlink_to(moved)
    else:
        side = json.loads(sidecar.read_text())
        side['names' if damage == 'edited_names' else 'format'] = ['x', 'y', 'z'] \
            if damage == 'edited_names' else 'yolov5'
        sidecar.write_text(json.dumps(side))
    found, reason = EngineCache(cache).lookup(engine.stem, first.sidecar['key'])
    assert found is None and why in reason


def test_stale_temporaries_of_killed_builds_are_removed(small_model, tmp_path):
    stale = tmp_path / '.abc.engine.999999.tmp'  # left by a builder killed long ago
    stale.write_bytes(b'partial')
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    fresh = tmp_path / '.def.engine.1.tmp'  # a live writer, maybe in another PID namespace
    fresh.write_bytes(b'being written')
    build(small_model, tmp_path)
    assert not stale.exists() and fresh.exists()


def test_tensorrt_path_labels_exactly_like_onnxruntime(small_model, tmp_path, bus_jpg):
    """Defect 1: class names reach the TensorRT backend from the engine's sidecar; the
    engine is a real tensorrt_rtx build, run by the named runtime double."""
    from support.trt_double import HostMemoryCudaDouble, TensorRTRuntimeDouble

    from yolo_trt_ros.core.backends.select import RuntimeParts
    from yolo_trt_ros.core.image.decode import read_image
    from yolo_trt_ros.core.pipeline.results import PostprocessConfig
    from yolo_trt_ros.core.runtime.detector import Detector, DetectorConfig

    result, _ = build(small_model, tmp_path)
    cuda = HostMemoryCudaDouble()
    trt = TensorRTRuntimeDouble(memory=cuda, name='tensorrt_rtx',
                                version=rtx().__version__)
    trt.register_engine(result.engine_path, small_model)
    post = PostprocessConfig(conf_threshold=0.1)
    config = DetectorConfig(small_model, backend='tensorrt', build=RTX, cache_dir=tmp_path,
                            post=post)
    image = read_image(str(bus_jpg))
    with Detector.open(config, RuntimeParts(trt, cuda)) as trt_det, \
            Detector.open(DetectorConfig(small_model, backend='onnxruntime', post=post)) as ort:
        assert trt_det.backend.info.name == 'tensorrt'
        assert trt_det.names == ort.names == ['a', 'b', 'c']
        assert trt_det.output_format == ort.output_format
        a, b = trt_det.detect([image])[0], ort.detect([image])[0]
        assert len(a) > 0
        assert [trt_det.label(c) for c in a.class_ids] == [ort.label(c) for c in b.class_ids]
        np.testing.assert_allclose(a.boxes, b.boxes)


def test_the_engine_loads_with_the_tensorrt_that_built_it(small_model, tmp_path, monkeypatch):
    """Defect 8: with another TensorRT importable first, a tensorrt_rtx engine still loads
    with tensorrt_rtx (its sidecar says so), and a version mismatch is named."""
    import types

    from yolo_trt_ros.core.backends.tensorrt import runtime_module
    from yolo_trt_ros.core.backends.trt_module import check_built_by
    from yolo_trt_ros.core.store.cache import load_engine
    result, _ = build(small_model, tmp_path)
    # A stand-in `tensorrt` module, importable first (only its name matters here).
    monkeypatch.setitem(sys.modules, 'tensorrt', types.SimpleNamespace(
        __name__='tensorrt', __version__='10.13.3.9'))
    trt, note = runtime_module(load_engine(result.engine_path))
    assert trt is rtx() and note == ''
    with pytest.raises(EngineError, match=r'built with tensorrt_rtx 1\.0, this machine has '
                                          r'tensorrt_rtx .*rebuild'):
        check_built_by(rtx(), {'flavour': 'tensorrt_rtx', 'tensorrt_version': '1.0'})


def test_cli_detect_finds_the_engine_yolo_trt_build_made(small_model, tmp_path, bus_jpg):
    """Defect 15: `yolo-trt detect` never looked in the engine cache."""
    rtx()
    base = [sys.executable, '-m', 'yolo_trt_ros.cli']
    where = ['--model', str(small_model), '--cache-dir', str(tmp_path)]
    before = subprocess.run(base + ['detect', str(bus_jpg), '--backend', 'tensorrt'] + where,
                            capture_output=True, text=True, timeout=120)
    assert before.returncode == 2 and 'no cached engine' in before.stderr
    built = subprocess.run(base + ['build', '--flavour', 'tensorrt_rtx'] + where,
                           capture_output=True, text=True, timeout=240)
    assert built.returncode == 0, built.stderr
    after = subprocess.run(base + ['detect', str(bus_jpg), '--backend', 'tensorrt'] + where,
                           capture_output=True, text=True, timeout=120)
    # It found the engine: what stops it now is the missing GPU (or, on a GPU that
    # TensorRT-RTX does not run on, the refusal), named as such.
    assert 'no cached engine' not in after.stderr and 'yolo-trt build' not in after.stderr
    assert after.returncode == 2, after.stderr
    if probe_gpu().count == 0:
        assert 'TensorRT needs an NVIDIA GPU' in after.stderr
    auto = subprocess.run(base + ['detect', str(bus_jpg)] + where, capture_output=True,
                          text=True, timeout=120)
    assert auto.returncode == 0 and 'onnxruntime' in auto.stderr


def test_calibration_errors_are_kept_for_the_build_and_the_buffer_freed(tmp_path):
    """Review finding: TensorRT calls get_batch from C++ and only prints what it raises, as
    "no more batches". The calibrator checks its images up front, keeps a later error for
    the builder to raise, and frees its device buffer on release. TensorRT 10's
    IInt8EntropyCalibrator2 is not installed here: a plain base class stands in for it (the
    TensorRT boundary), and the CUDA double for the GPU."""
    import types

    from support.trt_double import HostMemoryCudaDouble

    from yolo_trt_ros.core.build.calibrator import make_calibrator, release
    from yolo_trt_ros.core.store.trust import TrustedDir

    trt = types.SimpleNamespace(IInt8EntropyCalibrator2=object)
    tensor = types.SimpleNamespace(shape=(2, 3, 32, 32))
    images = tmp_path / 'calib'
    images.mkdir()
    store = TrustedDir(tmp_path / 'cache')
    with pytest.raises(EngineError, match='at least 2 images'):
        make_calibrator(trt, tensor, images, store, 'x.cache', HostMemoryCudaDouble())
    for i in range(6):
        cv2.imwrite(str(images / f'{i}.png'), np.full((16, 24, 3), i * 30, np.uint8))
    cuda = HostMemoryCudaDouble()
    cuda.streams.add(0)  # the legacy default stream the calibrator uses
    calibrator = make_calibrator(trt, tensor, images, store, 'x.cache', cuda)
    assert calibrator.get_batch(['images']) == [calibrator.device]
    cuda.streams.discard(0)  # a CUDA failure in the middle of calibration
    assert calibrator.get_batch(['images']) is None and calibrator.error is not None
    release(calibrator)
    assert cuda.live == 0


def test_int8_with_dynamic_is_one_line_from_the_cli(small_model, tmp_path):
    proc = subprocess.run([sys.executable, '-m', 'yolo_trt_ros.cli', 'build', '--model',
                           str(small_model), '--cache-dir', str(tmp_path), '--precision', 'int8',
                           '--calib-dir', str(tmp_path), '--dynamic', '1x32x32:2x32x32:4x32x32'],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith(
        'int8 with --dynamic is not supported: int8 calibration runs at the ONNX input\'s '
        'static shape; build int8 without --dynamic, or fp16 with it')


# -- issue 16: the corners of the TensorRT build that no test reached ----------------------

def test_workspace_mb_reaches_tensorrt_in_bytes(small_model, tmp_path, monkeypatch):
    """--workspace-mb 64: the builder config TensorRT builds with holds a 64 MiB WORKSPACE
    pool (read back from TensorRT-RTX), and the sidecar records it."""
    from yolo_trt_ros.core.build import trt_build
    configs, configure = [], trt_build.configure

    def keep(*args, **kwargs):  # the real configure; its config kept to read back
        configs.append(configure(*args, **kwargs))
        return configs[-1]

    monkeypatch.setattr(trt_build, 'configure', keep)
    result, _ = build(small_model, tmp_path, workspace_mb=64)
    assert configs[0].get_memory_pool_limit(rtx().MemoryPoolType.WORKSPACE) == 64 << 20
    assert result.sidecar['key']['workspace_mb'] == 64


def test_cli_build_with_workspace_mb(small_model, tmp_path):
    """End to end: `yolo-trt build --workspace-mb` builds, and the engine is keyed by it."""
    rtx()
    cmd = [sys.executable, '-m', 'yolo_trt_ros.cli', 'build', '--model', str(small_model),
           '--cache-dir', str(tmp_path), '--flavour', 'tensorrt_rtx']
    runs = [subprocess.run(cmd + extra, capture_output=True, text=True, timeout=240)
            for extra in (['--workspace-mb', '32'], ['--workspace-mb', '32'], [])]
    assert [r.returncode for r in runs] == [0, 0, 0], runs[0].stderr
    assert [r.stdout.split(' in ')[0] for r in runs] == ['built', 'cache hit', 'built']
    engine = Path(runs[0].stdout.strip().splitlines()[-1])
    assert json.loads(engine.with_suffix('.json').read_text())['key']['workspace_mb'] == 32


@pytest.mark.parametrize('flavour,version,strong', [
    ('tensorrt', '10.3.0', False), ('tensorrt', '10.13.3.9', False),
    ('tensorrt', '11.4.0.106', True), ('tensorrt', '12.0.1', True),
    ('tensorrt_rtx', '1.7.1.116', True)])
def test_strongly_typed_by_version(flavour, version, strong):
    """TensorRT 10 takes precision from builder flags; TensorRT 11+ and TensorRT-RTX only
    from the network (test_trt_conformance checks this against the real bindings)."""
    import types

    from yolo_trt_ros.core.build.trt_build import strongly_typed_only
    assert strongly_typed_only(types.SimpleNamespace(__name__=flavour, __version__=version)) \
        is strong


def test_a_build_that_fails_after_parsing_is_one_error(tmp_path):
    """The network parses, TensorRT-RTX's build_serialized_network returns None (a reshape
    the profile's batch cannot take): our error with TensorRT's message, no TypeError."""
    from yolo_trt_ros.core.build.onnx_prep import make_dynamic
    from yolo_trt_ros.core.build.trt_build import TrtSettings, build_plan
    from yolo_trt_ros.core.store.trust import TrustedDir
    x = helper.make_tensor_value_info('images', TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info('out', TensorProto.FLOAT, [1, 6, 32])
    shape = onnx.numpy_helper.from_array(np.array([1, 6, 32], np.int64), 'shape')
    graph = helper.make_graph([helper.make_node('Reshape', ['images', 'shape'], ['out'])],
                              'batch1', [x], [y], [shape])
    model = make_dynamic(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]))
    settings = TrtSettings('fp32', ShapeProfile.parse('1x8x8:2x8x8:4x8x8'), None, None, None,
                           'unused.cache')
    with pytest.raises(EngineError, match=r'TensorRT failed to build the engine: .*'
                                          r'buildSerializedNetwork.*reshap'):
        build_plan(rtx(), model, settings, True, TrustedDir(tmp_path))


def test_the_logger_keeps_warnings_and_errors_only():
    """make_logger on TensorRT-RTX's real ILogger: INTERNAL_ERROR, ERROR and WARNING are
    kept (for our error messages) and logged; INFO and VERBOSE are not."""
    from yolo_trt_ros.core.backends.trt_module import make_logger
    trt = rtx()
    kept: list[str] = []
    logger = make_logger(trt, kept)
    assert isinstance(logger, trt.ILogger)
    with core_log() as lines:
        for severity in trt.ILogger.Severity.__members__.values():
            logger.log(severity, f'message {severity.name}')
    assert kept == ['message INTERNAL_ERROR', 'message ERROR', 'message WARNING']
    assert lines == [f'TensorRT: {m}' for m in kept]


@pytest.mark.parametrize('stored,rejected', [
    (None, False), ('this GPU', False), ('another GPU', True), ('not a cache', False)])
def test_a_timing_cache_from_another_gpu_is_replaced_never_forced(tmp_path, stored, rejected):
    """Full TensorRT (a named double of its timing-cache calls: nothing here runs them):
    a stored cache TensorRT rejects is replaced by a new one, never loaded with
    ignore_mismatch; a cache of this GPU is used."""
    import types

    from support.trt_timing_double import BuilderConfigDouble, TimingCacheDouble

    from yolo_trt_ros.core.build.trt_build import _set_timing_cache, timing_cache_name
    from yolo_trt_ros.core.store.trust import TrustedDir
    trt = types.SimpleNamespace(__name__='tensorrt', __version__='10.13.3.9')
    store = TrustedDir(tmp_path)
    if stored == 'not a cache':
        store.write(timing_cache_name(trt), b'junk')
    elif stored is not None:
        store.write(timing_cache_name(trt), TimingCacheDouble(stored, b'tactics').serialize())
    config = BuilderConfigDouble()
    with core_log() as lines:
        _set_timing_cache(trt, config, store)
    assert config.cache is not None and config.cache.device == 'this GPU'
    assert config.cache.entries == (b'tactics' if stored == 'this GPU' else b'')
    assert all(ignore is False for _, _, ignore in config.calls)
    assert lines == ([f'  timing cache {timing_cache_name(trt)} rejected by TensorRT: '
                      f'starting a new one'] if rejected else [])


def test_a_timing_cache_tensorrt_refuses_is_one_error(tmp_path):
    import types

    from support.trt_timing_double import BuilderConfigDouble

    from yolo_trt_ros.core.build.trt_build import _set_timing_cache
    from yolo_trt_ros.core.store.trust import TrustedDir
    trt = types.SimpleNamespace(__name__='tensorrt', __version__='10.13.3.9')
    with pytest.raises(EngineError, match=r'TensorRT cannot create a timing cache \(timing-'):
        _set_timing_cache(trt, BuilderConfigDouble(refuse_all=True), TrustedDir(tmp_path))


# -- issue 17, failure 7: a build can be stopped ---------------------------------------------
def test_a_cancelled_build_stops_at_the_next_step_and_writes_nothing(tmp_path):
    """Cancel is set as soon as TensorRT starts building (its first progress phase): the
    build ends at TensorRT's next step with Cancelled, long before it would have ended."""
    rtx()
    model = conv_stack(tmp_path / 'stack.onnx', 1200)  # about 5 s to build on the dev machine
    cancel = threading.Event()

    class CancelOnBuild(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if 'Building engine' in record.getMessage():
                cancel.set()

    handler = CancelOnBuild()
    logging.getLogger('yolo_trt_ros').addHandler(handler)
    start = time.monotonic()
    try:
        with core_log(), pytest.raises(Cancelled, match='stopped before it finished'):
            build_engine(model, BuildOptions(flavour='tensorrt_rtx', simplify=False),
                         tmp_path / 'cache', cancel=cancel)
    finally:
        logging.getLogger('yolo_trt_ros').removeHandler(handler)
    assert time.monotonic() - start < 2.0
    assert not [p for p in (tmp_path / 'cache').iterdir() if not p.name.endswith('.lock')]


@pytest.mark.parametrize('how', ['engine_builder SIGTERM', 'yolo-trt build SIGINT'])
def test_a_signal_stops_a_build_within_2_s(tmp_path, how):
    rtx()
    model = conv_stack(tmp_path / 'stack.onnx', 1200)
    cache = tmp_path / 'cache'
    if how.startswith('engine_builder'):
        command = [sys.executable, '-m', 'yolo_trt_ros.ros.builder_node', '--ros-args',
                   '-p', f'model:={model}', '-p', 'backend:=tensorrt', '-p', 'simplify:=false',
                   '-p', 'flavour:=tensorrt_rtx', '-p', f'cache_dir:={cache}']
        signum = signal.SIGTERM
    else:
        command = [sys.executable, '-m', 'yolo_trt_ros.cli', 'build', '--model', str(model),
                   '--no-simplify', '--flavour', 'tensorrt_rtx', '--cache-dir', str(cache)]
        signum = signal.SIGINT
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:  # until TensorRT has started building
            lines.append(line)
            if 'Building engine' in line:
                break
        proc.send_signal(signum)
        start = time.monotonic()
        rc = proc.wait(timeout=30)
        stopped_in = time.monotonic() - start
        lines += proc.stdout.readlines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = ''.join(lines)
    assert rc == 128 + signum, out
    assert stopped_in < 2.0, (stopped_in, out)
    assert f'stopped by {signum.name}' in out and 'nothing was written' in out
    assert 'Traceback' not in out
    assert not list(cache.glob('*.engine')) and not list(cache.glob('.*.tmp'))


# -- issue 17, failure 5: filesystem trouble is one line, and nothing half-written ---------
def fs_case(tmp_path: Path, case: str) -> tuple[list[str], dict, object]:
    """(extra CLI arguments, environment, preexec_fn) for one kind of filesystem trouble."""
    env = {k: v for k, v in os.environ.items()
           if k not in ('YOLO_TRT_ROS_CACHE', 'XDG_CACHE_HOME')}
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    if case == 'cache dir is a file':
        return ['--cache-dir', str(blocker)], env, None
    if case == 'cache dir below a file':
        return ['--cache-dir', str(blocker / 'cache')], env, None
    if case == 'HOME is a file':
        return [], {**env, 'HOME': str(blocker)}, None
    # A file size limit (ulimit -f) below the engine's size: the engine write fails.
    return (['--cache-dir', str(tmp_path / 'cache')], env,
            lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10)))


@pytest.mark.parametrize('case,cause', [
    ('cache dir is a file', 'a file stands where the directory should be'),
    ('cache dir below a file', 'a file stands where a directory should be'),
    ('HOME is a file', 'a file stands where a directory should be'),
    ('file size limit', 'file too large (a file size limit, ulimit -f?)'),
])
def test_filesystem_trouble_is_one_line_and_leaves_nothing(small_model, tmp_path, case, cause):
    rtx()
    extra, env, limit = fs_case(tmp_path, case)
    proc = subprocess.run([sys.executable, '-m', 'yolo_trt_ros.cli', 'build', '--model',
                           str(small_model), '--flavour', 'tensorrt_rtx', *extra],
                          env=env, preexec_fn=limit, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith('yolo-trt:')]
    assert len(errors) == 1 and cause in errors[0], proc.stderr
    assert 'Traceback' not in proc.stderr
    left = [p for p in tmp_path.rglob('*') if p.suffix in ('.engine', '.json', '.tmp')]
    assert left == [], left


def test_a_directory_swapped_for_a_symlink_after_its_check_is_not_followed(tmp_path,
                                                                           monkeypatch):
    """Issue 17, failure 9: swapping the cache directory for a symlink between the check
    and the read fooled a trusted read (58 times in 1.3 million tries). The check and the
    read are the same opened directory now: swapped right after the check, the read still
    gets our file, never the one behind the symlink."""
    from yolo_trt_ros.core.store import trust

    ours, theirs = tmp_path / 'cache', tmp_path / 'theirs'
    for folder, content in ((ours, b'ours'), (theirs, b'theirs')):
        folder.mkdir(mode=0o700)
        (folder / 'x.engine').write_bytes(content)
        (folder / 'x.engine').chmod(0o600)
    real_open_dir = trust.open_dir

    def open_then_swap(path):
        fd = real_open_dir(path)
        ours.rename(tmp_path / 'moved')
        ours.symlink_to(theirs)  # the attacker's move, right after the check
        return fd

    monkeypatch.setattr(trust, 'open_dir', open_then_swap)
    assert trust.read_trusted(ours / 'x.engine') == b'ours'
