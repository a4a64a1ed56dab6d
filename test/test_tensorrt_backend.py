"""The TensorRT backend (its API use is checked against the real bindings in
test_trt_conformance.py): its logic (buffers, shapes, checks, clean-up) run against the named test
double for the TensorRT runtime (support/trt_double.py), with real ONNX Runtime numbers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.images import scan_bomb
from support.trt_double import (
    CudaDeviceAccess,
    DeviceMemoryOverrun,
    HostMemoryCudaDouble,
    InFlightRelease,
    TensorRTRuntimeDouble,
    plan_for,
)

from yolo_trt_ros.core.backends.onnxruntime import OnnxRuntimeBackend
from yolo_trt_ros.core.backends.select import RuntimeParts, open_backend
from yolo_trt_ros.core.backends.tensorrt import TensorRTBackend
from yolo_trt_ros.core.errors import BackendError, CudaError, EngineError
from yolo_trt_ros.core.gpu.cuda import CudaRuntime, GpuInfo
from yolo_trt_ros.core.image.decode import read_image
from yolo_trt_ros.core.models.synthetic import constant_output_model as make_constant_model
from yolo_trt_ros.core.runtime.detector import Detector, DetectorConfig

ROOT = Path(__file__).resolve().parents[1]
A_GPU = GpuInfo(1, 'double GPU', (8, 6))  # what probe_gpu says on a machine with a GPU


@pytest.fixture
def model(tmp_path):
    out = np.random.default_rng(0).uniform(0, 1, (7, 10)).astype(np.float32)
    return make_constant_model(tmp_path / 'm.onnx', out, input_hw=(32, 32), batch='N')


def engine_file(tmp_path, model, profile=((1, 3, 32, 32), (2, 3, 32, 32), (4, 3, 32, 32)),
                name='m.engine') -> Path:
    path = tmp_path / name
    path.write_bytes(plan_for(model, [list(s) for s in profile] if profile else None))
    path.chmod(0o600)
    return path


def doubles(fail=None, **cuda_options):
    """The TensorRT runtime double and the CUDA double it shares memory and streams with."""
    cuda = HostMemoryCudaDouble(**cuda_options)
    return TensorRTRuntimeDouble(fail, memory=cuda), cuda


def test_outputs_equal_onnxruntime_and_buffers_are_reused(tmp_path, model):
    trt, cuda = doubles()
    batch = np.random.default_rng(1).uniform(0, 1, (2, 3, 32, 32)).astype(np.float32)
    with TensorRTBackend(engine_file(tmp_path, model), trt=trt, cuda=cuda) as backend, \
            OnnxRuntimeBackend(model) as reference:
        assert backend.input.name == 'images' and backend.input.shape == (None, 3, 32, 32)
        assert [o.name for o in backend.outputs] == ['output0']
        assert backend.profile.max_batch == 4 and backend.profile.input_hw == (32, 32)
        first = backend.infer(batch)[0].copy()
        allocations = cuda.allocations
        for _ in range(3):
            out = backend.infer(batch)[0]
        assert cuda.allocations == allocations == 4  # 2 tensors x (device + pinned), once
        np.testing.assert_allclose(out, reference.infer(batch)[0], rtol=1e-6)
        np.testing.assert_array_equal(first, out)
        assert cuda.synchronized == 4  # one synchronisation per call
        shapes = [c for c in trt.calls if c[0] == 'set_input_shape']
        assert shapes == [('set_input_shape', 'images', (2, 3, 32, 32))]
        # A new batch size gets its buffers once; switching back and forth (a multi-camera
        # batch whose size varies) allocates nothing more and stays correct.
        one = backend.infer(batch[:1])[0].copy()
        assert one.shape == (1, 7, 10) and cuda.allocations == 8
        for _ in range(3):
            np.testing.assert_allclose(backend.infer(batch)[0], reference.infer(batch)[0])
            np.testing.assert_allclose(backend.infer(batch[:1])[0], one)
        assert cuda.allocations == 8
        sizes = [c[2][0] for c in trt.calls if c[0] == 'set_input_shape']
        assert sizes == [2, 1, 2, 1, 2, 1, 2, 1]  # the context follows every change
    assert cuda.live == 0 and not cuda.streams  # everything freed on exit


def test_the_double_catches_a_missing_synchronisation(tmp_path, model):
    """The double's strictness is itself tested: outputs read before the stream is
    synchronised are stale, as on a GPU."""
    trt, cuda = doubles()
    with TensorRTBackend(engine_file(tmp_path, model), trt=trt, cuda=cuda) as backend:
        buffers = backend._buffers_for((1, 3, 32, 32))
        out = buffers.host['output0']
        out[:] = -1
        backend._context.execute_async_v3(backend.stream)
        cuda.copy_to_host(out.ctypes.data, buffers.device['output0'], out.nbytes,
                          backend.stream)
        assert (out == -1).all()  # queued, not done
        cuda.stream_synchronize(backend.stream)
        assert (out != -1).any()


@pytest.mark.parametrize('fail,error,message', [
    ('runtime', EngineError, 'could not create a runtime .*factory function returned nullptr'),
    ('deserialize', EngineError, 'TensorRT refused engine .* rebuild it'),
    ('context', EngineError, 'cannot create an execution context'),
    ('address', BackendError, "set_tensor_address failed for tensor 'images'"),
    ('execute', BackendError, 'execute_async_v3 failed'),
])
def test_every_tensorrt_failure_is_reported_and_nothing_leaks(tmp_path, model, fail, error, message):
    trt, cuda = doubles(fail)
    batch = np.zeros((1, 3, 32, 32), np.float32)
    with pytest.raises(error, match=message):
        with TensorRTBackend(engine_file(tmp_path, model), trt=trt, cuda=cuda) as backend:
            backend.infer(batch)
    assert cuda.live == 0 and not cuda.streams


def test_auto_falls_back_when_tensorrt_cannot_start(tmp_path, model):
    """Defect 4: trt.Runtime raises TypeError (it never returns None): auto must fall back to
    ONNX Runtime with the reason; tensorrt must fail with one clear line."""
    trt, cuda = doubles('runtime')
    engine = engine_file(tmp_path, model)
    with open_backend(model, 'auto', engine, parts=RuntimeParts(trt, cuda), gpu=A_GPU) as b:
        assert b.info.name == 'onnxruntime'
        assert b.info.reason.startswith('auto: TensorRT unusable (tensorrt could not create a '
                                        'runtime (pybind11::init(): factory function returned '
                                        'nullptr)')
    with pytest.raises(EngineError, match='could not create a runtime'):
        open_backend(model, 'tensorrt', engine, parts=RuntimeParts(trt, cuda), gpu=A_GPU)
    assert cuda.live == 0 and not cuda.streams


def test_a_failed_execute_leaves_nothing_in_flight(tmp_path, model):
    """Defect 13: after execute fails, the input's copy must not still be queued into the
    pinned buffer that the next call overwrites."""
    trt, cuda = doubles()
    with TensorRTBackend(engine_file(tmp_path, model), trt=trt, cuda=cuda) as backend:
        batch = np.ones((1, 3, 32, 32), np.float32)
        backend.infer(batch)
        trt.fail = 'execute'
        with pytest.raises(BackendError, match='execute_async_v3 failed'):
            backend.infer(batch)
        assert cuda.pending(backend.stream) == 0
        trt.fail = None
        with OnnxRuntimeBackend(model) as ref:
            np.testing.assert_allclose(backend.infer(batch)[0], ref.infer(batch)[0])


def test_a_failed_shape_change_never_runs_on_the_wrong_buffers(tmp_path, model):
    """Defect 2: set_input_shape(B) succeeds, the allocation for B fails; the next call at
    A must set A again, not run shape B on A's smaller buffers."""
    trt, cuda = doubles()
    a = np.random.default_rng(3).uniform(0, 1, (1, 3, 32, 32)).astype(np.float32)
    with TensorRTBackend(engine_file(tmp_path, model), trt=trt, cuda=cuda) as backend, \
            OnnxRuntimeBackend(model) as ref:
        backend.infer(a)
        cuda.fail_malloc_after = 1  # the output buffer of shape B
        with pytest.raises(CudaError, match='cudaMalloc'):
            backend.infer(np.zeros((4, 3, 32, 32), np.float32))
        np.testing.assert_allclose(backend.infer(a)[0], ref.infer(a)[0])
        assert trt.calls[-2][0:3] == ('set_input_shape', 'images', (1, 3, 32, 32))
        live = cuda.live
        backend.infer(np.zeros((4, 3, 32, 32), np.float32))  # and B works once memory is there
        assert cuda.live == live + 4
    assert cuda.live == 0


def test_overrun_is_what_the_double_reports(tmp_path, model):
    """Without the fix above, the double would have raised this (checked directly)."""
    trt, cuda = doubles()
    with TensorRTBackend(engine_file(tmp_path, model), trt=trt, cuda=cuda) as backend:
        backend.infer(np.zeros((1, 3, 32, 32), np.float32))
        backend._context.set_input_shape('images', (4, 3, 32, 32))
        with pytest.raises(DeviceMemoryOverrun, match="'images' needs 49152 bytes"):
            backend._context.execute_async_v3(backend.stream)


def test_shapes_outside_the_profile_and_wrong_dtype(tmp_path, model):
    trt, cuda = doubles()
    with TensorRTBackend(engine_file(tmp_path, model), trt=trt, cuda=cuda) as b:
        with pytest.raises(BackendError, match=r"shape \[1, 3, 64, 64\] is outside the engine "
                                               r"profile min \[1, 3, 32, 32\] .. max \[4, 3, 32, 32\]"):
            b.infer(np.zeros((1, 3, 64, 64), np.float32))
        with pytest.raises(BackendError, match='outside the engine profile'):
            b.infer(np.zeros((5, 3, 32, 32), np.float32))
        with pytest.raises(BackendError, match="wants float32, got float64"):
            b.infer(np.zeros((1, 3, 32, 32), np.float64))
    assert cuda.live == 0


def test_a_static_engine_refuses_any_other_shape(tmp_path):
    """Defect 7: a batch-1 engine given 2 images gets a clear error, never a read past its
    input buffer."""
    out = np.zeros((7, 10), np.float32)
    static = make_constant_model(tmp_path / 's.onnx', out, input_hw=(32, 32), batch=1)
    trt, cuda = doubles()
    with TensorRTBackend(engine_file(tmp_path, static, profile=None), trt=trt, cuda=cuda) as b:
        assert b.profile.max_batch == 1
        with pytest.raises(BackendError, match='a static engine takes only its own'):
            b.infer(np.zeros((2, 3, 32, 32), np.float32))
        b.infer(np.zeros((1, 3, 32, 32), np.float32))


def test_more_cameras_than_the_profile_are_run_in_chunks(tmp_path, model, bus_jpg):
    """Defect 7: six frames on an engine whose profile stops at 4 images: two runs."""
    trt, cuda = doubles()
    image = read_image(str(bus_jpg))
    backend = TensorRTBackend(engine_file(tmp_path, model), trt=trt, cuda=cuda)
    with Detector(backend, None, 'yolov8') as det:
        results = det.detect([image] * 6)
    assert len(results) == 6
    runs = [c[2][0] for c in trt.calls if c[0] == 'set_input_shape']
    assert runs == [4, 2]


def test_dynamic_height_and_width_take_the_profile_size(tmp_path):
    """Defect 1: an engine with dynamic H/W is fed its profile's opt size, not 640."""
    out = np.zeros((7, 10), np.float32)
    dyn = make_constant_model(tmp_path / 'd.onnx', out, input_hw=('h', 'w'), batch='N')
    trt, cuda = doubles()
    engine = engine_file(tmp_path, dyn, profile=((1, 3, 64, 64), (1, 3, 96, 128),
                                                 (2, 3, 256, 256)))
    with Detector(TensorRTBackend(engine, trt=trt, cuda=cuda), None, 'yolov8') as det:
        assert det.input_size == (96, 128)
        det.detect([read_image_array(np.zeros((50, 60, 3), np.uint8))])
    assert ('set_input_shape', 'images', (1, 3, 96, 128)) in trt.calls


def read_image_array(pixels):
    from yolo_trt_ros.core.image.buffers import view_image
    h, w, _ = pixels.shape
    return view_image(pixels.tobytes(), h, w, 'bgr8', w * 3)


def test_missing_engine_file(tmp_path):
    trt, cuda = doubles()
    with pytest.raises(EngineError, match='does not exist'):
        TensorRTBackend(tmp_path / 'none.engine', trt=trt, cuda=cuda)


def test_without_a_gpu_the_real_cause_is_named(tmp_path, model):
    """Issue 11: no GPU is not "built for another TensorRT version or corrupt"."""
    from yolo_trt_ros.core.gpu.cuda import probe_gpu
    if probe_gpu().count:
        pytest.skip('this machine has a GPU')
    trt, _ = doubles()
    with pytest.raises(BackendError, match='TensorRT needs an NVIDIA GPU: no CUDA device'):
        TensorRTBackend(engine_file(tmp_path, model), trt=trt)


@pytest.mark.gpu
def test_real_cuda_memory_with_the_runtime_double(tmp_path, model):
    batch = np.random.default_rng(2).uniform(0, 1, (3, 3, 32, 32)).astype(np.float32)
    double = TensorRTRuntimeDouble(memory=CudaDeviceAccess())
    with TensorRTBackend(engine_file(tmp_path, model), trt=double,
                         cuda=CudaRuntime()) as backend, OnnxRuntimeBackend(model) as ref:
        for _ in range(3):  # pinned + device buffers reused across calls
            np.testing.assert_allclose(backend.infer(batch)[0], ref.infer(batch)[0], rtol=1e-6)
        one = batch[1:2] * 0.5  # a new batch size re-plans the buffers
        np.testing.assert_allclose(backend.infer(one)[0], ref.infer(one)[0], rtol=1e-6)


@pytest.mark.gpu
def test_gpu_path_detects_what_the_cpu_path_detects(tmp_path, default_model, bus_jpg):
    """Frame -> GPU letterbox kernel -> engine input on the device -> (runtime double) ->
    outputs: the same detections as the CPU path with ONNX Runtime."""
    engine = engine_file(tmp_path, default_model, profile=None, name='default.engine')
    backend = TensorRTBackend(engine, trt=TensorRTRuntimeDouble(memory=CudaDeviceAccess()),
                              cuda=CudaRuntime())
    image = read_image(str(bus_jpg))
    with Detector(backend, None, 'yolov8') as gpu, \
            Detector.open(DetectorConfig(default_model, backend='onnxruntime')) as cpu:
        assert gpu.preprocess_device == 'gpu' and cpu.preprocess_device == 'cpu'
        for _ in range(3):  # buffers and kernels reused
            a = gpu.detect([image])[0]
        assert gpu.decode_device == 'gpu'  # the output decoded where it lies
        b = cpu.detect([image])[0]
    assert a.class_ids.tolist() == b.class_ids.tolist()
    np.testing.assert_allclose(a.boxes, b.boxes, atol=3.0)  # px; inputs differ by <= 1/255
    np.testing.assert_allclose(a.scores, b.scores, atol=0.02)


@pytest.mark.gpu
def test_gpu_preprocessing_falls_back_to_the_cpu_where_nvrtc_has_no_code(tmp_path, model,
                                                                       monkeypatch, bus_jpg,
                                                                       caplog):
    """Defect 10: a GPU that NVRTC cannot target (sm_70 with NVRTC 13) preprocesses on the
    CPU, logged once with the reason, instead of failing."""
    from yolo_trt_ros.core.gpu import nvrtc
    monkeypatch.setattr(nvrtc, 'supported_archs', lambda: [200])
    backend = TensorRTBackend(engine_file(tmp_path, model),
                              trt=TensorRTRuntimeDouble(memory=CudaDeviceAccess()),
                              cuda=CudaRuntime())
    with caplog.at_level('INFO', logger='yolo_trt_ros'), \
            Detector(backend, None, 'yolov8') as det:
        assert det.preprocess_device == 'cpu'
        det.detect([read_image(str(bus_jpg))])
    said = [r.getMessage() for r in caplog.records if 'compiles for sm_200 and newer' in
            r.getMessage()]
    assert len(said) == 1, caplog.text


@pytest.mark.gpu
def test_kernel_cache_is_read_only_under_the_trust_policy(tmp_path, monkeypatch):
    """Defect 12: a cached cubin that others may write is compiled again, never loaded."""
    from yolo_trt_ros.core.gpu import nvrtc
    from yolo_trt_ros.core.gpu import preprocess as gpu_preprocess
    from yolo_trt_ros.core.gpu.cuda import probe_gpu
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    monkeypatch.setattr(nvrtc, '_FUNCTIONS', {})
    gpu_preprocess.load_kernels(probe_gpu().compute_capability)
    cached, = (tmp_path / 'yolo_trt_ros' / 'kernels').glob('*.cubin')
    assert cached.stat().st_mode & 0o777 == 0o600
    cached.chmod(0o666)
    monkeypatch.setattr(nvrtc, '_FUNCTIONS', {})
    gpu_preprocess.load_kernels(probe_gpu().compute_capability)
    assert cached.stat().st_mode & 0o777 == 0o600  # rewritten privately


def test_compressed_payloads_on_the_cpu_path(model, bus_jpg):
    """Without the GPU path, every codec decodes with OpenCV; bad payloads come back as
    their ImageError, in place, and the good ones still decode."""
    from yolo_trt_ros.core.errors import ImageError
    from yolo_trt_ros.core.image.buffers import ImageView
    with Detector.open(DetectorConfig(model, backend='onnxruntime')) as det:
        png = cv2_encode('.png', read_image(str(bus_jpg)).pixels)
        out = det.decode_compressed([(bus_jpg.read_bytes(), 'jpeg'), (b'junk', 'jpeg'),
                                     (png, 'png')], max_pixels=10_000_000)
        assert isinstance(out[0], ImageView) and isinstance(out[2], ImageView)
        assert isinstance(out[1], ImageError) and out[1].cause == 'format'
        assert det.jpeg_device == 'cpu'
        too_large = det.decode_compressed([(bus_jpg.read_bytes(), 'jpeg')], max_pixels=1000)
        assert too_large[0].cause == 'too_large'


def cv2_encode(ext, pixels):
    import cv2
    return cv2.imencode(ext, pixels)[1].tobytes()


@pytest.mark.gpu
def test_compressed_frames_decode_on_the_gpu_and_detect_like_the_cpu(tmp_path, default_model,
                                                                    bus_jpg):
    """Issue 12: JPEGs decode on the GPU in one batch and go straight into the kernel; other
    codecs and bad frames take the CPU path or come back as errors, in place."""
    from yolo_trt_ros.core.errors import ImageError
    from yolo_trt_ros.core.gpu.jpeg import DeviceImage, open_gpu_jpeg
    if open_gpu_jpeg(1)[0] is None:
        pytest.skip(f'no GPU JPEG decoder: {open_gpu_jpeg(1)[1]}')
    engine = engine_file(tmp_path, default_model, profile=None, name='default.engine')
    backend = TensorRTBackend(engine, trt=TensorRTRuntimeDouble(memory=CudaDeviceAccess()),
                              cuda=CudaRuntime())
    jpeg = bus_jpg.read_bytes()
    png = cv2_encode('.png', read_image(str(bus_jpg)).pixels)
    with Detector(backend, None, 'yolov8') as gpu, \
            Detector.open(DetectorConfig(default_model, backend='onnxruntime')) as cpu:
        frames = gpu.decode_compressed([(jpeg, 'jpeg'), (b'\xff\xd8junk', 'jpeg'),
                                        (png, 'png'), (jpeg, 'jpeg')])
        assert gpu.jpeg_device == 'gpu'
        assert isinstance(frames[0], DeviceImage) and isinstance(frames[3], DeviceImage)
        assert isinstance(frames[1], ImageError)
        good = [frames[0], frames[2], frames[3]]
        results = gpu.detect(good)
        # Issue 21: payloads whose headers the node judged already are not judged again
        # (a 70-scan JPEG is refused by admit(), not by nvImageCodec), the indices mapped
        # past the PNG that decodes on the CPU.
        bomb = scan_bomb(64, 70)
        png_bomb_bomb = gpu.decode_compressed([(png, 'png'), (bomb, 'jpeg'), (bomb, 'jpeg')],
                                              judged={2})
        assert png_bomb_bomb[0].pixels.shape[:2] == (1080, 810)
        assert png_bomb_bomb[1].cause == 'too_costly'
        assert isinstance(png_bomb_bomb[2], DeviceImage) and png_bomb_bomb[2].width == 64
        reference = cpu.detect([read_image(str(bus_jpg))])[0]
    for det in results:
        assert det.class_ids.tolist() == reference.class_ids.tolist()
        np.testing.assert_allclose(det.boxes, reference.boxes, atol=4.0)
        np.testing.assert_allclose(det.scores, reference.scores, atol=0.03)


@pytest.mark.gpu
def test_gpu_path_without_a_gpu_decoder_downloads_and_decodes_on_the_host(tmp_path, bus_jpg):
    """End-to-end layouts need no GPU decode: the GPU path preprocesses on the GPU and
    decodes the downloaded output on the host, with the CPU path's detections."""
    out = np.zeros((5, 6), np.float32)
    out[0] = [10, 20, 30, 40, 0.9, 2]
    out[1] = [5, 5, 25, 25, 0.6, 0]
    model = make_constant_model(tmp_path / 'e2e.onnx', out, input_hw=(64, 64))
    backend = TensorRTBackend(engine_file(tmp_path, model, profile=None),
                              trt=TensorRTRuntimeDouble(memory=CudaDeviceAccess()),
                              cuda=CudaRuntime())
    image = read_image(str(bus_jpg))
    with Detector(backend, None, 'end2end') as gpu, \
            Detector.open(DetectorConfig(model, backend='onnxruntime',
                                         output_format='end2end')) as cpu:
        a = gpu.detect([image])[0]
        assert gpu.preprocess_device == 'gpu' and gpu.decode_device == 'cpu'
        b = cpu.detect([image])[0]
    assert len(a) == 2 and a.class_ids.tolist() == b.class_ids.tolist()
    np.testing.assert_allclose(a.boxes, b.boxes)


# -- issue 16: the double as strict as TensorRT, and the backend's corners -----------------

def io_model(path: Path, in_type: int, out_type: int, batch: int | str = 1) -> Path:
    """images (batch, 3, 4, 4) of in_type -> out (same shape) of out_type (a Cast, or an
    Identity where the types agree)."""
    import onnx
    from onnx import helper
    shape = [batch, 3, 4, 4]
    node = helper.make_node('Identity', ['images'], ['out']) if in_type == out_type else \
        helper.make_node('Cast', ['images'], ['out'], to=out_type)
    graph = helper.make_graph([node], 'io', [helper.make_tensor_value_info('images', in_type, shape)],
                              [helper.make_tensor_value_info('out', out_type, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 21)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return path


def nonzero_model(path: Path) -> Path:
    """images (1, 3, 8, 8) -> the indices of its non-zero pixels, (4, count): the output
    size depends on the pixel values."""
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node('NonZero', ['images'], ['indices'])], 'nonzero',
        [helper.make_tensor_value_info('images', TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info('indices', TensorProto.INT64, [4, 'count'])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 10  # what every ONNX Runtime here loads (onnx 1.23 writes 14)
    onnx.save(model, str(path))
    return path


def test_keyword_calls_use_the_bindings_parameter_names(tmp_path, model):
    """The double's parameters are named as in the bindings (stream_handle, memory, ...):
    correct keyword code runs, and a wrong keyword is a TypeError as on TensorRT."""
    trt, cuda = doubles()
    runtime = trt.Runtime(trt.Logger())
    engine = runtime.deserialize_cuda_engine(
        serialized_engine=engine_file(tmp_path, model).read_bytes())
    assert engine.get_tensor_profile_shape(name='images', profile_index=0)[2] == (4, 3, 32, 32)
    ctx = engine.create_execution_context()
    assert ctx.set_input_shape(name='images', shape=(1, 3, 32, 32))
    stream = cuda.stream_create()
    for name in ('images', 'output0'):
        assert ctx.set_tensor_address(name=name, memory=cuda.malloc(1 << 14))
    assert ctx.execute_async_v3(stream_handle=stream)
    cuda.stream_synchronize(stream)
    with pytest.raises(TypeError):
        ctx.execute_async_v3(stream=stream)
    with pytest.raises(TypeError):
        ctx.set_tensor_address('images', ptr=cuda.malloc(256))


def test_a_data_dependent_output_is_minus_one_and_refused(tmp_path):
    """TensorRT reports -1 for an output dimension that depends on the data (NonZero); the
    backend allocates buffers from the output shapes, so it refuses such an engine in one
    line instead of guessing a size."""
    engine = engine_file(tmp_path, nonzero_model(tmp_path / 'nz.onnx'), profile=None)
    trt, cuda = doubles()
    with TensorRTBackend(engine, trt=trt, cuda=cuda) as backend:
        assert backend._context.get_tensor_shape('indices') == (4, -1)
        with pytest.raises(BackendError, match=r"output 'indices' has a data-dependent shape "
                                               r"\[4, -1\].*use backend onnxruntime"):
            backend.infer(np.ones((1, 3, 8, 8), np.float32))
    assert cuda.live == 0 and not cuda.streams


def test_the_double_catches_an_output_larger_than_its_buffer(tmp_path):
    """Sized from a run on zeros, a data-dependent output got a 1-byte buffer and 768 bytes
    were written into it: the double reports such a write."""
    trt, cuda = doubles()
    runtime = trt.Runtime(trt.Logger())
    engine = runtime.deserialize_cuda_engine(
        engine_file(tmp_path, nonzero_model(tmp_path / 'nz.onnx'), profile=None).read_bytes())
    ctx, stream = engine.create_execution_context(), cuda.stream_create()
    pixels = cuda.malloc(3 * 8 * 8 * 4)
    cuda.write(pixels, np.ones((1, 3, 8, 8), np.float32).tobytes())
    assert ctx.set_tensor_address('images', pixels)
    assert ctx.set_tensor_address('indices', cuda.malloc(1))
    assert ctx.execute_async_v3(stream)
    with pytest.raises(DeviceMemoryOverrun, match='6144 bytes written into a buffer of 1'):
        cuda.stream_synchronize(stream)


NUMPY_TYPES = ['FLOAT', 'FLOAT16', 'INT8', 'UINT8', 'INT32', 'INT64', 'BOOL']


@pytest.mark.parametrize('onnx_type', NUMPY_TYPES)
def test_every_io_type_trt_nptype_maps_runs(tmp_path, onnx_type):
    """Every DataType trt.nptype maps runs through the backend, in and out, with ONNX
    Runtime's numbers."""
    import onnxruntime as ort
    from onnx import TensorProto, helper
    elem = getattr(TensorProto, onnx_type)
    model = io_model(tmp_path / 'io.onnx', elem, elem)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem))
    values = np.random.default_rng(4).uniform(-100, 100, (1, 3, 4, 4))
    batch = (values > 0 if dtype.kind == 'b' else values).astype(dtype)
    trt, cuda = doubles()
    with TensorRTBackend(engine_file(tmp_path, model, profile=None), trt=trt, cuda=cuda) as b:
        assert b.input.dtype == dtype and b.outputs[0].dtype == dtype
        # infer's outputs are the backend's pinned host buffers, freed when it closes: copy
        # (read after the `with`, the memory was reused and the first values garbage)
        out = b.infer(batch)[0].copy()
    reference = ort.InferenceSession(str(model)).run(None, {'images': batch})[0]
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, reference)


NO_NUMPY_TYPE = [('BFLOAT16', 'input'), ('BFLOAT16', 'output'), ('FLOAT8E4M3FN', 'output'),
                 ('INT4', 'output')]


@pytest.mark.parametrize('onnx_type,where', NO_NUMPY_TYPE)
def test_engines_with_types_numpy_lacks_are_refused_and_auto_falls_back(tmp_path, model,
                                                                       onnx_type, where):
    """BF16, FP8 and INT4 tensors have no numpy type (trt.nptype raises TypeError): the
    backend refuses the engine in one line, and auto falls back to ONNX Runtime with it."""
    from onnx import TensorProto
    elem = getattr(TensorProto, onnx_type)
    types = (elem, TensorProto.FLOAT) if where == 'input' else (TensorProto.FLOAT, elem)
    engine = engine_file(tmp_path, io_model(tmp_path / 'x.onnx', *types), profile=None)
    name = {'BFLOAT16': 'BF16', 'FLOAT8E4M3FN': 'FP8', 'INT4': 'INT4'}[onnx_type]
    tensor = 'images' if where == 'input' else 'out'
    trt, cuda = doubles()
    with pytest.raises(EngineError, match=f"tensor '{tensor}' is {name}, which has no numpy "
                                          f"type.*use backend onnxruntime"):
        TensorRTBackend(engine, trt=trt, cuda=cuda)
    with open_backend(model, 'auto', engine, parts=RuntimeParts(trt, cuda), gpu=A_GPU) as b:
        assert b.info.name == 'onnxruntime' and f'is {name}, which has no numpy' in b.info.reason
    assert cuda.live == 0 and not cuda.streams


@pytest.mark.parametrize('kind', ['E8M0', 'FP4'])
def test_engines_with_types_onnxruntime_cannot_run_are_refused(tmp_path, kind):
    """E8M0 and FP4 (TensorRT 10.8+) have neither a numpy type nor an ONNX Runtime kernel:
    a plain fake engine (fake_tensorrt.py) carries them."""
    from yolo_trt_ros.testing.fake_tensorrt import (
        DataType,
        EnginePlan,
        FakeTensorRT,
        Tensor,
        TensorIOMode,
    )
    plan = EnginePlan([Tensor('images', TensorIOMode.INPUT, (1, 3, 8, 8), DataType.FLOAT),
                       Tensor('scales', TensorIOMode.OUTPUT, (1, 8), DataType[kind])],
                      [(1, 3, 8, 8)] * 3, lambda shape: {'scales': (1, 8)},
                      lambda addresses, shape, stream: None)
    trt, cuda = FakeTensorRT(lambda data: plan), HostMemoryCudaDouble()
    path = tmp_path / 'e.engine'
    path.write_bytes(b'fake engine')
    path.chmod(0o600)
    with pytest.raises(EngineError, match=f"tensor 'scales' is {kind}, which has no numpy type"):
        TensorRTBackend(path, trt=trt, cuda=cuda)
    assert cuda.live == 0 and not cuda.streams


def test_an_error_quotes_only_the_messages_of_its_own_call(tmp_path, model):
    """TensorRT's messages were kept for the backend's whole life: the list grew without
    bound and an execute error quoted an earlier call's warnings."""
    trt, cuda = doubles()
    batch = np.zeros((1, 3, 32, 32), np.float32)
    with TensorRTBackend(engine_file(tmp_path, model), trt=trt, cuda=cuda) as backend:
        trt.fail = 'address'
        with pytest.raises(BackendError, match="set_tensor_address failed for tensor 'images' "
                                               r"\(IExecutionContext::setTensorAddress"):
            backend.infer(batch)
        trt.fail = None
        backend.infer(batch)
        trt.fail = 'execute'
        for _ in range(3):
            with pytest.raises(BackendError) as failed:
                backend.infer(batch)
            assert str(failed.value) == ('TensorRT execute_async_v3 failed: IExecutionContext::'
                                         'enqueueV3: Error Code 1: Cuda Runtime (an illegal '
                                         'memory access was encountered)')


def test_close_waits_for_work_still_queued(tmp_path, model):
    """run(download=False) leaves the engine's work on the stream for a kernel to read the
    outputs; close() right after must synchronise before freeing what that work uses
    (execute_async_v3: releasing registered memory before synchronization is undefined)."""
    trt, cuda = doubles()
    backend = TensorRTBackend(engine_file(tmp_path, model), trt=trt, cuda=cuda)
    backend.run((2, 3, 32, 32), download=False)
    assert cuda.pending(backend.stream) == 1
    backend.close()
    assert cuda.live == 0 and not cuda.streams
    backend.close()  # a second close does nothing


def test_the_double_refuses_to_free_memory_that_queued_work_uses():
    cuda = HostMemoryCudaDouble()
    stream, src, dst = cuda.stream_create(), cuda.malloc(512), cuda.malloc(512)
    cuda.copy_to_device(dst, src, 512, stream)
    with pytest.raises(InFlightRelease, match='synchronise the stream first'):
        cuda.free(src)
    cuda.stream_synchronize(stream)
    cuda.free(src)
    cuda.free(dst)
