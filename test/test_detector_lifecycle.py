"""The detector's life as a camera driver and a terminal see it (issue 10.1-2): input QoS
that follows the publishers, and an orderly shutdown on signals while frames flow."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from support.ros import (
    Client,
    NodeProcess,
    detector_names_publishers,
    diagnostics_value,
    diagnostics_values,
    frame,
    make_node,
    ros_context,
    running,
    spin_until,
)
from vision_msgs.msg import Detection2DArray

from yolo_trt_ros.core.dds import PROFILE_VARIABLES, profile_variable
from yolo_trt_ros.launcher import param_args

pytestmark = pytest.mark.ros
DETECTOR = 'yolo_trt_ros.ros.detector_node'


@pytest.mark.parametrize('signals', [[signal.SIGINT] * 3, [signal.SIGTERM]],
                         ids=['sigint-x3-to-the-group', 'sigterm'])
def test_signals_while_frames_flow_stop_cleanly_with_exit_0(bus_jpg, signals):
    log = tempfile.TemporaryFile('w+')
    proc = subprocess.Popen([sys.executable, '-m', DETECTOR, '--ros-args', *param_args(
        {'backend': 'onnxruntime', 'qos_reliability': 'reliable'})], stdout=log,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        with ros_context() as context:
            client = Client(context)
            results = client.collect(Detection2DArray, 'detections')
            pub = client.publisher(Image, 'image')
            msg = frame(bus_jpg, 'bgr8', 1, 'cam')
            deadline = time.monotonic() + 60
            while len(results) < 3:  # frames flowing, results coming back
                assert time.monotonic() < deadline, 'no results'
                pub.publish(msg)
                client.executor.spin_once(timeout_sec=0.05)
            for signum in signals:  # as a terminal or launch signals the process group
                os.killpg(proc.pid, signum)
                pub.publish(msg)
                client.executor.spin_once(timeout_sec=0.02)
            client.executor.shutdown()
        if len(signals) > 1:  # keep signalling until it is gone: shutdown and finalization
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline:
                os.killpg(proc.pid, signals[0])
                try:
                    proc.wait(0.02)
                except subprocess.TimeoutExpired:
                    pass
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log.seek(0)
    out = log.read()
    assert rc == 0, out
    assert 'internal' not in out and 'Traceback' not in out and 'KeyboardInterrupt' not in out


# A camera driver in its own process: `count` frames, stock Fast DDS, reliable or best
# effort, its size, history depth and period between frames (argv[1:]). A reliable one
# starts once the detector's subscription is reliable (auto switches when it sees the
# publisher) and waits until its frames were acknowledged.
CAMERA = """
import sys, time
import numpy as np, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.duration import Duration
from sensor_msgs.msg import Image
from yolo_trt_ros.ros.image_source_node import to_message
count, reliable = int(sys.argv[1]), sys.argv[2] == 'reliable'
width, height = map(int, sys.argv[3].split('x'))
depth, period = int(sys.argv[4]), float(sys.argv[5])
rclpy.init()
node = rclpy.create_node('camera')
pub = node.create_publisher(Image, 'image', QoSProfile(depth=depth, reliability=(
    ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)))
deadline = time.monotonic() + 60
def ready():  # one reader matched; reliable: the detector's best-effort one is gone
    infos = node.get_subscriptions_info_by_topic('image')
    return (len(infos) == 1 and pub.get_subscription_count() == 1 and (
        not reliable or infos[0].qos_profile.reliability == ReliabilityPolicy.RELIABLE))
while not ready():
    if time.monotonic() > deadline:
        sys.exit('no matching subscriber')
    rclpy.spin_once(node, timeout_sec=0.1)
msg = to_message(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8), 'bgr8')
for n in range(count):
    msg.header.stamp.sec = n
    pub.publish(msg)
    time.sleep(period)
if reliable and not pub.wait_for_all_acked(Duration(seconds=30)):
    sys.exit('frames not acknowledged')
print('sent all')
"""
STOCK_DDS = {k: v for k, v in os.environ.items() if k not in PROFILE_VARIABLES}


def run_camera(count: int, reliability: str, size: str = '1920x1080',
               env: dict | None = None, depth: int | None = None, period: float = 0.1) -> None:
    """depth: the writer's history, by default every frame: a reliable writer then keeps
    each until the detector acknowledged it (with 5, a loaded machine lost 1 of 20)."""
    camera = subprocess.run([sys.executable, '-c', CAMERA, str(count), reliability, size,
                             str(depth or count), str(period)],
                            env=env or STOCK_DDS, capture_output=True, text=True, timeout=120)
    assert camera.returncode == 0 and 'sent all' in camera.stdout, camera.stderr


def diagnostics_probe(context) -> tuple[SingleThreadedExecutor, list[DiagnosticArray]]:
    """A subscriber to the detector's diagnostics that misses none of its reports: it
    returns once the first came (matched before the camera starts), and its queue holds
    every later one while the test waits on the camera without spinning. CI once lost the
    one window that reported frames lost in DDS: with a 10-deep queue and no wait for the
    match, the test saw the total but never the window's warning."""
    executor = SingleThreadedExecutor(context=context)
    node = make_node(context, 'diagnostics_probe', executor)
    diags: list[DiagnosticArray] = []
    node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 1000)
    spin_until(executor, lambda: bool(diags), timeout=30, what="the detector's first diagnostics")
    return executor, diags


def test_auto_qos_gets_every_large_frame_from_a_reliable_camera_with_stock_dds():
    """Best effort received 1 of 40 such frames; auto subscribes reliably."""
    count = 20
    # Depth `count`: the test is about DDS delivery. With depth 1 a reliable reader still
    # replaces a frame its (CPU-starved, on a loaded CI machine) executor has not taken yet.
    with NodeProcess(DETECTOR, {'backend': 'onnxruntime', 'qos_depth': count},
                     env=STOCK_DDS) as det, ros_context() as context:
        det.wait_for_output('-> ')
        executor, diags = diagnostics_probe(context)
        run_camera(count, 'reliable')
        spin_until(executor, lambda: diagnostics_value(diags, 'frames_in') == str(count),
                   timeout=30, what=f'all {count} frames counted at the detector',
                   explain=lambda: f'{diagnostics_values(diags)}\n{det.output()}')
        executor.shutdown()
    assert 'input QoS reliable (auto)' in det.output()
    assert diagnostics_value(diags, 'lost_in_dds') == '0'


def test_a_reliable_cameras_shallow_history_loses_frames_counted_once_with_its_fix():
    """A reliable camera of history depth 1 sending 1080p frames back to back drops the ones
    the detector has not acknowledged yet (a loaded CI machine lost 1 of 20 with depth 5 at
    10 fps). Each lost frame was counted twice (lost in DDS, and again as published before
    the subscription matched), and the warning named receive-side fixes that cannot help a
    reliable reader. Every frame is accounted for once now, and the fix is the camera's."""
    count, keys = 20, ('frames_in', 'lost_in_dds', 'replaced_in_queue', 'unmatched')
    with NodeProcess(DETECTOR, {'backend': 'onnxruntime', 'qos_depth': count,
                                'qos_reliability': 'reliable'},
                     env=STOCK_DDS) as det, ros_context() as context:
        det.wait_for_output('-> ')
        executor, diags = diagnostics_probe(context)
        run_camera(count, 'reliable', depth=1, period=0.0)
        exited = len(diags)

        def accounted() -> int:
            return sum(int(diagnostics_values(diags).get(k, 0)) for k in keys)

        def caught_up() -> bool:  # a report made after the camera left, every frame served
            values = {k: int(v) for k, v in diagnostics_values(diags).items()
                      if k in ('frames_in', 'processed', 'dropped', 'bad_input')}
            return len(diags) > exited + 1 and values['frames_in'] == sum(
                values[k] for k in ('processed', 'dropped', 'bad_input'))
        explain = lambda: f'{diagnostics_values(diags)}\n{det.output()}'  # noqa: E731
        named = detector_names_publishers()
        if named:
            # The camera exits once every frame it kept was acknowledged: the counts are
            # final once they add up (or never, where a frame is counted twice or not at all).
            spin_until(executor, lambda: accounted() >= count, timeout=30,
                       what=f'all {count} frames accounted for', explain=explain)
        else:
            # Without the publisher's gid (rclpy's take on Jazzy, where librcl cannot be
            # loaded by name) a gap before its first frame cannot be seen, so frames the
            # writer dropped before sending any of them are counted nowhere (CI once: 19 of
            # 20). What still holds: no frame is counted twice.
            spin_until(executor, caught_up, timeout=30, what='the detector to serve every '
                       'frame it received', explain=explain)
        executor.shutdown()
    values = diagnostics_values(diags)
    assert int(values['frames_in']) < count, values
    if named:
        assert accounted() == count, values
    else:
        assert accounted() <= count, values
    # DDS reports the dropped frames lost when they had started on their way (13-19 of 20
    # on dev); frames the writer dropped before sending anything of them are not reported
    # (CI once: none of 19), and count as a gap before the publisher's first frame.
    log = det.output()
    if int(values['lost_in_dds']):
        assert "Fix: give the camera's publisher a deeper history (KEEP_LAST depth)" in log, log
        assert 'dds_profile:=stock_cameras' not in log and 'sysctl' not in log


def test_frames_lost_in_dds_are_counted_warned_once_and_diagnosed():
    """Best effort and stock Fast DDS: 1080p frames are lost in fragments, inside DDS.
    They were counted nowhere; now per camera, with one warning naming the fix."""
    with NodeProcess(DETECTOR, {'backend': 'onnxruntime', 'qos_reliability': 'best_effort'},
                     env=STOCK_DDS) as det, ros_context() as context:
        det.wait_for_output('-> ')
        executor, diags = diagnostics_probe(context)
        run_camera(20, 'best_effort')
        spin_until(executor, lambda: int(diagnostics_value(diags, 'lost_in_dds') or 0) > 0,
                   timeout=30, what='lost frames in the diagnostics')
        executor.shutdown()
    log = det.output()
    assert log.count('frames lost in DDS before reaching the detector') == 1, log

    # the detector's side (with Jazzy's Fast DDS 2 too, reading its own variable) and the camera's
    assert 'restart the detector with dds_profile:=stock_cameras' in log
    assert f'start the camera with {profile_variable()}=' in log
    warned = [s for d in diags for s in d.status if 'frames lost in DDS' in s.message]
    # WARN, or ERROR where the same window also processed nothing (a loaded machine): a
    # window that lost frames is never OK.
    assert warned and all(s.level in (DiagnosticStatus.WARN, DiagnosticStatus.ERROR)
                          for s in warned)


def test_the_detectors_side_alone_receives_a_stock_best_effort_camera(tmp_path):
    """Issue 18, edge 7: such a camera's 810x1080 frames reached the detector 7 times in 100.
    With dds_profile:=stock_cameras (UDP, a receive buffer larger than a frame) all arrive,
    where net.core.rmem_max lets the buffer hold a frame (bench/dds_receive.py). Inference
    is taken out (a constant model), as on a GPU: YOLO on this CPU starves DDS's receive
    thread and UDP loses frames again (5 of 20 here)."""
    from yolo_trt_ros.core.models.synthetic import constant_output_model, yolov8_output
    from yolo_trt_ros.launch_args import fastdds_profile

    rmem_max = int(Path('/proc/sys/net/core/rmem_max').read_text())
    if rmem_max < 810 * 1080 * 3 * 1.2:
        pytest.skip(f'net.core.rmem_max {rmem_max} cannot hold a frame here')
    count = 20
    # ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (this suite's isolation) makes rmw_fastrtps
    # replace the profile's transports: shared memory again, and nothing arrives. Both take
    # the default range here (the domain id still isolates the run).
    subnet = {k: v for k, v in STOCK_DDS.items() if k != 'ROS_AUTOMATIC_DISCOVERY_RANGE'}
    env = {**subnet, profile_variable(): str(fastdds_profile('stock_cameras'))}
    model = constant_output_model(tmp_path / 'null.onnx', yolov8_output(), (640, 640))
    with NodeProcess(DETECTOR, {'backend': 'onnxruntime', 'model': str(model),
                                'qos_reliability': 'best_effort'}, env=env) as det, \
            ros_context() as context:
        det.wait_for_output('-> ')
        executor, diags = diagnostics_probe(context)
        run_camera(count, 'best_effort', '810x1080', subnet)
        # Stock settings on this side lose at least 3 in 4 of them (the test above; 0-15 in
        # 100 in bench/dds_receive.py); a busy 2-core machine may lose a few from UDP.
        spin_until(executor, lambda: int(diagnostics_value(diags, 'frames_in') or 0) >= 15,
                   timeout=30, what=f'15 of the {count} frames at the detector')
        executor.shutdown()


def test_auto_qos_still_matches_a_best_effort_camera(bus_jpg, tmp_path):
    """The subject is the match, not the delivery of large frames: a best-effort 810x1080
    frame is 2.6 MB of UDP fragments, and Jazzy's Fast DDS delivers few of them to a
    detector that infers on the CPU (none in 30 s failed CI once). With 12 busy processes on
    dev, in 30 s of a 5 fps camera: 1 answer to such frames, 107 to 160x120 ones (one
    datagram each), the first within 0.5 s."""
    small = tmp_path / 'small.png'
    cv2.imwrite(str(small), cv2.resize(cv2.imread(str(bus_jpg)), (160, 120)))
    with NodeProcess(DETECTOR, {'backend': 'onnxruntime'}) as det, ros_context() as context:
        det.wait_for_output('-> ')
        client = Client(context)
        results = client.collect(Detection2DArray, 'detections')
        with NodeProcess('yolo_trt_ros.ros.image_source_node', {
                'path': str(small), 'rate': 5.0, 'reliable': False}) as source:
            client.wait(lambda: results, 'detections from a best-effort camera',
                        explain=lambda: f'detector:\n{det.output()}\ncamera:\n{source.output()}')
        client.executor.shutdown()
    assert 'input QoS best effort (auto)' in det.output()


def test_where_frames_cannot_be_accounted_for_the_node_says_so_once(bus_jpg):
    """Where the frames' message info names no publisher (rclpy's take on Jazzy and Humble,
    used where librcl cannot be loaded by name), the frames replaced in the queue or sent
    before the match go uncounted: the node says so, once; rcl's own take names it."""
    with running(wait_for='-> ') as (proc, client):
        results = client.collect(Detection2DArray, 'detections')
        pub = client.publisher(Image, 'image')
        client.answers_matched('/detections')
        for stamp in (1, 2):
            pub.publish(frame(bus_jpg, 'bgr8', stamp, 'cam'))
            client.wait(lambda s=stamp: len(results) == s, f'the answer to frame {stamp}')
        log = proc.output()
    said = log.count('sent before it matched are not counted here')
    assert said == (0 if detector_names_publishers() else 1), log


def test_every_frame_lost_before_the_node_is_counted_with_its_cause():
    """Issue 18, edge 3: frames replaced in the subscription's depth-1 queue, and frames of
    a publisher of the other reliability kind sent before the QoS switch matched it, were
    counted nowhere (367 of 1269 in one run). From the publication sequence number rmw
    gives each sample, every frame is accounted for now: published = frames in + lost in
    DDS + replaced in the queue + sent before the subscription matched."""
    if not detector_names_publishers():  # librcl not loadable by name, and Jazzy's rclpy
        pytest.skip('the MessageInfo of these frames names no publisher: frames replaced in '
                    'the queue or sent before the match cannot be told apart per publisher, '
                    'so they are not counted')
    small = Image(height=16, width=16, encoding='mono8', step=16, data=bytes(256))
    sent = 0
    with NodeProcess(DETECTOR, {'backend': 'onnxruntime'}) as det, ros_context() as context:
        det.wait_for_output('-> ')
        client = Client(context)
        diags = client.collect(DiagnosticArray, '/diagnostics')

        def value(key: str) -> int:
            return int(diagnostics_value(diags, key) or 0)

        def publish(pub) -> None:
            nonlocal sent
            pub.publish(small)
            sent += 1

        reliable = client.node.create_publisher(
            Image, 'image', QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        det.wait_for_output('input QoS reliable (auto)')  # auto followed the publisher
        client.wait(lambda: reliable.get_subscription_count() > 0, 'the reliable match')
        for _ in range(100):  # back to back: the depth-1 queue replaces frames
            publish(reliable)
        # A best-effort publisher appears: the reliable subscription cannot take its frames
        # until auto QoS subscribes again (within a second).
        best_effort = client.node.create_publisher(
            Image, 'image', QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        start = time.monotonic()
        for k in range(150):  # a camera at 100 Hz over the switch
            client.wait(lambda k=k: time.monotonic() >= start + k * 0.01, 'the next frame time')
            publish(best_effort)
        # The switch made: a reliable subscription cannot match a best-effort writer.
        client.wait(lambda: best_effort.get_subscription_count() > 0, 'the best-effort match')
        for pub in (reliable, best_effort):  # a last frame each, once the node is idle:
            # what a publisher lost after its last frame shows in its next frame's number
            reports = len(diags)  # idle in a report made from now on (one may be 1 s old)
            client.wait(lambda r=reports: len(diags) >= r + 2 and value('frames_in') ==
                        value('processed') + value('dropped'), 'the detector idle')
            before = value('frames_in')
            publish(pub)
            client.wait(lambda b=before: value('frames_in') > b, 'the last frame taken')
        keys = ('frames_in', 'lost_in_dds', 'replaced_in_queue', 'unmatched')
        client.wait(lambda: sum(value(key) for key in keys) == sent,
                    f'all {sent} frames accounted for', timeout=30)
        values = {kv.key: kv.value for kv in diags[-1].status[0].values}
        client.executor.shutdown()
    assert int(values['unmatched']) > 0, values  # the switch
    assert diags[-1].status[0].name == '/detector: camera'  # the node's full name (edge 4)
