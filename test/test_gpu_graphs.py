"""The GPU path's per-frame work as a CUDA graph (core/gpu/graphs.py, issue 21 item 6): real
CUDA on a GPU machine (skipped elsewhere). The engine is the GPU stand-in
(yolo_trt_ros/testing/gpu_standin.py: a kernel in TensorRT's runtime API, which can be
captured as TensorRT's enqueue can after a first run), or the named runtime double, whose
engine runs on the host and so cannot be captured."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from yolo_trt_ros.core.image.buffers import view_image

pytestmark = pytest.mark.gpu


@pytest.fixture
def cuda():
    from yolo_trt_ros.core.gpu.cuda import CudaRuntime
    return CudaRuntime()


@pytest.fixture
def stream(cuda):
    s = cuda.stream_create()
    yield s
    cuda.stream_synchronize(s)
    cuda.stream_destroy(s)


def pinned_int32(cuda, ptr: int) -> np.ndarray:
    return np.frombuffer((ctypes.c_int32 * 1).from_address(ptr), np.int32)


def test_a_key_runs_once_in_order_then_is_captured_and_replayed(cuda, stream):
    from yolo_trt_ros.core.gpu.cuda import check
    from yolo_trt_ros.core.gpu.graphs import StreamGraphs

    device, host_ptr = cuda.malloc(4), cuda.malloc_host(4)
    host = pinned_int32(cuda, host_ptr)
    calls = []

    def work(value: int):
        def queue():
            calls.append(value)
            check(cuda.rt.cudaMemsetAsync(device, value, 4, stream), 'cudaMemsetAsync')
            cuda.copy_to_host(host_ptr, device, 4, stream)
            return f'value {value}'
        return queue

    graphs = StreamGraphs(stream, cuda)
    try:
        for i, value in enumerate([7, 7, 7, 7, 9, 7]):
            host[0] = -1
            assert graphs.run(value, work(value)) == f'value {value}'
            cuda.stream_synchronize(stream)
            assert host[0] == int.from_bytes(bytes([value]) * 4, 'little'), i
        # 7: run in order, captured, replayed twice (the work not called), replayed again
        # after 9 ran once in order (9 is seen once: never captured).
        assert calls == [7, 7, 9]
        assert (graphs.captures, graphs.launches, graphs.enabled) == (1, 4, True)
    finally:
        graphs.clear()
        cuda.free(device)
        cuda.free_host(host_ptr)


def test_work_that_cannot_be_captured_turns_graphs_off_once_and_is_served(cuda, stream,
                                                                          caplog):
    """A synchronisation inside the captured work (as an engine that cannot be captured
    does) ends the capture; the frame runs in order all the same, logged once."""
    from yolo_trt_ros.core.gpu.cuda import check
    from yolo_trt_ros.core.gpu.graphs import StreamGraphs

    device, host_ptr = cuda.malloc(4), cuda.malloc_host(4)
    host = pinned_int32(cuda, host_ptr)

    def work():
        check(cuda.rt.cudaMemsetAsync(device, 3, 4, stream), 'cudaMemsetAsync')
        cuda.copy_to_host(host_ptr, device, 4, stream)
        cuda.stream_synchronize(stream)  # illegal while capturing
        return int(host[0])

    graphs = StreamGraphs(stream, cuda)
    try:
        with caplog.at_level('WARNING', logger='yolo_trt_ros'):
            results = [graphs.run('k', work) for _ in range(4)]
        assert results == [0x03030303] * 4
        assert not graphs.enabled and graphs.captures == 0 and graphs.launches == 0
        said = [r.getMessage() for r in caplog.records if 'CUDA graphs off' in r.getMessage()]
        assert len(said) == 1 and 'cudaStreamSynchronize' in said[0], caplog.text
        # The failed capture leaves no error behind for the next CUDA user to trip on.
        assert int(cuda.rt.cudaGetLastError()[0]) == 0 and not cuda.capturing(stream)
    finally:
        cuda.free(device)
        cuda.free_host(host_ptr)


@pytest.mark.parametrize('error', [KeyboardInterrupt, ValueError])
def test_an_error_of_the_work_ends_the_capture_and_propagates(cuda, stream, error):
    """Ctrl-C or a bug inside the captured work is not the capture's fault: the stream
    leaves capture mode (later work runs, a later close synchronises), the error reaches
    the caller, and graphs stay on."""
    from yolo_trt_ros.core.gpu.cuda import check
    from yolo_trt_ros.core.gpu.graphs import StreamGraphs

    device = cuda.malloc(4)
    calls = []

    def work():
        calls.append(1)
        check(cuda.rt.cudaMemsetAsync(device, 1, 4, stream), 'cudaMemsetAsync')
        if len(calls) == 2:  # the capture
            raise error('in the middle of the work')
        return len(calls)

    graphs = StreamGraphs(stream, cuda)
    try:
        assert graphs.run('k', work) == 1
        with pytest.raises(error):
            graphs.run('k', work)
        assert not cuda.capturing(stream) and graphs.enabled
        cuda.stream_synchronize(stream)
        assert graphs.run('k', work) == 3  # captured this time, then replayed
        assert graphs.run('k', work) == 3 and graphs.launches == 2
    finally:
        graphs.clear()
        cuda.free(device)


def test_graphs_that_are_not_replayed_turn_off_and_seen_keys_are_bounded(cuda, stream,
                                                                        caplog):
    """Keys that come back once and never again (a batch of 1, 1, 2, 2, ... cameras: the
    engine's shape changes every other frame) would be captured and thrown away: after
    LIMIT of them graphs turn off, logged once; keys seen once are not kept forever."""
    from yolo_trt_ros.core.gpu.cuda import check
    from yolo_trt_ros.core.gpu.graphs import StreamGraphs

    device = cuda.malloc(4)

    def work():
        check(cuda.rt.cudaMemsetAsync(device, 0, 4, stream), 'cudaMemsetAsync')

    graphs = StreamGraphs(stream, cuda, limit=4)
    try:
        for i in range(100):  # each key seen once: never captured, never kept forever
            graphs.run(('once', i), work)
        assert graphs.captures == 0 and len(graphs._seen) <= 16
        with caplog.at_level('WARNING', logger='yolo_trt_ros'):
            for i in range(20):
                graphs.run(('pair', i), work)
                graphs.run(('pair', i), work)
        assert not graphs.enabled and graphs.captures == 4
        said = [r.getMessage() for r in caplog.records if 'CUDA graphs off' in r.getMessage()]
        assert len(said) == 1 and 'change too often' in said[0], caplog.text
    finally:
        cuda.free(device)


def standin_detector(tmp_path, name: str, graphs: bool, max_batch: int = 4,
                     gpu_nms: bool = True, fixed: bool = False):
    from yolo_trt_ros.core.backends.tensorrt import TensorRTBackend
    from yolo_trt_ros.core.gpu.cuda import CudaRuntime
    from yolo_trt_ros.core.runtime.detector import Detector
    from yolo_trt_ros.testing import gpu_standin

    engine = gpu_standin.make_engine(tmp_path / f'{name}.engine', max_batch=max_batch,
                                     fixed=fixed)
    return Detector(TensorRTBackend(engine, trt=gpu_standin, cuda=CudaRuntime()),
                    cuda_graphs=graphs, gpu_nms=gpu_nms)


def frame(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def engine_input(det, batch: int = 1) -> np.ndarray:
    io = det.backend.device_io()
    shape = (batch, 3, *det.input_size)
    out = np.empty(shape, np.float32)
    det._gpu_pre.cuda.copy_to_host(out.ctypes.data, io.input_ptr(shape), out.nbytes, io.stream)
    det._gpu_pre.cuda.stream_synchronize(io.stream)
    return out


def same(a, b) -> None:
    assert a.class_ids.tolist() == b.class_ids.tolist()
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)


@pytest.mark.parametrize('staging, threads', [('direct', 1), ('pinned', 1), ('pinned', 3)])
def test_the_detector_replays_its_frames_exactly_as_it_runs_them(tmp_path, monkeypatch,
                                                                staging, threads):
    """Graphs on and off (and NMS on the GPU in the graph, on the host without) give the
    same detections frame by frame; each replay letterboxes
    the new frame (the engine input equals the CPU letterbox of that frame; with pinned
    staging the graph holds the frame's upload too, which must read the new frame), a new
    frame size or threshold is a new key, and a class filter changed between replays is
    read as it is at each replay."""
    from yolo_trt_ros.core.gpu import preprocess
    from yolo_trt_ros.core.pipeline.preprocess import Preprocessor

    monkeypatch.setattr(preprocess, 'STAGING', staging)
    monkeypatch.setattr(preprocess, 'COPY_THREADS', threads)

    cpu = Preprocessor(640, 640)
    frames = [frame(1080, 1920, i) for i in range(4)] + [frame(480, 640, 9)] * 3 + \
        [frame(1080, 1920, 5)] * 2
    posts = [{}] * 4 + [{}] * 3 + [{'conf_threshold': 0.5}] * 2
    with standin_detector(tmp_path, 'a', True) as fast, \
            standin_detector(tmp_path, 'b', False, gpu_nms=False) as plain:
        assert fast.graphs is not None and plain.graphs is None
        assert fast.staging == (staging if staging == 'direct' else f'pinned x{threads}')
        for i, (pixels, post) in enumerate(zip(frames, posts, strict=True)):
            for det in (fast, plain):
                det.set_post(**post)
            h, w, _ = pixels.shape
            view = view_image(pixels.tobytes(), h, w, 'bgr8', w * 3)
            a, b = fast.detect([view])[0], plain.detect([view])[0]
            same(a, b)
            assert len(a) > 0 or post, i
            cpu(view)
            np.testing.assert_allclose(engine_input(fast), cpu.buffer, atol=1.01 / 255)
        # 1080p: in order, captured (and launched), replayed x2; 480p: in order, captured,
        # replayed;
        # the new threshold: in order, captured.
        assert (fast.graphs.captures, fast.graphs.launches) == (3, 6)
        view = view_image(frames[0].tobytes(), 1080, 1920, 'bgr8', 1920 * 3)
        plain.set_post(conf_threshold=0.25)
        present = sorted(set(plain.detect([view])[0].class_ids.tolist()))
        assert len(present) >= 2, present
        one, two = (present[0],), (present[1],)  # same count: the same graph key
        for classes in [one, one, two, two, one, two, None]:
            for det in (fast, plain):
                det.set_post(classes=classes, conf_threshold=0.25)
            a, b = fast.detect([view])[0], plain.detect([view])[0]
            same(a, b)
            assert len(a) > 0 and (classes is None or set(a.class_ids.tolist()) == set(classes))
        # NMS's settings are baked into the graph: each is part of the key
        settings = [{'iou_threshold': 0.3}] * 2 + [{'max_detections': 3}] * 2 + \
            [{'agnostic': True}] * 2 + [{'iou_threshold': 0.9, 'agnostic': True}] * 2 + [{}] * 2
        for changes in settings:
            post = {'classes': None, 'conf_threshold': 0.25, 'iou_threshold': 0.7,
                    'max_detections': 300, 'agnostic': False, **changes}
            for det in (fast, plain):
                det.set_post(**post)
            a, b = fast.detect([view])[0], plain.detect([view])[0]
            same(a, b)
            assert len(a) == 3 if post['max_detections'] == 3 else len(a) > 3
        assert fast.graphs.enabled
        assert (fast.nms_device, plain.nms_device) == ('gpu', 'cpu')


def test_batches_and_device_frames_replay_too(tmp_path):
    """Two cameras in one batch (each slot letterboxed from its own new frame at every
    replay), batches of changing size, and JPEG frames decoded onto the GPU (where
    nvImageCodec is installed): the same detections and engine inputs as without graphs."""
    import cv2

    from yolo_trt_ros.core.gpu.jpeg import open_gpu_jpeg
    from yolo_trt_ros.core.pipeline.preprocess import Preprocessor

    cpu = Preprocessor(640, 640, batch=2)
    with standin_detector(tmp_path, 'a', True) as fast, \
            standin_detector(tmp_path, 'b', False) as plain:
        for seed in range(4):
            views = [view_image(frame(720, 1280, seed + k).tobytes(), 720, 1280, 'bgr8',
                                1280 * 3) for k in range(2)]
            for a, b in zip(fast.detect(views), plain.detect(views), strict=True):
                same(a, b)
            for slot, view in enumerate(views):
                cpu(view, slot)
            np.testing.assert_allclose(engine_input(fast, 2), cpu.buffer, atol=1.01 / 255)
        assert fast.graphs.launches == 3
        for n in [1, 2, 1, 2, 2, 1]:  # the engine's shape changes: in order, never stale
            views = [view_image(frame(480, 640, 20 + n + k).tobytes(), 480, 640, 'bgr8',
                                640 * 3) for k in range(n)]
            for a, b in zip(fast.detect(views), plain.detect(views), strict=True):
                same(a, b)
        on_gpu = open_gpu_jpeg(1)[0] is not None
        for seed in range(4):  # a different JPEG each frame
            jpeg = cv2.imencode('.jpg', frame(720, 1280, 30 + seed))[1].tobytes()
            a = fast.detect(fast.decode_compressed([(jpeg, 'jpeg')]))[0]
            b = plain.detect(plain.decode_compressed([(jpeg, 'jpeg')]))[0]
            same(a, b)
            np.testing.assert_array_equal(engine_input(fast), engine_input(plain))
        assert fast.jpeg_device == ('gpu' if on_gpu else 'cpu')


def test_device_frames_wherever_they_lie_replay_one_graph(tmp_path):
    """Issue 21, seen on the H100 host: nvImageCodec puts each batch's decoded frames where
    its allocator finds room, and with the frames' device pointers in the graph's key a JPEG
    camera made a new graph nearly every batch (16 captures, 16 launches, graphs off). Their
    kernels are queued before the graph now: frames at a new place each batch replay one
    graph, each letterboxed from where it lies (the same engine input and detections as
    without graphs)."""
    from yolo_trt_ros.core.gpu.cuda import CudaRuntime
    from yolo_trt_ros.core.gpu.jpeg import DeviceImage

    cuda = CudaRuntime()
    h, w, places = 720, 1280, 6
    pixels = [frame(h, w, 40 + k) for k in range(places)]
    block = cuda.malloc(h * w * 3 * places)
    try:
        for k, p in enumerate(pixels):  # frame k at place k: a new pointer every batch
            cuda.copy_to_device(block + k * p.nbytes, p.ctypes.data, p.nbytes, 0)
        cuda.stream_synchronize(0)
        with standin_detector(tmp_path, 'a', True) as fast, \
                standin_detector(tmp_path, 'b', False) as plain:
            for k in range(places):
                device = DeviceImage(block + k * pixels[k].nbytes, w * 3, w, h, 3, 'bgr')
                host = view_image(pixels[k].tobytes(), h, w, 'bgr8', w * 3)
                # a batch of a device frame and a host frame: only the first moves
                a = fast.detect([device, host])
                b = plain.detect([device, host])
                for x, y in zip(a, b, strict=True):
                    same(x, y)
                np.testing.assert_array_equal(engine_input(fast, 2), engine_input(plain, 2))
            # in order, captured, then replayed at every new place
            assert (fast.graphs.captures, fast.graphs.launches) == (1, places - 1)
            assert fast.graphs.enabled
    finally:
        cuda.free(block)


def test_an_engine_of_fixed_batch_keeps_a_graph_per_frame_count(tmp_path):
    """Found in review: with device frames out of the key, an engine of fixed batch (one
    shape for any count) gave one key to a batch of one frame and a batch of two, so the
    graph of one count would be replayed for the other (its decode and downloads sized for
    the other count). The count is in the key: two graphs, each replayed for its own."""
    from yolo_trt_ros.core.gpu.cuda import CudaRuntime
    from yolo_trt_ros.core.gpu.jpeg import DeviceImage

    cuda = CudaRuntime()
    h, w = 480, 640
    pixels = frame(h, w, 50)
    block = cuda.malloc(pixels.nbytes)
    try:
        cuda.copy_to_device(block, pixels.ctypes.data, pixels.nbytes, 0)
        cuda.stream_synchronize(0)
        device = DeviceImage(block, w * 3, w, h, 3, 'bgr')
        with standin_detector(tmp_path, 'a', True, max_batch=2, fixed=True) as fast, \
                standin_detector(tmp_path, 'b', False, max_batch=2, fixed=True) as plain:
            for n in [1, 2, 1, 2, 1, 2]:
                a, b = fast.detect([device] * n), plain.detect([device] * n)
                assert len(a) == len(b) == n
                for x, y in zip(a, b, strict=True):
                    same(x, y)
            # each count: in order, captured and launched, replayed (one key for both
            # counts, as before the fix, gives 1 capture and 5 launches)
            assert (fast.graphs.captures, fast.graphs.launches) == (2, 4)
    finally:
        cuda.free(block)


def test_suspend_drops_the_graphs_and_resume_captures_anew(tmp_path):
    """The lifecycle's inactive state frees the buffers the graphs point at: they go with
    them, and the active state captures again."""
    view = view_image(frame(480, 640, 1).tobytes(), 480, 640, 'bgr8', 640 * 3)
    with standin_detector(tmp_path, 'a', True) as det:
        first = [det.detect([view])[0] for _ in range(3)]
        assert det.graphs.launches == 2
        det.suspend()
        assert det.graphs is None
        det.resume()
        again = [det.detect([view])[0] for _ in range(3)]
        assert det.graphs.captures == 1 and det.graphs.launches == 2
    for a, b in zip(first, again, strict=True):
        same(a, b)


def test_an_engine_that_cannot_be_captured_is_served_in_order(tmp_path, default_model,
                                                              bus_jpg, caplog):
    """The named runtime double runs its engine on the host: like a TensorRT engine whose
    enqueue cannot be captured, the frame is served in order, the reason logged once."""
    from support.trt_double import CudaDeviceAccess, TensorRTRuntimeDouble, plan_for

    from yolo_trt_ros.core.backends.tensorrt import TensorRTBackend
    from yolo_trt_ros.core.gpu.cuda import CudaRuntime
    from yolo_trt_ros.core.image.decode import read_image
    from yolo_trt_ros.core.runtime.detector import Detector, DetectorConfig

    engine = tmp_path / 'default.engine'
    engine.write_bytes(plan_for(default_model, None))
    engine.chmod(0o600)
    backend = TensorRTBackend(engine, trt=TensorRTRuntimeDouble(memory=CudaDeviceAccess()),
                              cuda=CudaRuntime())
    image = read_image(str(bus_jpg))
    with caplog.at_level('WARNING', logger='yolo_trt_ros'), \
            Detector(backend, None, 'yolov8') as gpu, \
            Detector.open(DetectorConfig(default_model, backend='onnxruntime')) as cpu:
        found = [gpu.detect([image])[0] for _ in range(4)]
        assert not gpu.graphs.enabled and gpu.graphs.launches == 0
        reference = cpu.detect([image])[0]
    said = [r.getMessage() for r in caplog.records if 'CUDA graphs off' in r.getMessage()]
    assert len(said) == 1 and 'cannot be captured' in said[0], caplog.text
    for det in found:
        assert det.class_ids.tolist() == reference.class_ids.tolist()
        np.testing.assert_allclose(det.boxes, reference.boxes, atol=3.0)
