"""ROS round trip: publish sensor_msgs/Image (and, at 1080p, a JPEG CompressedImage) in
this process, receive the detector node's Detection2DArray (another process) back, and
compare with the same pipeline in-process and with the floor of that run.

    python bench/ros_roundtrip.py [--frames 150] [--rate 20] [--inputs raw,jpeg]
                                  [--transports stock,profile] [--json out.json]
    python bench/ros_roundtrip.py --bag BAG [--topics T] [--frames 200] [--json out.json]

With --bag, the frames of one camera topic of a recorded bag (Image or CompressedImage) are
published as recorded, at the recorded rate, instead of synthetic frames; answers are
matched to frames by their header stamps.

Inference is taken out (bench/common.py `inference`: the GPU stand-in engine where there is
a GPU, the null-inference model on ONNX Runtime elsewhere), so the figures are transport +
ROS + the detector's pipeline, not a model. Each transport setting runs in a child process
of its own (Fast DDS reads its profile once per process): stock Fast DDS, and
config/fastdds_large_frames.xml.

Frames are published pre-serialized (the same bytes each time, the stamp patched in), so
the publisher's side costs the same for every receiver. Beside the detector, in the same
run and on the same bytes, a bare echo (another process: raw subscription with the
detector's QoS, answers at once with a Detection2DArray carrying the frame's stamp)
measures the floor: what rclpy and the transport cost on that machine that day. Answers
(the node's and the echo's) are timed on arrival, from their raw bytes; the time a Python
subscriber then spends deserializing them is reported beside the RTT, not in it. Rows:
answered (of every frame sent, the first ones included), RTT after the warm-up frames,
the floor's, the in-process pipeline, what ROS adds to it (RTT - in-process) and what the
node adds over the floor (RTT - in-process - floor); the node's own counters (frames in,
processed, dropped, lost before it) say where unanswered frames went. `unmatched` (the
node's counter, and the echo's the same way, from publication sequence numbers) are frames
published before the receiver's subscription had matched the publisher: the publisher
sees the subscription first and sends, the receiver has not yet discovered it and drops
them; that is the round-trip tool's start, not the receiver's work.
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    STAMP_NANOSEC,
    answer_taker,
    camera_jpeg,
    environment,
    inference,
    serialized_frame,
    spin_until_time,
    spin_while,
    start_node,
    stop,
    workdir,
)

# (height, width, compressed)
CASES = ((480, 640, False), (720, 1280, False), (1080, 1920, False), (1080, 1920, True))
# Results files say whether their echo held each frame until the next (see echo()) and
# whether their in-process run kept the round trip's pace (see in_process_ms()): earlier
# runs did neither, which inflated their floor for raw frames and made their in-process
# figure too low.
# And whether the answers were timed on arrival, before the benchmark deserialized them
# (bench/common.py answer_taker): earlier runs timed them after, which put the benchmark's
# own Python conversion of the node's 20 detections (about 1 ms) into the node's figures.
METHOD = {'echo_holds_frame': True, 'in_process_paced': True, 'answers_timed_raw': True}


def in_process_ms(params: dict, env: dict, h: int, w: int, jpeg: bytes | None,
                  frames: int, rate: float) -> float:
    """The same work without ROS transport, as the node does it: view (or decode the JPEG),
    detect, message as CDR bytes; at the round trip's pace, each frame a fresh copy (as a
    received frame is). Back to back on one frame, with caches and threads warm, the same
    work took about half as long on the dev machine (bench/results/roundtrip_dev.json
    before and after: 1.13 against 2.11 ms at 640x480 with the profile), which made the
    node look slower than its own pipeline."""

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
        next_t = time.perf_counter()
        for i in range(frames + 20):
            fresh = bytes(memoryview(jpeg or data))  # a copy
            t = time.perf_counter()
            image = det.decode_compressed([(fresh, 'jpeg')])[0] if jpeg else \
                view_image(fresh, h, w, 'bgr8', w * 3)
            detection_array_cdr(det.detect([image])[0], header, det.label)
            if i >= 20:
                times.append(time.perf_counter() - t)
            next_t += 1.0 / rate
            time.sleep(max(0.0, next_t - time.perf_counter()))
    return float(np.median(times) * 1e3)


def node_counters(diags: list) -> dict[str, float]:
    """The detector's newest diagnostics: latency and queue p50, and the frame counters."""
    if not diags:
        return {}
    values = {kv.key: kv.value for kv in diags[-1].status[0].values}
    keys = ('latency_ms.p50', 'queue_ms.p50', 'frames_in', 'processed', 'dropped',
            'lost_in_dds', 'replaced_in_queue', 'unmatched', 'bad_input')
    return {k: float(values[k]) for k in keys if k in values}


def echo(topic: str, answer: str, compressed: bool) -> None:
    """The floor: a raw subscription with the detector's QoS for a reliable camera, which
    answers each frame at once with a Detection2DArray of its stamp (no detections) and
    holds the frame until the next one comes."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image
    from vision_msgs.msg import Detection2DArray

    from yolo_trt_ros.core.pipeline.results import Detections
    from yolo_trt_ros.core.serving.cdr import parse_compressed, parse_image
    from yolo_trt_ros.core.serving.cdr_writer import detection_array_cdr

    rclpy.init()
    node = Node('roundtrip_echo')
    pub = node.create_publisher(Detection2DArray, answer, 10)
    parse, none = (parse_compressed if compressed else parse_image), Detections.empty()
    first: list[int] = []  # the publication sequence number of the first frame received
    held: list[bytes] = []

    def on_frame(data: bytes, info) -> None:
        pub.publish(detection_array_cdr(none, parse(data).header, str))
        # Held until the next frame arrives, as the detector's keep-newest slot holds it.
        # Freed here, a 1080p frame's 6 MB went back to the kernel (glibc trims the top of
        # its heap) and the next take faulted fresh pages in: the echo's round trip took
        # 17.35 ms instead of 5.86 (1080p, profile, dev machine; bench/results before and
        # after).
        held[:] = [data]
        if not first:
            first.append(info.get('publication_sequence_number') or 1)

    node.create_subscription(CompressedImage if compressed else Image, topic, on_frame,
                             QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE),
                             raw=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # stopped by the benchmark
    finally:
        # As the detector counts them: frames published before the subscription matched.
        print(json.dumps({'unmatched': first[0] - 1 if first else None}), flush=True)
        node.destroy_node()
        rclpy.try_shutdown()


def round_trips(node, pub, frame: bytearray, frames: int, rate: float, warm: int,
                got: dict[int, float], deserialize_ms: list[float]) -> dict:
    """Publish warm + frames stamped 1.. at rate, spinning node for the answers (into got,
    their deserialization times into deserialize_ms); the answered count of every frame
    sent, RTTs after the warm-up, publish call times."""
    spin_while(node, lambda: pub.get_subscription_count() == 0, 60)
    sent: dict[int, float] = {}
    publish_ms: list[float] = []
    next_t = time.perf_counter()
    for i in range(1, frames + warm + 1):
        struct.pack_into('<I', frame, STAMP_NANOSEC, i)
        data = bytes(frame)  # copied before the clock starts
        sent[i] = time.perf_counter()
        pub.publish(data)
        publish_ms.append((time.perf_counter() - sent[i]) * 1e3)
        next_t += 1.0 / rate
        spin_until_time(node, next_t)
    spin_while(node, lambda: len(got) < len(sent), 2)  # answers still on their way
    rtt = np.array([(got[k] - sent[k]) * 1e3 for k in sent if k > warm and k in got])
    # The schedule is fixed: after a stall here the frames it is late for go out back to
    # back, and the one before each may be replaced in the receiver's depth-1 queue. Those
    # sent within half a period of the previous, to compare with `missing`.
    caught_up = [k for k in sent if k - 1 in sent and sent[k] - sent[k - 1] < 0.5 / rate]
    return {'answered': f'{sum(k in got for k in sent)}/{len(sent)}',
            'missing': sorted(k for k in sent if k not in got),
            'sent_caught_up': caught_up,
            'p50': round(float(np.median(rtt)), 2) if len(rtt) else None,
            'p99': round(float(np.percentile(rtt, 99)), 2) if len(rtt) else None,
            'publish_ms': round(float(np.median(publish_ms[warm:])), 2),
            'deserialize_ms': round(float(np.median(deserialize_ms)), 3)
            if deserialize_ms else None}


def child(profile: bool, frames: int, rate: float, cases=CASES) -> list[dict]:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image
    from vision_msgs.msg import Detection2DArray

    tmp = workdir()
    params, extra_env = inference(tmp, max_batch=1)
    env = {**environment(profile), **extra_env}
    rows = []
    rclpy.init()
    node = Node('roundtrip_bench')
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    warm = 20
    for h, w, compressed in cases:
        topic = f'bench_{w}x{h}{"_jpeg" if compressed else ""}'
        msg_type, suffix = (CompressedImage, '/compressed') if compressed else (Image, '')
        frame = serialized_frame(h, w, compressed)
        measured = {}
        for who in ('floor', 'node'):
            got: dict[int, float] = {}
            deserialize_ms: list[float] = []
            answer = f'{topic}_echo/detections' if who == 'floor' else 'detections'
            sub = node.create_subscription(  # one camera: the detector answers on `detections`
                Detection2DArray, answer,
                answer_taker(got, deserialize_ms, lambda sec, nanosec: nanosec),
                frames + warm, raw=True)
            diags: list = []
            diag_sub = node.create_subscription(DiagnosticArray, '/diagnostics', diags.append,
                                                10)
            # Publisher first: the detector's QoS `auto` follows the publishers it finds.
            pub = node.create_publisher(msg_type, f'{topic}/image{suffix}', qos)
            if who == 'floor':
                proc = subprocess.Popen(
                    [sys.executable, __file__, '--echo', f'{topic}/image{suffix}', answer,
                     *(['--compressed'] if compressed else [])], env=env,
                    stdout=subprocess.PIPE, text=True)
            else:
                proc = start_node('yolo_trt_ros.ros.detector_node',
                                  {**params, 'image_topics': f'{topic}/image',
                                   'compressed': compressed, 'publish_annotated': False},
                                  env, tmp / f'{topic}.log')
            try:
                measured[who] = round_trips(node, pub, frame, frames, rate, warm, got,
                                            deserialize_ms)
                if who == 'node':  # one more diagnostics message with every frame in it
                    spin_while(node, lambda: True, 2)
                    measured['counters'] = node_counters(diags)
            finally:
                stop(proc)
                if who == 'floor' and who in measured:
                    said = [json.loads(line) for line in proc.stdout if line.startswith('{')]
                    measured['floor']['unmatched'] = said[-1]['unmatched'] if said else None
                node.destroy_subscription(sub)
                node.destroy_subscription(diag_sub)
                node.destroy_publisher(pub)
        jpeg = camera_jpeg(h, w) if compressed else None
        inproc = in_process_ms(params, extra_env, h, w, jpeg, 100, rate)
        rows.append(row(profile, h, w, compressed, measured, inproc))
        print(json.dumps(rows[-1]), flush=True)
    rclpy.shutdown()
    return rows


def row(profile: bool, h: int, w: int, compressed: bool, measured: dict,
        inproc: float) -> dict:
    """One case's JSON row from the floor's and the node's round trips."""
    rt, floor, counters = measured['node'], measured['floor'], measured['counters']
    out = {'transport': 'fastdds_large_frames.xml' if profile else 'stock Fast DDS',
           'input': f'{w}x{h} {"JPEG q90" if compressed else "bgr8"}',
           'answered': rt['answered'], 'not_answered': rt['missing'],
           'sent_caught_up': rt['sent_caught_up'],
           'floor_not_answered': floor['missing'],
           'roundtrip_p50_ms': rt['p50'], 'roundtrip_p99_ms': rt['p99'],
           'floor_answered': floor['answered'], 'floor_unmatched': floor.get('unmatched'),
           'floor_p50_ms': floor['p50'],
           'floor_p99_ms': floor['p99'], 'in_process_ms': round(inproc, 2),
           # Not in the RTTs: what a Python subscriber pays to deserialize each answer.
           'answer_deserialize_p50_ms': rt['deserialize_ms'],
           'floor_answer_deserialize_p50_ms': floor['deserialize_ms'],
           'node_counters': {k: int(v) for k, v in counters.items() if '_ms.' not in k},
           'breakdown_p50_ms': {'publish call': rt['publish_ms'],
                                'node: wait for the worker': counters.get('queue_ms.p50')}}
    if 'latency_ms.p50' in counters and 'queue_ms.p50' in counters:
        out['breakdown_p50_ms']['node: pipeline'] = round(
            counters['latency_ms.p50'] - counters['queue_ms.p50'], 2)
    if rt['p50'] is not None:
        out['ros_adds_ms'] = round(rt['p50'] - inproc, 2)
        if floor['p50'] is not None:
            out['over_floor_ms'] = round(out['ros_adds_ms'] - floor['p50'], 2)
        if 'latency_ms.p50' in counters:
            out['breakdown_p50_ms']['DDS delivery, frame and answer'] = round(
                rt['p50'] - rt['publish_ms'] - counters['latency_ms.p50'], 2)
    return out


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
    deserialize_ms: list[float] = []
    node.create_subscription(Detection2DArray, 'detections',
                             answer_taker(got, deserialize_ms, lambda *stamp: stamp), 50,
                             raw=True)
    pub = node.create_publisher(CompressedImage if cam.compressed else Image, cam.topic,
                                QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    spin_while(node, lambda: pub.get_subscription_count() == 0, 60)
    sent: dict[tuple[int, int], float] = {}
    start = time.perf_counter()
    for i, (_, due, data) in enumerate(recorded(Path(bag), [cam.topic])):
        if i == frames:  # played once, not looped: each header stamp names one frame
            break
        spin_until_time(node, start + due)
        sent[header_stamp(cam, data)] = time.perf_counter()
        pub.publish(data)  # the recorded bytes, as `ros2 bag play` sends them
    spin_while(node, lambda: True, 2)
    stop(det)
    rclpy.shutdown()
    rtt = np.array([(got[k] - t) * 1e3 for k, t in sent.items() if k in got])
    row = {'transport': 'fastdds_large_frames.xml' if profile else 'stock Fast DDS',
           'input': f'bag {Path(bag).name} {cam.topic} ({rec.size or "compressed"}, '
                    f'{rec.fps:.1f} fps)',
           'delivered': f'{len(rtt)}/{len(sent)}',
           'roundtrip_p50_ms': round(float(np.median(rtt)), 2) if len(rtt) else None,
           'roundtrip_p99_ms': round(float(np.percentile(rtt, 99)), 2) if len(rtt) else None,
           'in_process_ms': None, 'breakdown_p50_ms': {},
           'answer_deserialize_p50_ms': round(float(np.median(deserialize_ms)), 3)
           if deserialize_ms else None}
    print(json.dumps(row), flush=True)
    return [row]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=150, help='measured frames per case '
                        '(after 20 warm-up frames, which count as answered or not too)')
    parser.add_argument('--rate', type=float, default=20.0)
    parser.add_argument('--inputs', default='raw,jpeg', help='raw, jpeg or both')
    parser.add_argument('--transports', default='stock,profile', help='stock, profile or both')
    parser.add_argument('--json')
    parser.add_argument('--child', choices=('stock', 'profile'), help=argparse.SUPPRESS)
    parser.add_argument('--echo', nargs=2, metavar=('TOPIC', 'ANSWER'), help=argparse.SUPPRESS)
    parser.add_argument('--compressed', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--bag', help='replay one camera topic of this bag at its recorded rate')
    parser.add_argument('--topics', nargs='+', help='the bag\'s camera topic (default: its one)')
    args = parser.parse_args()
    if args.echo:
        echo(*args.echo, args.compressed)
        return 0
    inputs = set(args.inputs.split(','))
    cases = tuple(c for c in CASES if ('jpeg' if c[2] else 'raw') in inputs)
    if args.child:
        if args.bag:
            child_bag(args.child == 'profile', args.frames, args.bag, args.topics or [])
        else:
            child(args.child == 'profile', args.frames, args.rate, cases)
        return 0
    bag_args = ['--bag', args.bag, *(['--topics', *args.topics] if args.topics else [])] \
        if args.bag else []
    rows = []
    for mode in args.transports.split(','):
        proc = subprocess.run([sys.executable, __file__, '--child', mode, '--frames',
                               str(args.frames), '--rate', str(args.rate), '--inputs',
                               args.inputs, *bag_args], env=environment(mode == 'profile'),
                              capture_output=True, text=True)
        rows += [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{')]
        if proc.returncode:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return proc.returncode
    print(f"{'transport':<26} {'input':>19} {'answered':>9} {'RTT p50':>8} {'RTT p99':>8} "
          f"{'floor':>8} {'in-proc':>8} {'ROS adds':>9} {'over floor':>10}  (ms)  node counters")
    for r in rows:
        print(f"{r['transport']:<26} {r['input']:>19} {r.get('answered', r.get('delivered')):>9} "
              f"{r['roundtrip_p50_ms'] or '-':>8} {r['roundtrip_p99_ms'] or '-':>8} "
              f"{r.get('floor_p50_ms') or '-':>8} {r['in_process_ms'] or '-':>8} "
              f"{r.get('ros_adds_ms', '-'):>9} {r.get('over_floor_ms', '-'):>10}  "
              f"{r.get('node_counters', r['breakdown_p50_ms'])}")
    if args.json:
        from yolo_trt_ros.benchmarks.stages import machine_info
        Path(args.json).write_text(json.dumps(
            {'machine': machine_info(), 'frames': args.frames, 'rate_hz': args.rate,
             'warm_up_frames': 20, **METHOD,
             # LOCALHOST: rmw_fastrtps sets the transports itself, over the profile's
             'discovery_range': os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE'),
             'results': rows}, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
