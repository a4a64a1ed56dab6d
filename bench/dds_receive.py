"""Can the detector's side alone receive a best-effort camera's large frames with stock
Fast DDS? (issue 18, edge 7)

A camera process with stock Fast DDS settings publishes N 810x1080 bgr8 frames (2.6 MB)
best effort at 10 Hz; the receiver counts what arrives under each Fast DDS profile of its
own. Two receivers: a bare subscriber (raw, best effort, depth 1, as the detector
subscribes) and the detector itself (best effort, depth 1) with inference taken out (the
null model of bench/common.py: a GPU machine's CPU is that free), whose diagnostics count
frames in and lost. The camera is never changed: that is the point. A last row gives both
sides the launch files' profile, for reference.

    .venv/bin/python bench/dds_receive.py --frames 100 --json bench/results/dds_receive_dev.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import null_model

from yolo_trt_ros.benchmarks.stages import machine_info
from yolo_trt_ros.core.dds import PROFILE_VARIABLES, profile_variable
from yolo_trt_ros.core.serving.health import rmem_max

REPO = Path(__file__).resolve().parents[1]
LARGE_FRAMES = REPO / 'config' / 'fastdds_large_frames.xml'
STOCK_CAMERAS = REPO / 'config' / 'fastdds_stock_cameras.xml'

CAMERA = r"""
import sys, time
import numpy as np, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
count = int(sys.argv[1])
rclpy.init()
node = rclpy.create_node('stock_camera')
pub = node.create_publisher(Image, 'image', QoSProfile(depth=1,
                            reliability=ReliabilityPolicy.BEST_EFFORT))
img = np.random.default_rng(0).integers(0, 256, (1080, 810, 3), dtype=np.uint8)
msg = Image(height=1080, width=810, encoding='bgr8', step=810 * 3, data=img.tobytes())
deadline = time.monotonic() + 30
while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(1.0)  # discovery of the reader's locators
for n in range(count):
    msg.header.stamp.sec = n
    pub.publish(msg)
    time.sleep(0.1)
print('sent', count, flush=True)
"""

RECEIVER = r"""
import sys, time
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node('receiver')
got = []
node.create_subscription(Image, 'image', lambda data: got.append(len(data)),
                         QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT),
                         raw=True)
ex = SingleThreadedExecutor(); ex.add_node(node)
print('ready', flush=True)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    ex.spin_once(timeout_sec=0.1)
print('received', len(got), flush=True)
"""


def profile(body: str) -> str:
    """A Fast DDS XML profile file made the default for a participant."""
    return f"""<?xml version="1.0" encoding="UTF-8" ?>
<profiles xmlns="http://www.eprosima.com">
  <transport_descriptors>{body}</transport_descriptors>
  <participant profile_name="receiver" is_default_profile="true">
    <rtps>
      <userTransports>{''.join(f'<transport_id>{t}</transport_id>' for t in
                              ('shm', 'udp') if f'<transport_id>{t}<' in body)}</userTransports>
      <useBuiltinTransports>false</useBuiltinTransports>
    </rtps>
  </participant>
</profiles>
"""


def variants(directory: Path) -> dict[str, Path | None]:
    big = rmem_max()
    files = {
        'udp_receive_buffer_rmem_max': profile(
            '<transport_descriptor><transport_id>shm</transport_id><type>SHM</type>'
            '</transport_descriptor><transport_descriptor><transport_id>udp</transport_id>'
            f'<type>UDPv4</type><receiveBufferSize>{big}</receiveBufferSize>'
            '</transport_descriptor>'),
        'udp_only_default_buffer': profile(
            '<transport_descriptor><transport_id>udp</transport_id><type>UDPv4</type>'
            '</transport_descriptor>'),
        'udp_only_receive_buffer_212992': profile(  # Ubuntu's default net.core.rmem_max
            '<transport_descriptor><transport_id>udp</transport_id><type>UDPv4</type>'
            '<receiveBufferSize>212992</receiveBufferSize></transport_descriptor>'),
        'shm_64mb_segment': profile(
            '<transport_descriptor><transport_id>shm</transport_id><type>SHM</type>'
            '<segment_size>67108864</segment_size></transport_descriptor>'
            '<transport_descriptor><transport_id>udp</transport_id><type>UDPv4</type>'
            '</transport_descriptor>'),
    }
    out: dict[str, Path | None] = {'stock': None}
    for name, text in files.items():
        path = directory / f'{name}.xml'
        path.write_text(text)
        out[name] = path
    out['stock_cameras'] = STOCK_CAMERAS  # UDP only, a 32 MB receive buffer (rmem_max caps)
    out['launch_profile_receiver_only'] = LARGE_FRAMES
    return out


def env_with(profile_path: Path | None, domain: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PROFILE_VARIABLES}
    env['ROS_DOMAIN_ID'] = str(domain)
    if profile_path is not None:
        env[profile_variable()] = str(profile_path)
    return env


DETECTOR = r"""
import json, subprocess, sys, time
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
listen, model = float(sys.argv[1]), sys.argv[2]
det = subprocess.Popen([sys.executable, '-m', 'yolo_trt_ros.ros.detector_node', '--ros-args',
                        '-p', 'backend:=onnxruntime', '-p', f'model:={model}',
                        '-p', 'qos_reliability:=best_effort'],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
rclpy.init()
node = rclpy.create_node('probe')
last = {}
node.create_subscription(DiagnosticArray, '/diagnostics', lambda m: last.update(
    {kv.key: kv.value for kv in m.status[0].values}), 10)
ex = SingleThreadedExecutor(); ex.add_node(node)
for line in det.stdout:
    if '-> ' in line:
        break
print('ready', flush=True)
end = time.monotonic() + listen
while time.monotonic() < end:
    ex.spin_once(timeout_sec=0.1)
det.terminate(); det.wait()
print('received', last.get('frames_in', 0), flush=True)
"""


def trial(frames: int, receiver_profile: Path | None, camera_profile: Path | None,
          domain: int, model: Path | None = None) -> int:
    """Frames that reached the receiver: a bare subscriber, or the detector given a model."""
    listen = frames * 0.1 + 15
    script = [RECEIVER, str(listen)] if model is None else [DETECTOR, str(listen), str(model)]
    receiver = subprocess.Popen([sys.executable, '-c', *script],
                                env=env_with(receiver_profile, domain), stdout=subprocess.PIPE,
                                text=True)
    try:
        assert receiver.stdout.readline().strip() == 'ready'
        camera = subprocess.run([sys.executable, '-c', CAMERA, str(frames)],
                                env=env_with(camera_profile, domain), capture_output=True,
                                text=True, timeout=listen + 30)
        assert camera.returncode == 0, camera.stderr
        out, _ = receiver.communicate(timeout=listen + 30)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    return int(out.split()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=100)
    parser.add_argument('--json', metavar='PATH')
    args = parser.parse_args()
    domain = 100 + os.getpid() % 100
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = null_model(Path(tmp))
        for who, given in (('subscriber', None), ('detector', model)):
            for name, path in variants(Path(tmp)).items():
                got = trial(args.frames, path, None, domain, given)
                rows.append({'receiver': who, 'profile': name, 'camera': 'stock',
                             'received': got})
                print(f'{who:10s} {name:36s} camera stock: {got}/{args.frames}', flush=True)
            got = trial(args.frames, LARGE_FRAMES, LARGE_FRAMES, domain, given)
            rows.append({'receiver': who, 'profile': 'launch_profile',
                         'camera': 'launch_profile', 'received': got})
            print(f"{who:10s} {'launch_profile':36s} camera launch_profile: "
                  f'{got}/{args.frames}', flush=True)
    result = {'machine': machine_info(), 'frames': args.frames, 'size': '810x1080 bgr8',
              'rate_hz': 10, 'net.core.rmem_max': rmem_max(),
              # LOCALHOST: rmw_fastrtps replaces a profile's transports (0 of 30 arrive)
              'ROS_AUTOMATIC_DISCOVERY_RANGE': os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE'),
              'rows': rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
