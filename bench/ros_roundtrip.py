"""ROS round trip: publish sensor_msgs/Image (and, at 1080p, a JPEG CompressedImage) in
this process, receive the detector node's Detection2DArray (another process) back, and
compare with the same pipeline in-process.

    python bench/ros_roundtrip.py [--frames 200] [--rate 20] [--json out.json]
    python bench/ros_roundtrip.py --bag BAG [--topics T] [--frames 200] [--json out.json]

With --bag, the frames of one camera topic of a recorded bag (Image or CompressedImage) are
published as recorded, at the recorded rate, instead of synthetic frames; answers are
matched to frames by their header stamps.

Inference is taken out (bench/common.py `inference`: the GPU stand-in engine where there is
a GPU, the null-inference model on ONNX Runtime elsewhere), so the figures are transport +
ROS + the detector's pipeline, not a model. Each transport setting runs in a child process
of its own (Fast DDS reads its profile once per process): stock Fast DDS, and
config/fastdds_large_frames.xml. Each row also says where the time goes: the publish call
(serialisation and write), the wait for the worker and the pipeline in the node (from its
diagnostics), and the rest (DDS delivery of the frame and of the answer).
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
from common import camera_jpeg, environment, inference, start_node, stop, workdir

# (height, width, compressed)
CASES = ((480, 640, False), (720, 1280, False), (1080, 1920, False), (1080, 1920, True))


def in_process_ms(params: dict, env: dict, h: int, w: int, jpeg: bytes | None,
                  frames: int) -> float:
    """The same work without ROS transport, as the node does it: view (or decode the JPEG),
    detect, message as CDR bytes."""
    import os

    from yolo_trt_ros.core.image.buffers import view_image
    from yolo_trt_ros.core.runtime.detector import Detector, DetectorConfig
    from yolo_trt_ros.core.serving.cdr import Stamped
    from yolo_trt_ros.core.serving.cdr_writer import detection_array_cdr

    os.environ.update(env)
    engine = Path(params['engine_path']) if params.get('engine_path') else None
    config = DetectorConfig(Path(params['model']), backend=params['backend'], engine=engine)
    data = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8).tobytes()
    header = Stamped(0, 0, 'camera')
    times = []
    with Detector.open(config) as det:
        for i in range(frames + 20):
            t = time.perf_counter()
            image = det.decode_compressed([(jpeg, 'jpeg')])[0] if jpeg else \
                view_image(data, h, w, 'bgr8', w * 3)
            detection_array_cdr(det.detect([image])[0], header, det.label)
            if i >= 20:
                times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def node_percentiles(diags: list) -> dict[str, float]:
    """latency_ms.p50 and queue_ms.p50 from the detector's newest diagnostics."""
    if not diags:
        return {}
    values = {kv.key: kv.value for kv in diags[-1].status[0].values}
    return {k: float(values[k]) for k in ('latency_ms.p50', 'queue_ms.p50') if k in values}


def child(profile: bool, frames: int, rate: float) -> list[dict]:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image
    from vision_msgs.msg import Detection2DArray

    from yolo_trt_ros.ros.image_source_node import to_message

    tmp = workdir()
    params, extra_env = inference(tmp, max_batch=1)
    env = {**environment(profile), **extra_env}
    rows = []
    rclpy.init()
    node = Node('roundtrip_bench')
    for h, w, compressed in CASES:
        topic = f'bench_{w}x{h}{"_jpeg" if compressed else ""}'
        det = start_node('yolo_trt_ros.ros.detector_node',
                         {**params, 'image_topics': f'{topic}/image', 'compressed': compressed,
                          'publish_annotated': False}, env, tmp / f'{topic}.log')
        got: dict[int, float] = {}
        sub = node.create_subscription(  # one camera: the detector answers on `detections`
            Detection2DArray, 'detections',
            lambda m, got=got: got.setdefault(m.header.stamp.nanosec, time.perf_counter()), 50)
        diags: list = []
        diag_sub = node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        jpeg = camera_jpeg(h, w) if compressed else None
        if compressed:
            pub = node.create_publisher(CompressedImage, f'{topic}/image/compressed', qos)
            msg = CompressedImage(format='jpeg', data=jpeg)
        else:
            pub = node.create_publisher(Image, f'{topic}/image', qos)
            msg = to_message(np.random.default_rng(h).integers(0, 256, (h, w, 3),
                                                               dtype=np.uint8), 'bgr8')
        deadline = time.monotonic() + 60
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        sent: dict[int, float] = {}
        publish_ms: list[float] = []
        period, warm = 1.0 / rate, 20
        next_t = time.perf_counter()
        for i in range(frames + warm):
            msg.header.stamp.nanosec = i + 1
            sent[i + 1] = time.perf_counter()
            pub.publish(msg)
            publish_ms.append((time.perf_counter() - sent[i + 1]) * 1e3)
            next_t += period
            while time.perf_counter() < next_t:
                rclpy.spin_once(node, timeout_sec=max(0.0, next_t - time.perf_counter()))
        end = time.monotonic() + 2
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        rtt = np.array([(got[k] - sent[k]) * 1e3 for k in sent if k > warm and k in got])
        end = time.monotonic() + 2  # one more diagnostics message with every frame in it
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        in_node = node_percentiles(diags)
        stop(det)
        node.destroy_subscription(sub)
        node.destroy_subscription(diag_sub)
        node.destroy_publisher(pub)
        inproc = in_process_ms(params, extra_env, h, w, jpeg, 100)
        row = {'transport': 'fastdds_large_frames.xml' if profile else 'stock Fast DDS',
               'input': f'{w}x{h} {"JPEG q90" if compressed else "bgr8"}',
               'delivered': f'{len(rtt)}/{frames}',
               'roundtrip_p50_ms': round(float(np.median(rtt)), 2) if len(rtt) else None,
               'roundtrip_p99_ms': round(float(np.percentile(rtt, 99)), 2) if len(rtt) else None,
               'in_process_ms': round(inproc, 2),
               'breakdown_p50_ms': {
                   'publish call': round(float(np.median(publish_ms[warm:])), 2),
                   'node: wait for the worker': in_node.get('queue_ms.p50'),
                   'node: pipeline': round(in_node['latency_ms.p50'] - in_node['queue_ms.p50'],
                                           2) if len(in_node) == 2 else None}}
        if len(rtt):
            row['ros_adds_ms'] = round(row['roundtrip_p50_ms'] - inproc, 2)
            if len(in_node) == 2:
                row['breakdown_p50_ms']['DDS delivery, frame and answer'] = round(
                    row['roundtrip_p50_ms'] - row['breakdown_p50_ms']['publish call']
                    - in_node['latency_ms.p50'], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    rclpy.shutdown()
    return rows


def child_bag(profile: bool, frames: int, bag: str, topics: list[str]) -> list[dict]:
    """One row: the bag's camera replayed at its recorded rate into a detector node."""
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image
    from vision_msgs.msg import Detection2DArray

    from yolo_trt_ros.bags.replay import frames as recorded
    from yolo_trt_ros.bags.replay import header_stamp, survey

    rec = survey(Path(bag), topics)
    if len(rec.cameras) != 1:
        raise SystemExit(f"ros_roundtrip.py: the bag has {len(rec.cameras)} camera topics "
                         f"({', '.join(c.topic for c in rec.cameras)}): choose one with --topics")
    (cam,) = rec.cameras
    tmp = workdir()
    params, extra_env = inference(tmp, max_batch=1)
    image_topic = cam.topic.removesuffix('/compressed') if cam.compressed else cam.topic
    det = start_node('yolo_trt_ros.ros.detector_node',
                     {**params, 'image_topics': image_topic, 'compressed': cam.compressed,
                      'publish_annotated': False}, {**environment(profile), **extra_env},
                     tmp / 'bag.log')
    rclpy.init()
    node = Node('roundtrip_bench_bag')
    got: dict[tuple[int, int], float] = {}
    node.create_subscription(Detection2DArray, 'detections', lambda m: got.setdefault(
        (m.header.stamp.sec, m.header.stamp.nanosec), time.perf_counter()), 50)
    pub = node.create_publisher(CompressedImage if cam.compressed else Image, cam.topic,
                                QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    deadline = time.monotonic() + 60
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    sent: dict[tuple[int, int], float] = {}
    start = time.perf_counter()
    for i, (_, due, data) in enumerate(recorded(Path(bag), [cam.topic])):
        if i == frames:  # played once, not looped: each header stamp names one frame
            break
        while time.perf_counter() < start + due:
            rclpy.spin_once(node, timeout_sec=max(0.0, start + due - time.perf_counter()))
        sent[header_stamp(cam, data)] = time.perf_counter()
        pub.publish(data)  # the recorded bytes, as `ros2 bag play` sends them
    end = time.monotonic() + 2
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    stop(det)
    rclpy.shutdown()
    rtt = np.array([(got[k] - t) * 1e3 for k, t in sent.items() if k in got])
    row = {'transport': 'fastdds_large_frames.xml' if profile else 'stock Fast DDS',
           'input': f'bag {Path(bag).name} {cam.topic} ({rec.size or "compressed"}, '
                    f'{rec.fps:.1f} fps)',
           'delivered': f'{len(rtt)}/{len(sent)}',
           'roundtrip_p50_ms': round(float(np.median(rtt)), 2) if len(rtt) else None,
           'roundtrip_p99_ms': round(float(np.percentile(rtt, 99)), 2) if len(rtt) else None,
           'in_process_ms': None, 'breakdown_p50_ms': {}}
    print(json.dumps(row), flush=True)
    return [row]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=200)
    parser.add_argument('--rate', type=float, default=20.0)
    parser.add_argument('--json')
    parser.add_argument('--child', choices=('stock', 'profile'))
    parser.add_argument('--bag', help='replay one camera topic of this bag at its recorded rate')
    parser.add_argument('--topics', nargs='+', help='the bag\'s camera topic (default: its one)')
    args = parser.parse_args()
    if args.child:
        if args.bag:
            child_bag(args.child == 'profile', args.frames, args.bag, args.topics or [])
        else:
            child(args.child == 'profile', args.frames, args.rate)
        return 0
    bag_args = ['--bag', args.bag, *(['--topics', *args.topics] if args.topics else [])] \
        if args.bag else []
    rows = []
    for mode in ('stock', 'profile'):
        proc = subprocess.run([sys.executable, __file__, '--child', mode, '--frames',
                               str(args.frames), '--rate', str(args.rate), *bag_args],
                              env=environment(mode == 'profile'), capture_output=True, text=True)
        rows += [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{')]
        if proc.returncode:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return proc.returncode
    print(f"{'transport':<26} {'input':>19} {'delivered':>10} {'RTT p50':>8} {'RTT p99':>8} "
          f"{'in-proc':>8} {'ROS adds':>9}  (ms)  where the p50 goes")
    for r in rows:
        print(f"{r['transport']:<26} {r['input']:>19} {r['delivered']:>10} "
              f"{r['roundtrip_p50_ms'] or '-':>8} {r['roundtrip_p99_ms'] or '-':>8} "
              f"{r['in_process_ms'] or '-':>8} {r.get('ros_adds_ms', '-'):>9}  "
              f"{r['breakdown_p50_ms']}")
    if args.json:
        from yolo_trt_ros.benchmarks.stages import machine_info
        Path(args.json).write_text(json.dumps({'machine': machine_info(), 'results': rows},
                                              indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
