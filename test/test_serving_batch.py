"""The detector node's batch step and worker without a ROS graph (core/serving): serialized
frames in, as rclpy hands them to a raw subscription; serialized Detection2DArrays (or the
reason a frame was refused) out, read back with rclpy's own deserializer."""
from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from support.images import claiming, corrupt_jpegs, scan_bomb
from support.truth import assert_bus_and_people
from vision_msgs.msg import Detection2DArray

from yolo_trt_ros.core.runtime.detector import Detector, DetectorConfig
from yolo_trt_ros.core.serving.batch import BatchResult, BatchStep
from yolo_trt_ros.core.serving.decoding import CameraDecoders
from yolo_trt_ros.core.serving.frames import LatestFrames
from yolo_trt_ros.core.serving.worker import Worker
from yolo_trt_ros.ros.image_source_node import to_message


@pytest.fixture(scope='module')
def detector(default_model):
    with Detector.open(DetectorConfig(default_model, backend='onnxruntime')) as det:
        yield det


def serialized(msg, sec: int, frame_id: str) -> bytes:
    msg.header.stamp.sec, msg.header.frame_id = sec, frame_id
    return serialize_message(msg)


def frames_of(*payloads: bytes) -> list:
    slots = LatestFrames(len(payloads))
    for camera, payload in enumerate(payloads):
        slots.put(camera, payload)
    return slots.take(timeout=0)


def test_raw_frames_of_two_cameras_become_their_detections(detector, bus_jpg):
    bgr = cv2.imread(str(bus_jpg))
    step = BatchStep(detector, compressed=False, max_pixels=10**8, label=detector.label)
    result = step(frames_of(serialized(to_message(bgr, 'bgr8'), 1, 'left'),
                            serialized(to_message(bgr, 'rgb8'), 2, 'right')))
    assert result.refused == []
    assert [s.frame.camera for s in result.served] == [0, 1]
    for served, (sec, frame_id) in zip(result.served, [(1, 'left'), (2, 'right')], strict=True):
        arr = deserialize_message(served.message, Detection2DArray)
        assert (arr.header.stamp.sec, arr.header.frame_id) == (sec, frame_id)
        assert_bus_and_people(arr)
    drawn = step.annotated(result.served[0])
    assert drawn.shape == bgr.shape and not np.array_equal(drawn, bgr)


def test_a_bad_frame_is_refused_alone(detector, bus_jpg):
    good = serialized(to_message(cv2.imread(str(bus_jpg)), 'bgr8'), 3, 'good')
    odd = Image(height=2, width=2, encoding='bayer_rggb8', step=2, data=bytes(4))
    step = BatchStep(detector, compressed=False, max_pixels=10**8, label=str)
    result = step(frames_of(serialized(odd, 1, 'odd'), good, b'\x00\x01\x00'))
    assert [(r.camera, r.cause) for r in result.refused] == [(0, 'encoding'), (2, 'cdr')]
    assert [s.frame.camera for s in result.served] == [1]
    arr = deserialize_message(result.served[0].message, Detection2DArray)
    # label=str: class ids as text (class_id_as_index), person 0 and bus 5
    assert {d.results[0].hypothesis.class_id for d in arr.detections} >= {'0', '5'}


def test_jpegs_judged_in_the_callback_are_not_judged_again(detector, bus_jpg, monkeypatch):
    """Issue 21: where the GPU decodes JPEG, the callback judges a frame's headers and hands
    it on still encoded (CameraDecoders.pass_on); the batch tells the decoder which frames
    those are, so the GPU decoder does not judge them a second time. A frame as
    `yolo-trt bag` hands it over (serialized) is judged by the decoder."""
    payload = serialized(CompressedImage(format='jpeg', data=bus_jpg.read_bytes()), 1, 'cam')
    decoders = CameraDecoders(LatestFrames(2), LatestFrames(2), 10**8, lazy=True)
    slots = LatestFrames(3)
    slots.put(0, payload)
    slots.put(1, decoders.pass_on(payload))
    slots.put(2, decoders.pass_on(payload))
    judged_calls = []
    decode = detector.decode_compressed  # the real one, recorded on the way through

    def recorded(payloads, max_pixels, judged=()):
        judged_calls.append(sorted(judged))
        return decode(payloads, max_pixels, judged)

    monkeypatch.setattr(detector, 'decode_compressed', recorded)
    result = BatchStep(detector, compressed=True, max_pixels=10**8,
                       label=detector.label)(slots.take(timeout=0))
    assert judged_calls == [[1, 2]]
    assert result.refused == [] and [s.frame.camera for s in result.served] == [0, 1, 2]


def test_compressed_frames_decode_as_one_batch_and_bad_ones_are_refused(detector, bus_jpg):
    jpeg = bus_jpg.read_bytes()
    step = BatchStep(detector, compressed=True, max_pixels=2_000_000, label=detector.label)
    payloads = [serialized(CompressedImage(format='jpeg', data=data), i, f'cam{i}')
                for i, data in enumerate([jpeg, corrupt_jpegs(jpeg, 1)[0],
                                          claiming(jpeg, 30000, 30000), jpeg,
                                          scan_bomb(1000, 5000)])]
    result = step(frames_of(*payloads))
    # `yolo-trt bag` hands the step its frames as recorded: a bomb among them is judged
    # from its headers by the step's decode.
    assert sorted((r.camera, r.cause) for r in result.refused) == [
        (1, 'corrupt'), (2, 'too_large'), (4, 'too_costly')]
    assert [s.frame.camera for s in result.served] == [0, 3]
    for served in result.served:
        assert_bus_and_people(deserialize_message(served.message, Detection2DArray))


def test_a_raw_frame_above_the_limit_is_refused_from_its_header(detector):
    big = Image(height=3000, width=4000, encoding='mono8', step=4000, data=bytes(12_000_000))
    step = BatchStep(detector, compressed=False, max_pixels=1_000_000, label=str)
    result = step(frames_of(serialized(big, 1, 'big')))
    assert [(r.cause, 'more than max_image_pixels 1000000' in r.reason)
            for r in result.refused] == [('too_large', True)]


def test_the_worker_serves_every_camera_and_survives_a_bug(detector, bus_jpg):
    """A payload the step cannot even read (not bytes: a bug upstream, not bad input) is
    refused as internal for its batch; the next batch is served as usual, and timed."""
    slots = LatestFrames(2)
    delivered: list[BatchResult] = []
    done = threading.Condition()

    def deliver(result: BatchResult) -> None:
        with done:
            delivered.append(result)
            done.notify()

    good = serialized(to_message(cv2.imread(str(bus_jpg)), 'bgr8'), 1, 'cam')
    steps: list[float] = []  # what the worker timed: the batches served
    worker = Worker(slots, BatchStep(detector, False, 10**8, detector.label), deliver,
                    steps.append)
    worker.start()
    try:
        slots.put(0, object())
        with done:
            assert done.wait_for(lambda: delivered, timeout=30)
        slots.put(1, good)
        with done:
            assert done.wait_for(lambda: len(delivered) == 2, timeout=30)
    finally:
        worker.stop()
    (refused,) = delivered[0].refused
    assert refused.camera == 0 and refused.cause == 'internal'
    assert 'please report this' in refused.reason
    assert [s.frame.camera for s in delivered[1].served] == [1]
    assert len(steps) == 1 and 0 < steps[0] < 30, steps


def test_the_annotated_image_is_bounded(detector):
    """Issue 17, failure 8: a 64 MP frame with a detections_image subscriber made a 192 MB
    annotated image. It is scaled to at most ANNOTATED_MAX_PIXELS, the boxes with it."""
    from yolo_trt_ros.core.image.buffers import ImageView
    from yolo_trt_ros.core.pipeline.annotate import ANNOTATED_MAX_PIXELS, annotated
    from yolo_trt_ros.core.pipeline.results import Detections

    big = ImageView(np.full((6000, 8000, 3), 255, np.uint8), 'bgr')
    det = Detections(np.array([[4000, 3000, 8000, 6000]], np.float32),
                     np.array([0.9], np.float32), np.array([0], np.int32))
    drawn = annotated(big, det, detector.label)
    h, w = drawn.shape[:2]
    assert h * w <= ANNOTATED_MAX_PIXELS and abs(w / h - 8000 / 6000) < 0.01
    assert (drawn[h // 2:, w // 2:] != 255).any() and (drawn[:h // 3, :w // 3] == 255).all()


# -- tracking and depth per camera (core/serving/cameras.py) ---------------------------------
def depth_message(mm: np.ndarray, sec: int, encoding: str = '16UC1') -> bytes:
    msg = Image(height=mm.shape[0], width=mm.shape[1], encoding=encoding,
                step=mm.shape[1] * mm.itemsize, data=mm.tobytes())
    msg.header.stamp.sec = sec
    return serialize_message(msg)


K = [700.0, 0.0, 405.0, 0.0, 700.0, 540.0, 0.0, 0.0, 1.0]  # for bus.jpg, 810x1080


def tracked_step(detector, cameras: int, depth_topics: str = '') -> tuple[BatchStep, list]:
    from yolo_trt_ros.core.pipeline.tracking import TrackerConfig
    from yolo_trt_ros.core.serving.cameras import CameraState, Tracking
    from yolo_trt_ros.core.serving.config import DETECTOR_PARAMETERS, depth_config

    tracking = Tracking(TrackerConfig())
    states = [CameraState(tracking) for _ in range(cameras)]
    p = {name: spec.default for name, spec in DETECTOR_PARAMETERS.items()}
    p['depth_topics'] = depth_topics
    step = BatchStep(detector, False, 10**8, detector.label, states, depth_config(p, cameras))
    return step, states


def test_cameras_in_one_batch_have_their_own_tracks(detector, bus_jpg):
    """The same scene on two cameras in one batch: each camera numbers its own tracks from
    1, and a camera's stamps going backwards (a bag looping) resets only its tracks."""
    bgr = cv2.imread(str(bus_jpg))
    step, states = tracked_step(detector, 2)
    ids = []
    for sec in (1, 2, 3):
        result = step(frames_of(serialized(to_message(bgr, 'bgr8'), sec, 'a'),
                                serialized(to_message(bgr, 'bgr8'), sec, 'b')))
        ids.append([[d.id for d in deserialize_message(s.message, Detection2DArray).detections]
                    for s in result.served])
    assert ids[0][0] == ids[0][1] and len(ids[0][0]) >= 4
    assert sorted(ids[0][0], key=int) == [str(i) for i in range(1, len(ids[0][0]) + 1)]
    assert ids[2] == ids[0]  # the same objects keep their ids
    result = step(frames_of(serialized(to_message(bgr, 'bgr8'), 1, 'a'),  # a loops back
                            serialized(to_message(bgr, 'bgr8'), 4, 'b')))
    a, b = ([d.id for d in deserialize_message(s.message, Detection2DArray).detections]
            for s in result.served)
    assert (states[0].resets, states[1].resets) == (1, 0)
    assert b == ids[0][1]
    assert min(map(int, a)) > max(map(int, ids[0][0]))  # new tracks, ids never reused


def test_depth_gives_positions_with_the_same_ids(detector, bus_jpg):
    from vision_msgs.msg import Detection3DArray

    bgr = cv2.imread(str(bus_jpg))
    step, states = tracked_step(detector, 1, 'depth')
    states[0].set_camera_info(K, 810, 1080)
    states[0].put_depth(depth_message(np.full((1080, 810), 3000, np.uint16), 7))
    result = step(frames_of(serialized(to_message(bgr, 'bgr8'), 7, 'cam')))
    (served,) = result.served
    two = deserialize_message(served.message, Detection2DArray)
    three = deserialize_message(served.message_3d, Detection3DArray)
    assert served.depth_problem is None and served.left_out == 0
    assert three.header == two.header
    assert [d.id for d in three.detections] == [d.id for d in two.detections]
    assert [d.results[0].hypothesis for d in three.detections] == \
        [d.results[0].hypothesis for d in two.detections]
    for d2, d3 in zip(two.detections, three.detections, strict=True):
        assert d3.bbox.center.position.z == pytest.approx(3.0)
        assert d3.bbox.center.position.x == pytest.approx(
            (d2.bbox.center.position.x - 405) * 3 / 700)
        assert d3.bbox.size.y == pytest.approx(d2.bbox.size_y * 3 / 700, rel=0.02)


@pytest.mark.parametrize('case,cause', [
    ('size', 'depth_size'), ('encoding', 'depth_encoding'), ('focal', 'camera_info'),
    ('no_info', 'no_camera_info'), ('late', 'unpaired'), ('holes', None)])
def test_bad_depth_costs_the_frame_its_3d_only(detector, bus_jpg, case, cause):
    bgr = cv2.imread(str(bus_jpg))
    step, states = tracked_step(detector, 1, 'depth')
    mm = np.full((1080, 810), 2000, np.uint16)
    depth = {'size': depth_message(mm[:540, :405], 7),
             'holes': depth_message(np.zeros_like(mm), 7),
             'late': depth_message(mm, 6)}.get(case, depth_message(mm, 7))
    if case == 'encoding':  # an rgb8 image where depth was expected
        depth = depth_message(np.zeros((1080, 2430), np.uint8), 7, 'rgb8')
    if case != 'no_info':
        states[0].set_camera_info([0.0, *K[1:]] if case == 'focal' else K, 810, 1080)
    states[0].put_depth(depth)
    (served,) = step(frames_of(serialized(to_message(bgr, 'bgr8'), 7, 'cam'))).served
    assert_bus_and_people(deserialize_message(served.message, Detection2DArray))  # 2D flows
    if cause is None:  # every detection without valid depth: left out, counted
        assert served.depth_problem is None and served.left_out >= 4
        return
    assert served.message_3d is None and served.depth_problem.cause == cause
    assert served.depth_problem.bad == (cause != 'unpaired')
    assert '\n' not in served.depth_problem.reason


def test_a_pause_in_the_stamps_resets_the_tracks(detector, bus_jpg):
    bgr = cv2.imread(str(bus_jpg))
    step, states = tracked_step(detector, 1)
    states[0].tracking.reset_gap_s = 0.5
    for sec in (1, 1, 3):  # 2 s without a frame: longer than the 0.5 s allowed
        (served,) = step(frames_of(serialized(to_message(bgr, 'bgr8'), sec, 'a'))).served
    assert states[0].resets == 1
    assert min(int(d.id) for d in deserialize_message(served.message,
                                                      Detection2DArray).detections) > 1


def test_botsort_gets_a_grey_frame_from_a_gpu_decoded_jpeg(detector, bus_jpg):
    """On the GPU path a CompressedImage never reaches the host decoded: camera-motion
    compensation decodes it again at a quarter size, in grey, on the CPU."""
    from yolo_trt_ros.core.gpu.jpeg import DeviceImage

    payload = serialized(CompressedImage(format='jpeg', data=bus_jpg.read_bytes()), 1, 'cam')
    (frame,) = frames_of(payload)
    step = BatchStep(detector, True, 10**8, detector.label)
    grey, scale = step._grey(frame, DeviceImage(ptr=0, pitch=810 * 3, width=810, height=1080,
                                                channels=3))
    assert grey.dtype == np.uint8 and grey.ndim == 2
    assert max(grey.shape) <= 480 and abs(grey.shape[1] * scale - 810) < 2 * scale


def test_a_segment_models_masks_give_the_label_image_and_the_depth_under_them(tmp_path):
    """The step publishes the masks' label image, and 3D takes the depth under each mask
    (objects nearer than the wall behind them, on a sloping floor), not the box's centre."""
    from vision_msgs.msg import Detection3DArray

    from yolo_trt_ros.core.models.synthetic import constant_output_model, task_output
    from yolo_trt_ros.core.pipeline.decode import postprocess
    from yolo_trt_ros.core.pipeline.depth import CameraModel, DepthImage, positions
    from yolo_trt_ros.core.pipeline.preprocess import Letterbox
    from yolo_trt_ros.core.serving.cameras import CameraState, Tracking
    from yolo_trt_ros.core.serving.config import DETECTOR_PARAMETERS, depth_config

    output, protos = task_output('segment', classes=3, anchors=2100, size=320, objects=5,
                                 seed=8)
    model = constant_output_model(tmp_path / 'seg.onnx', output, (320, 320), ['a', 'b', 'c'],
                                  more=(protos,), metadata={'task': 'segment'})
    k = [500.0, 0, 320, 0, 500.0, 240, 0, 0, 1]
    with Detector.open(DetectorConfig(model, backend='onnxruntime')) as seg:
        want = postprocess(output, 'yolov8', Letterbox.fit(640, 480, 320, 320),
                           seg.post, seg.head, protos)
        label = want.masks.label_image()
        mm = (np.where(label > 0, 1000, 3000) + 4 * np.arange(640)[None]).astype(np.uint16)
        p = {name: spec.default for name, spec in DETECTOR_PARAMETERS.items()}
        p['depth_topics'] = 'depth'
        states = [CameraState(Tracking(None))]
        step = BatchStep(seg, False, 10**8, seg.label, states, depth_config(p, 1))
        states[0].set_camera_info(k, 640, 480)
        states[0].put_depth(depth_message(mm, 4))
        grey = to_message(np.full((480, 640, 3), 90, np.uint8), 'bgr8')
        (served,) = step(frames_of(serialized(grey, 4, 'cam'))).served
    image = deserialize_message(served.masks, Image)
    np.testing.assert_array_equal(np.frombuffer(bytes(image.data), np.uint8).reshape(480, 640),
                                  label)
    three = deserialize_message(served.message_3d, Detection3DArray)
    depth, camera = DepthImage(mm, 0.001), CameraModel.from_matrix(k)
    under_masks = positions(depth, camera, want.boxes, want.masks)
    at_centres = positions(depth, camera, want.boxes)
    z = [d.bbox.center.position.z for d in three.detections]
    assert len(z) >= 3
    np.testing.assert_allclose(z, under_masks.centre[under_masks.valid, 2])
    assert not np.allclose(z, at_centres.centre[under_masks.valid, 2])


def test_the_warm_up_is_for_1080p_frames_unless_another_size_is_asked_for(monkeypatch):
    """The node warms up for 1080p (buffers that large serve every smaller camera), with a
    batch of every camera and a batch of one (tests/test_first_frames.py: on the GPU)."""
    from yolo_trt_ros.core.serving.batch import WARM_UP_ENV, warm_up_size

    monkeypatch.delenv(WARM_UP_ENV, raising=False)
    assert warm_up_size() == (1080, 1920)
    monkeypatch.setenv(WARM_UP_ENV, '640x480')
    assert warm_up_size() == (480, 640)
    for bad in ('640', 'x480', '0x480', '640x99999', 'wide'):
        monkeypatch.setenv(WARM_UP_ENV, bad)
        with pytest.raises(ValueError, match=WARM_UP_ENV):
            warm_up_size()


@pytest.mark.parametrize('compressed', [False, True])
def test_the_warm_up_stays_within_max_image_pixels(detector, monkeypatch, compressed):
    """A node whose max_image_pixels is below 1080p warms up for the largest frame it would
    take (a 1080p warm-up frame would be refused, and warm nothing)."""
    from yolo_trt_ros.core.serving.batch import WARM_UP_ENV

    monkeypatch.delenv(WARM_UP_ENV, raising=False)
    ran: list[list[tuple[int, int]]] = []  # each detect call's frame sizes (w, h)
    detect = detector.detect
    monkeypatch.setattr(detector, 'detect', lambda images: ran.append(
        [(i.width, i.height) for i in images]) or detect(images))
    step = BatchStep(detector, compressed, max_pixels=500_000, label=str)
    h, w = step.warm_up(3)
    assert h * w <= 500_000 and h * w > 450_000 and abs(w / h - 16 / 9) < 0.01
    # the default model takes one frame a batch (larger batches would only be cut into
    # lone frames): the warm-up runs a lone frame, of that size
    assert detector.max_batch == 1 and ran == [[(w, h)]]
    ran.clear()
    assert BatchStep(detector, compressed, 10**8, str).warm_up(1) == (1080, 1920)
    assert ran == [[(1920, 1080)]]


def test_the_warm_up_on_the_cpu_runs_a_batch_of_every_camera_then_a_lone_frame(tmp_path):
    """A model of dynamic batch on ONNX Runtime: the largest batch the cameras make and a
    lone frame (each batch size's own buffers are the GPU path's: there every size runs)."""
    from yolo_trt_ros.core.models.synthetic import constant_output_model

    model = constant_output_model(tmp_path / 'dyn.onnx', np.zeros((84, 16), np.float32),
                                  batch='N')
    with Detector.open(DetectorConfig(model, backend='onnxruntime')) as det:
        ran: list[int] = []
        detect = det.detect
        det.detect = lambda images: ran.append(len(images)) or detect(images)
        BatchStep(det, False, 10**8, str).warm_up(3, (120, 160))
    assert det.max_batch is None and ran == [3, 1]


def test_an_annotated_image_that_cannot_be_drawn_is_a_reason_not_a_fault(detector, bus_jpg):
    """On the GPU path the annotated image decodes the JPEG again on the CPU, whose decoder
    refuses more than nvJPEG does (a scan cut short). The refusal was raised in the node's
    delivery, inside the worker's boundary: every frame of the batch was refused as
    'internal', those after it never published, for as long as someone watched. The step
    now gives the reason as a value; the frame's detections stand."""
    from support.images import corrupt_jpegs

    from yolo_trt_ros.core.errors import ImageError
    from yolo_trt_ros.core.gpu.jpeg import DeviceImage
    from yolo_trt_ros.core.pipeline.results import Detections
    from yolo_trt_ros.core.serving.batch import Served

    step = BatchStep(detector, True, 10**8, detector.label)
    on_device = DeviceImage(ptr=0, pitch=810 * 3, width=810, height=1080, channels=3)
    drawn = []
    for data in (corrupt_jpegs(bus_jpg.read_bytes(), 1)[0], bus_jpg.read_bytes()):
        (frame,) = frames_of(serialized(CompressedImage(format='jpeg', data=data), 1, 'cam'))
        served = Served(frame, None, on_device, Detections.empty(), b'')
        drawn.append(step.annotated(served))
    assert isinstance(drawn[0], ImageError) and drawn[0].cause == 'corrupt', drawn[0]
    assert isinstance(drawn[1], np.ndarray) and drawn[1].shape == (1080, 810, 3)
