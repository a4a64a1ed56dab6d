"""The detector node as its own process, fed and read by real rclpy nodes here."""
from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from support.ros import (
    diagnostics_value,
    double,
    frame,
    running,
    set_parameter,
)
from support.truth import assert_bus_and_people, found
from vision_msgs.msg import Detection2DArray, LabelInfo

from yolo_trt_ros.ros.image_source_node import to_message
from yolo_trt_ros.ros.parameters import LATCHED_QOS

pytestmark = pytest.mark.ros


def test_raw_encodings_keep_the_header_and_find_the_bus_and_people(bus_jpg):
    with running() as (proc, client):
        results = client.collect(Detection2DArray, 'detections')
        pub = client.publisher(Image, 'image')
        client.answers_matched('/detections')
        for i, encoding in enumerate(['bgr8', 'rgb8', 'mono8']):
            pub.publish(frame(bus_jpg, encoding, 100 + i, f'cam_{encoding}'))
            client.wait(lambda n=i: len(results) > n, f'detections for {encoding}')
    for arr, encoding in zip(results, ['bgr8', 'rgb8', 'mono8'], strict=True):
        assert arr.header.frame_id == f'cam_{encoding}'
        assert arr.header.stamp.sec == 100 + ['bgr8', 'rgb8', 'mono8'].index(encoding)
        assert all(d.header == arr.header and d.id == '' for d in arr.detections)
        # The tiny model does not see the bus in a grey image; the people it does, a
        # little less tightly boxed.
        gray = encoding == 'mono8'
        assert_bus_and_people(arr, bus=not gray, min_iou=0.5 if gray else 0.6)
    assert found(results[0]) == found(results[1])  # bgr8 and rgb8: the same pixels


def test_compressed_input_and_late_label_info(bus_jpg):
    with running(compressed=True, conf_threshold=0.3) as (proc, client):
        results = client.collect(Detection2DArray, 'detections')
        pub = client.publisher(CompressedImage, 'image/compressed')
        client.answers_matched('/detections')
        pub.publish(frame(bus_jpg, 'compressed', 7, 'jpeg_cam'))
        client.wait(lambda: results, 'detections for the JPEG')
        labels = client.collect(LabelInfo, 'label_info', LATCHED_QOS)  # subscribed late
        engine = client.collect(String, 'engine', LATCHED_QOS)
        client.wait(lambda: labels and engine, 'LabelInfo and the engine for a late subscriber')
    assert results[0].header.frame_id == 'jpeg_cam'
    assert_bus_and_people(results[0])
    info = labels[0]
    assert len(info.class_map) == 80 and info.class_map[5].class_name == 'bus'
    assert info.class_map[5].class_id == 5 and abs(info.threshold - 0.3) < 1e-6
    announced = json.loads(engine[0].data)  # the detector's own: it outlives the builder
    assert announced['backend'] == 'onnxruntime' and announced['engine_path'] is None
    assert announced['announced_by'] == 'detector'


def test_two_cameras_get_their_own_results(bus_jpg, zidane_jpg):
    with running(image_topics='cam1/image,cam2/image') as (proc, client):
        one = client.collect(Detection2DArray, 'cam1/detections')
        two = client.collect(Detection2DArray, 'cam2/detections')
        pub1, pub2 = client.publisher(Image, 'cam1/image'), client.publisher(Image, 'cam2/image')
        client.answers_matched('/cam1/detections', '/cam2/detections')
        pub1.publish(frame(bus_jpg, 'bgr8', 1, 'cam1'))
        pub2.publish(frame(zidane_jpg, 'bgr8', 2, 'cam2'))
        client.wait(lambda: one and two, 'detections on both cameras')
    assert one[0].header.frame_id == 'cam1' and two[0].header.frame_id == 'cam2'
    assert_bus_and_people(one[0])
    labels_two = [n for n, _ in found(two[0])]
    assert 'tie' in labels_two and 'bus' not in labels_two


def test_threshold_changed_at_run_time_changes_the_next_result(bus_jpg):
    with running() as (proc, client):
        results = client.collect(Detection2DArray, 'detections')
        pub = client.publisher(Image, 'image')
        client.answers_matched('/detections')
        pub.publish(frame(bus_jpg, 'bgr8', 1, 'cam'))
        client.wait(lambda: results, 'the first result')
        assert set_parameter(client, 'conf_threshold', double(0.9))[0]
        assert not set_parameter(client, 'conf_threshold', double(1.5))[0]  # validated, refused
        pub.publish(frame(bus_jpg, 'bgr8', 2, 'cam'))
        client.wait(lambda: len(results) > 1, 'the second result')
    before = [d.results[0].hypothesis.score for d in results[0].detections]
    after = [d.results[0].hypothesis.score for d in results[1].detections]
    assert len(before) >= 5 and min(before) < 0.9
    assert len(after) == 1 and after[0] > 0.9


def bad_raw_frames(good: Image) -> dict[str, Image]:
    def variant(**changes) -> Image:
        msg = Image(header=good.header, height=good.height, width=good.width,
                    encoding=good.encoding, step=good.step, data=good.data)
        for k, v in changes.items():
            setattr(msg, k, v)
        return msg
    return {
        'encoding': variant(encoding='bayer_grbg16'),
        'truncated': variant(data=bytes(good.data[:1000])),
        'mis-sized': variant(step=good.step - 1),
        'empty': variant(height=0, width=0, step=0, data=b''),
    }


def test_bad_raw_frames_are_logged_counted_and_skipped(bus_jpg):
    with running() as (proc, client):
        results = client.collect(Detection2DArray, 'detections')
        diags = client.collect(DiagnosticArray, '/diagnostics')
        pub = client.publisher(Image, 'image')
        good = frame(bus_jpg, 'bgr8', 50, 'good')
        for n, (kind, bad) in enumerate(bad_raw_frames(good).items(), 1):
            pub.publish(bad)  # one at a time: a newer frame would replace a waiting one
            client.wait(lambda n=n: diagnostics_value(diags, 'bad_input') == str(n),
                        f'the {kind} frame counted')
        pub.publish(good)
        client.wait(lambda: results, 'detections for the good frame after the bad ones')
        client.wait(lambda: diagnostics_value(diags, 'processed') == '1', 'processed count')
        values = {kv.key: kv.value for kv in diags[-1].status[0].values}
        log = proc.output()
    assert results[0].header.frame_id == 'good' and len(results) == 1
    assert_bus_and_people(results[0])
    assert values['bad_input.encoding'] == '1' and values['bad_input.size'] == '1'
    assert values['bad_input.step'] == '1'
    assert values['bad_input.empty'] == '1'
    # Each report whose window counted bad frames warns of them (and only such a report:
    # one bad frame once kept every later report at WARN)
    counted = [int({kv.key: kv.value for kv in d.status[0].values}['bad_input']) for d in diags]
    for before, now, report in zip([0, *counted], counted, diags, strict=False):
        assert ('bad input seen' in report.status[0].message) == (now > before), report
        if now > before:
            assert report.status[0].level in (DiagnosticStatus.WARN, DiagnosticStatus.ERROR)
    assert "unsupported encoding 'bayer_grbg16'" in log
    assert 'buffer holds 1000 bytes' in log and 'step 2429 is smaller than width 810' in log
    assert 'empty image: 0x0' in log


def test_corrupt_compressed_frame_is_skipped(bus_jpg):
    with running(compressed=True) as (proc, client):
        results = client.collect(Detection2DArray, 'detections')
        diags = client.collect(DiagnosticArray, '/diagnostics')
        pub = client.publisher(CompressedImage, 'image/compressed')
        good = frame(bus_jpg, 'compressed', 9, 'good')
        for n, data in enumerate([bytes(good.data[:500]), b''], 1):
            pub.publish(CompressedImage(header=good.header, format='jpeg', data=data))
            client.wait(lambda n=n: diagnostics_value(diags, 'bad_input') == str(n),
                        'the bad frame counted')
        pub.publish(good)
        client.wait(lambda: results, 'detections for the good frame')
        log = proc.output()
    assert_bus_and_people(results[0])
    assert 'cannot decode compressed image (500 bytes' in log and 'empty compressed image' in log


def test_overload_drops_stale_frames_with_bounded_latency_and_memory():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    with running(qos_reliability='best_effort') as (proc, client):
        results = client.collect(Detection2DArray, 'detections')
        diags = client.collect(DiagnosticArray, '/diagnostics')
        pub = client.publisher(Image, 'image')
        msg = to_message(base, 'bgr8')
        rss = []
        for i in range(2000):
            msg.header.stamp.sec = i
            pub.publish(msg)
            client.executor.spin_once(timeout_sec=0)
            if i in (500, 1999):
                rss.append(proc.rss_kib())
        # Then a marker frame, repeated until its result is back (best effort may drop any
        # single frame): everything before it has been either processed or dropped.
        markers, deadline = 0, time.monotonic() + 60
        msg.header.stamp.sec = 100000
        while not (results and results[-1].header.stamp.sec == 100000):
            assert time.monotonic() < deadline, 'no result for the marker frame'
            pub.publish(msg)
            markers += 1
            client.executor.spin_once(timeout_sec=0.2)
        done_at = len(diags)

        def settled() -> bool:  # a diagnostics message sent after the last result
            if len(diags) <= done_at + 1:
                return False
            v = {kv.key: kv.value for kv in diags[-1].status[0].values}
            return int(v['processed']) == len(results)
        client.wait(settled, 'diagnostics after the last result')
        values = {kv.key: kv.value for kv in diags[-1].status[0].values}
    frames_in, processed = int(values['frames_in']), int(values['processed'])
    dropped = int(values['dropped'])
    # What reached the node was either processed or replaced by a newer frame (depth-1
    # best-effort QoS lets DDS drop some before that, too): never queued.
    assert processed + dropped == frames_in <= 2000 + markers
    assert dropped > processed and len(results) == processed
    # Keep-newest: a result is for a frame at most a few processing times old.
    assert float(values['latency_ms.p99']) < 2000
    assert rss[1] - rss[0] < 30 * 1024, rss  # no growth with the frame count


def test_frames_are_taken_by_rcl_into_a_few_buffers_reused_frame_after_frame(bus_jpg):
    """ros/rcl_take.py: a camera's frames land in buffers of the node's own, each reused
    once its frame was served, so 30 frames go through at most a few (the node says how
    many when it stops); rclpy's take made a new bytes object per frame."""
    from support.ros import detector_names_publishers

    if not detector_names_publishers():
        pytest.skip('librcl cannot be loaded by name here: frames are taken by rclpy')
    with running() as (proc, client):
        results = client.collect(Detection2DArray, 'detections')
        pub = client.publisher(Image, 'image')
        client.answers_matched('/detections')
        for stamp in range(1, 31):
            pub.publish(frame(bus_jpg, 'bgr8', stamp, 'cam'))
            client.wait(lambda s=stamp: len(results) == s, f'the answer to frame {stamp}')
    log = proc.output()
    assert 'frames taken by rcl into pageable buffers' in log, log
    kept = re.search(r'frame buffers: (\d+) of pageable memory, \d+ MB \((\d+) allocated, '
                     r'(\d+) of them before the first frame', log)
    # two reserved for the one camera before it subscribed (warm-up size: 1080p bgr8, the
    # frames are 810x1080), and at most one more while serving
    assert kept is not None and int(kept[3]) == 2, log
    assert 2 <= int(kept[1]) <= 3 and int(kept[2]) <= 3, log
    # The node's account of its worker: one batch step per frame (each was answered before
    # the next was sent), with the heap frozen once warmed up.
    assert 'garbage collector: the warmed-up heap frozen' in log, log
    assert re.search(r'worker: 30 batch steps: p50 [\d.]+ ms', log), log
