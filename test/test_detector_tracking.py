"""Tracks and 3D through the detector node, a process fed and read by real rclpy nodes:
the CLI's ids on the same frames, the tracker changed at run time, stamps looping back,
Detection3DArray from aligned depth, and bad depth as one line and a counter while the 2D
detections still flow."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterType, ParameterValue
from sensor_msgs.msg import CameraInfo, Image
from support.ros import diagnostics_value, running, set_parameter
from support.truth import assert_bus_and_people
from vision_msgs.msg import Detection2DArray, Detection3DArray

from yolo_trt_ros.ros.image_source_node import to_message

pytestmark = pytest.mark.ros


def image(bgr: np.ndarray, sec: int, nanosec: int = 0, frame_id: str = 'cam') -> Image:
    msg = to_message(bgr, 'bgr8')
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    return msg


def string(value: str) -> ParameterValue:
    return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)


def ids_and_centres(arr: Detection2DArray) -> list[tuple[int, str, float, float]]:
    return [(int(d.id), d.results[0].hypothesis.class_id, round(d.bbox.center.position.x, 1),
             round(d.bbox.center.position.y, 1)) for d in arr.detections]


def test_the_node_gives_the_ids_the_cli_gives_on_the_same_frames(bus_jpg, tmp_path):
    bus = cv2.imread(str(bus_jpg))
    (tmp_path / 'pan').mkdir()
    frames = []
    for i in range(6):  # a camera panning: 12 px per frame
        frames.append(np.ascontiguousarray(bus[150:1000, 12 * i:12 * i + 720]))
        cv2.imwrite(str(tmp_path / 'pan' / f'{i:03d}.png'), frames[-1])
    cli = subprocess.run([sys.executable, '-m', 'yolo_trt_ros.cli', 'track',
                          str(tmp_path / 'pan'), '--json', '--backend', 'onnxruntime'],
                         capture_output=True, text=True, timeout=180)
    assert cli.returncode == 0, cli.stderr
    expected = [[(d['track_id'], d['label'], round((d['bbox_xyxy'][0] + d['bbox_xyxy'][2]) / 2, 1),
                  round((d['bbox_xyxy'][1] + d['bbox_xyxy'][3]) / 2, 1))
                 for d in f['detections']] for f in json.loads(cli.stdout)]
    with running(tracker='bytetrack') as (proc, client):
        results = client.collect(Detection2DArray, 'detections')
        pub = client.publisher(Image, 'image')
        for i, bgr in enumerate(frames):  # one at a time: every frame processed, none dropped
            pub.publish(image(bgr, 1, i * 100_000_000))
            client.wait(lambda n=i: len(results) > n, f'the result of frame {i}')
    got = [ids_and_centres(arr) for arr in results]
    assert [[g[:2] for g in frame] for frame in got] == [[e[:2] for e in frame]
                                                         for frame in expected]
    for g_frame, e_frame in zip(got, expected, strict=True):  # both rounded to 0.1 px
        for g, e in zip(g_frame, e_frame, strict=True):
            assert abs(g[2] - e[2]) < 0.11 and abs(g[3] - e[3]) < 0.11
    assert len({i for frame in got for i, *_ in frame}) >= 2


def test_tracker_changed_at_run_time_and_a_looping_bag(bus_jpg):
    bus = cv2.imread(str(bus_jpg))
    with running() as (proc, client):
        results = client.collect(Detection2DArray, 'detections')
        diags = client.collect(DiagnosticArray, '/diagnostics')
        pub = client.publisher(Image, 'image')

        def send(sec: int) -> Detection2DArray:
            count = len(results)
            pub.publish(image(bus, sec))
            client.wait(lambda: len(results) > count, f'the result for stamp {sec}')
            return results[-1]

        untracked = send(1)
        assert untracked.detections and all(d.id == '' for d in untracked.detections)
        assert set_parameter(client, 'tracker', string('bytetrack'))[0]
        first = [int(d.id) for d in send(2).detections]
        assert sorted(first) == list(range(1, len(first) + 1))
        assert [int(d.id) for d in send(2).detections] == first  # same objects, same ids
        looped = [int(d.id) for d in send(1).detections]  # stamps went back: tracks reset
        assert min(looped) > max(first)  # and ids are never given twice
        client.wait(lambda: diagnostics_value(diags, 'tracking.resets') == '1',
                    'the reset in diagnostics')
        ok, reason = set_parameter(client, 'tracker', string('deepsort'))
        assert not ok and "parameter tracker: 'deepsort' is not none, bytetrack or botsort" in reason
        assert set_parameter(client, 'tracker', string('botsort'))[0]
        switched = [int(d.id) for d in send(3).detections]  # a new tracker: new tracks
        assert min(switched) > max(looped)


K = [700.0, 0.0, 405.0, 0.0, 700.0, 540.0, 0.0, 0.0, 1.0]


def depth_image(mm: np.ndarray, sec: int, encoding: str = '16UC1') -> Image:
    msg = Image(height=mm.shape[0], width=mm.shape[1], encoding=encoding,
                step=mm.shape[1] * mm.itemsize * (mm.shape[2] if mm.ndim == 3 else 1),
                data=mm.tobytes())
    msg.header.frame_id = 'cam'
    msg.header.stamp.sec = sec
    return msg


def camera_info(k: list[float]) -> CameraInfo:
    info = CameraInfo(width=810, height=1080, k=k)
    info.header.frame_id = 'cam'
    return info


def test_depth_gives_detection3darray_with_the_ids_of_the_2d_detections(bus_jpg):
    bus = cv2.imread(str(bus_jpg))
    with running(tracker='bytetrack', depth_topics='depth/image_rect_raw') as (proc, client):
        two = client.collect(Detection2DArray, 'detections')
        three = client.collect(Detection3DArray, 'detections_3d')
        pub = client.publisher(Image, 'image')
        depth_pub = client.publisher(Image, 'depth/image_rect_raw')
        info_pub = client.publisher(CameraInfo, 'depth/camera_info')  # the derived topic
        info_pub.publish(camera_info(K))
        mm = np.full((1080, 810), 4000, np.uint16)
        mm[540:] = 2000
        for sec in range(10, 20):  # a best-effort depth frame may be lost: try again
            depth_pub.publish(depth_image(mm, sec))
            pub.publish(image(bus, sec))
            client.wait(lambda s=sec: two and two[-1].header.stamp.sec == s, 'the 2D result')
            client.executor.spin_once(timeout_sec=0.5)
            if three and three[-1].header.stamp.sec == sec:
                break
            info_pub.publish(camera_info(K))
        arr3, arr2 = three[-1], next(a for a in two if a.header.stamp == three[-1].header.stamp)
    assert arr3.header == arr2.header
    assert [d.id for d in arr3.detections] == [d.id for d in arr2.detections]
    assert all(d.id for d in arr3.detections)
    for d2, d3 in zip(arr2.detections, arr3.detections, strict=True):
        assert d3.results[0].hypothesis == d2.results[0].hypothesis
        z = d3.bbox.center.position.z
        assert z in (pytest.approx(2.0), pytest.approx(4.0))
        assert d3.bbox.center.position.x == pytest.approx((d2.bbox.center.position.x - 405) * z / 700)
        assert d3.bbox.size.x == pytest.approx(d2.bbox.size_x * z / 700)


@pytest.mark.parametrize('case,cause,words', [
    ('size', 'depth_size', 'depth image 8x6 is not the size of the colour image 810x1080'),
    ('encoding', 'depth_encoding', "depth encoding 'rgb8' is not 16UC1 (mm) or 32FC1 (m)"),
    ('focal', 'camera_info', 'focal length fx 0, fy 700'),
    ('no_info', 'no_camera_info', 'depth without camera_info'),
])
def test_bad_depth_is_one_line_and_a_counter_and_2d_still_flows(bus_jpg, case, cause, words):
    bus = cv2.imread(str(bus_jpg))
    with running(depth_topics='depth', camera_info_topics='info') as (proc, client):
        two = client.collect(Detection2DArray, 'detections')
        three = client.collect(Detection3DArray, 'detections_3d')
        diags = client.collect(DiagnosticArray, '/diagnostics')
        pub = client.publisher(Image, 'image')
        depth_pub = client.publisher(Image, 'depth')
        info_pub = client.publisher(CameraInfo, 'info')
        info = camera_info([0.0, *K[1:]] if case == 'focal' else K)
        # Small depth frames: each problem is found before the depth's size is compared
        # (but 'size', which is about it). A 1080x810 one is 1.8-2.6 MB of best-effort UDP
        # fragments, and Jazzy's Fast DDS delivered none of 9 on a loaded CI machine.
        mm = np.full((6, 8), 3000, np.uint16)
        depth = {'encoding': depth_image(np.zeros((6, 8, 3), np.uint8), 0, 'rgb8')
                 }.get(case, depth_image(mm, 0))
        for sec in range(1, 10):  # until the depth frame (best effort) got there
            if case != 'no_info':
                # With every frame, as a camera driver sends it: one sent before the node's
                # subscription had matched this publisher is dropped by DDS (seen on a loaded
                # machine: the 'focal' case never saw fx 0).
                info_pub.publish(info)
            depth.header.stamp.sec = sec
            depth_pub.publish(depth)
            pub.publish(image(bus, sec))
            client.wait(lambda s=sec: two and two[-1].header.stamp.sec == s, 'the 2D result')
            if f'({cause}, ' in proc.output():  # not a cause whose name holds it
                break
        client.wait(lambda: diagnostics_value(diags, f'bad_input.{cause}') is not None,
                    'the cause counted in diagnostics')
        log = proc.output()
    assert_bus_and_people(two[-1])  # the 2D detections still flow
    assert three == []
    lines = [line for line in log.splitlines() if f'({cause}, 1 so far)' in line]
    assert len(lines) == 1 and 'image: no 3D' in lines[0] and words in lines[0], log
    assert 'Traceback' not in log


def test_depth_and_camera_info_follow_their_drivers_qos():
    """camera_info was subscribed reliably, always: a driver publishing it best effort
    (sensor-data QoS, as many do) never matched, so 3D never came ('depth without
    camera_info'). Depth was best effort, always: a reliable depth camera's large frames
    were not resent. Both follow the input QoS now, as the image does (auto)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    best_effort = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
    reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    with running(qos_reliability='auto', depth_topics='depth',
                 camera_info_topics='info') as (proc, client):
        info_pub = client.node.create_publisher(CameraInfo, 'info', best_effort)
        client.wait(lambda: info_pub.get_subscription_count() == 1,
                    'a best-effort camera_info publisher to match',
                    explain=lambda: proc.output())
        depth_pub = client.node.create_publisher(Image, 'depth', reliable)
        # auto: reliable once the node sees that every depth publisher is (within 1 s)
        client.wait(lambda: 'depth: input QoS reliable (auto)' in proc.output(),
                    'the depth subscription to turn reliable', explain=lambda: proc.output())
        client.wait(lambda: depth_pub.get_subscription_count() == 1,
                    'the reliable depth subscription to match')
        log = proc.output()
    assert 'info: input QoS best effort (auto)' in log
    assert 'info: input QoS reliable' not in log
