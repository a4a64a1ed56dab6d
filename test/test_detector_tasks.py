"""obb, segment and pose models through the detector node (a process fed and read by real
rclpy nodes), on constant-output models planted with each head's layout: the oriented
boxes' theta, the `masks` label image and the `keypoints` array, each equal to the CPU
decoder's result for the same output and aligned with `detections`; a frame whose masks
come out NaN refused in one line and counted, the other camera served."""
from __future__ import annotations

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image
from support.models import nan_protos_on_black
from support.ros import diagnostics_value, running
from vision_msgs.msg import Detection2DArray

from yolo_trt_ros.core.models.synthetic import constant_output_model, task_output
from yolo_trt_ros.core.pipeline.decode import postprocess
from yolo_trt_ros.core.pipeline.preprocess import Letterbox
from yolo_trt_ros.core.pipeline.results import PostprocessConfig
from yolo_trt_ros.core.pipeline.tasks import read_head
from yolo_trt_ros.ros.image_source_node import to_message

pytestmark = pytest.mark.ros
SIZE = 320  # model input; prototypes 80 x 80
NAMES = ['person', 'car', 'boat']
WIDTH, HEIGHT = 640, 480


def image(sec: int, value: int = 90, frame_id: str = 'cam',
          size: tuple[int, int] = (HEIGHT, WIDTH)) -> Image:
    pixels = np.full((*size, 3), value, np.uint8)
    msg = to_message(pixels, 'bgr8')
    msg.header.frame_id = frame_id
    msg.header.stamp.sec = sec
    return msg


def planted(tmp_path, task: str):
    classes = 1 if task == 'pose' else len(NAMES)
    outputs = task_output(task, classes=classes, anchors=2100, size=SIZE, objects=6, seed=2)
    names = NAMES[:classes]
    meta = {'task': task, **({'kpt_shape': '[17, 3]'} if task == 'pose' else {})}
    path = constant_output_model(tmp_path / f'{task}.onnx', outputs[0], (SIZE, SIZE), names,
                                 more=outputs[1:], metadata=meta)
    head = read_head([((1, *o.shape), np.dtype(np.float32)) for o in outputs], meta,
                     len(names), 'auto', (SIZE, SIZE), 'm')
    expected = postprocess(outputs[0], head.fmt, Letterbox.fit(WIDTH, HEIGHT, SIZE, SIZE),
                           PostprocessConfig(), head, outputs[1] if task == 'segment' else None)
    assert len(expected) >= 3
    return path, expected


def serve_one(model, sec: int, **topics) -> dict[str, list]:
    """One frame through the detector node with this model; what arrived on each topic
    (name: message type), waited for on all of them."""
    with running(model=str(model)) as (proc, client):
        got = {topic: client.collect(kind, topic) for topic, kind in topics.items()}
        client.publisher(Image, 'image').publish(image(sec))
        client.wait(lambda: all(got.values()), f"a message on {', '.join(topics)}")
    return got


def boxes_of(arr: Detection2DArray) -> np.ndarray:
    return np.array([(d.bbox.center.position.x, d.bbox.center.position.y,
                      d.bbox.size_x, d.bbox.size_y, d.bbox.center.theta)
                     for d in arr.detections])


def test_oriented_boxes_carry_theta(tmp_path):
    path, expected = planted(tmp_path, 'obb')
    results = serve_one(path, 1, detections=Detection2DArray)['detections']
    np.testing.assert_allclose(boxes_of(results[0]), expected.rboxes, rtol=1e-5, atol=1e-4)
    assert boxes_of(results[0])[:, 4].max() > 0.05  # rotated, not theta 0


def test_masks_topic_is_the_label_image_of_the_detections(tmp_path):
    path, expected = planted(tmp_path, 'segment')
    got = serve_one(path, 7, detections=Detection2DArray, masks=Image)
    results, masks = got['detections'], got['masks']
    msg = masks[0]
    assert (msg.header.stamp.sec, msg.header.frame_id) == (7, 'cam')
    assert (msg.encoding, msg.height, msg.width, msg.step) == ('mono8', HEIGHT, WIDTH, WIDTH)
    label = np.frombuffer(bytes(msg.data), np.uint8).reshape(HEIGHT, WIDTH)
    np.testing.assert_array_equal(label, expected.masks.label_image())
    assert len(results[0].detections) == len(expected)
    assert set(np.unique(label).tolist()) <= set(range(len(expected) + 1))
    assert len(np.unique(label)) >= 3  # background and at least two objects


def test_keypoints_topic_is_aligned_with_the_detections(tmp_path):
    path, expected = planted(tmp_path, 'pose')
    got = serve_one(path, 3, detections=Detection2DArray, keypoints=Detection2DArray)
    results, keypoints = got['detections'], got['keypoints']
    arr, points = keypoints[0], expected.keypoints
    assert arr.header == results[0].header and len(arr.detections) == len(expected)
    for det, kp, want in zip(results[0].detections, arr.detections, points, strict=True):
        assert kp.bbox == det.bbox and kp.id == det.id
        assert [r.hypothesis.class_id for r in kp.results][:3] == ['nose', 'left_eye',
                                                                  'right_eye']
        got = [(r.pose.pose.position.x, r.pose.pose.position.y, r.hypothesis.score)
               for r in kp.results]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)


def test_nan_masks_refuse_that_frame_and_the_other_camera_is_served(tmp_path):
    outputs = task_output('segment', classes=3, anchors=2100, size=SIZE, objects=6, seed=2)
    path = nan_protos_on_black(tmp_path / 'nan.onnx', *outputs, (SIZE, SIZE), NAMES)
    with running(model=str(path), image_topics='dark/image,lit/image') as (proc, client):
        diags = client.collect(DiagnosticArray, '/diagnostics')
        lit = client.collect(Image, 'lit/masks')
        dark = client.collect(Detection2DArray, 'dark/detections')
        # square frames: no letterbox padding, so the black one's input is all zeros
        client.publisher(Image, 'dark/image').publish(image(1, 0, 'dark', (SIZE, SIZE)))
        client.publisher(Image, 'lit/image').publish(image(1, 90, 'lit', (SIZE, SIZE)))
        client.wait(lambda: lit, 'the lit camera served')
        client.wait(lambda: diagnostics_value(diags, 'bad_input.bad_output', 0) == '1',
                    'the dark frame counted as bad output')
        proc.wait_for_output('NaN mask values')
    assert not dark
    log = proc.output()
    assert log.count('NaN mask values') == 1 and 'Traceback' not in log  # one line
