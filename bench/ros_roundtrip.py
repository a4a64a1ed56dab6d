"""ROS round trip: publish sensor_msgs/Image in this process, receive the detector node's
Detection2DArray (another process) back, and compare with the same pipeline in-process.

    python bench/ros_roundtrip.py [--frames 200] [--rate 20] [--json out.json]

The detector runs the null-inference model (bench/common.py: YOLOv8n-640 shapes, a fixed
realistic output), so the figures are transport + ROS + preprocessing + decode, not a
model. Each transport setting runs in a child process of its own (Fast DDS reads its
profile once per process): stock Fast DDS, and config/fastdds_large_frames.xml.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, null_model, start_node, stop, workdir

SIZES = ((480, 640), (720, 1280), (1080, 1920))


def in_process_ms(model: Path, h: int, w: int, frames: int) -> float:
    """The same work without ROS transport: view, detect, message build."""
    from std_msgs.msg import Header

    from yolo_trt_ros.core.detector import Detector, DetectorConfig
    from yolo_trt_ros.core.images import view_image
    from yolo_trt_ros.ros.conversions import detection_array

    data = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8).tobytes()
    header = Header(frame_id='camera')
    times = []
    with Detector.open(DetectorConfig(model, backend='onnxruntime')) as det:
        for i in range(frames + 20):
            t = time.perf_counter()
            result = det.detect([view_image(data, h, w, 'bgr8', w * 3)])[0]
            detection_array(result, header, str)
            if i >= 20:
                times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def child(profile: bool, frames: int, rate: float) -> list[dict]:
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    from yolo_trt_ros.ros.image_source_node import to_message

    tmp = workdir()
    model = null_model(tmp)
    rows = []
    rclpy.init()
    node = Node('roundtrip_bench')
    for h, w in SIZES:
        topic = f'bench_{w}x{h}'
        det = start_node('yolo_trt_ros.ros.detector_node',
                         {'model': str(model), 'backend': 'onnxruntime',
                          'image_topics': f'{topic}/image'}, environment(profile),
                         tmp / f'{topic}.log')
        got: dict[int, float] = {}
        sub = node.create_subscription(  # one camera: the detector answers on `detections`
            Detection2DArray, 'detections',
            lambda m, got=got: got.setdefault(m.header.stamp.nanosec, time.perf_counter()), 50)
        pub = node.create_publisher(Image, f'{topic}/image',
                                    QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        deadline = time.monotonic() + 60
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        msg = to_message(np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8),
                         'bgr8')
        sent: dict[int, float] = {}
        period, warm = 1.0 / rate, 20
        next_t = time.perf_counter()
        for i in range(frames + warm):
            msg.header.stamp.nanosec = i + 1
            sent[i + 1] = time.perf_counter()
            pub.publish(msg)
            next_t += period
            while time.perf_counter() < next_t:
                rclpy.spin_once(node, timeout_sec=max(0.0, next_t - time.perf_counter()))
        end = time.monotonic() + 2
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        rtt = np.array([(got[k] - sent[k]) * 1e3 for k in sent if k > warm and k in got])
        stop(det)
        node.destroy_subscription(sub)
        node.destroy_publisher(pub)
        inproc = in_process_ms(model, h, w, 100)
        row = {'transport': 'fastdds_large_frames.xml' if profile else 'stock Fast DDS',
               'size': f'{w}x{h}', 'delivered': f'{len(rtt)}/{frames}',
               'roundtrip_p50_ms': round(float(np.median(rtt)), 2) if len(rtt) else None,
               'roundtrip_p99_ms': round(float(np.percentile(rtt, 99)), 2) if len(rtt) else None,
               'in_process_ms': round(inproc, 2)}
        if len(rtt):
            row['ros_adds_ms'] = round(row['roundtrip_p50_ms'] - inproc, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    rclpy.shutdown()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=200)
    parser.add_argument('--rate', type=float, default=20.0)
    parser.add_argument('--json')
    parser.add_argument('--child', choices=('stock', 'profile'))
    args = parser.parse_args()
    if args.child:
        child(args.child == 'profile', args.frames, args.rate)
        return 0
    rows = []
    for mode in ('stock', 'profile'):
        proc = subprocess.run([sys.executable, __file__, '--child', mode, '--frames',
                               str(args.frames), '--rate', str(args.rate)],
                              env=environment(mode == 'profile'), capture_output=True, text=True)
        rows += [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{')]
        if proc.returncode:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return proc.returncode
    print(f"{'transport':<26} {'input':>10} {'delivered':>10} {'RTT p50':>8} {'RTT p99':>8} "
          f"{'in-proc':>8} {'ROS adds':>9}  (ms)")
    for r in rows:
        print(f"{r['transport']:<26} {r['size']:>10} {r['delivered']:>10} "
              f"{r['roundtrip_p50_ms'] or '-':>8} {r['roundtrip_p99_ms'] or '-':>8} "
              f"{r['in_process_ms']:>8} {r.get('ros_adds_ms', '-'):>9}")
    if args.json:
        from yolo_trt_ros.bench import machine_info
        Path(args.json).write_text(json.dumps({'machine': machine_info(), 'results': rows},
                                              indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
