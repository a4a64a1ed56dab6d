"""Capacity: can one `detect.launch.py` keep up with N cameras at F fps?

    python bench/capacity.py [--cameras 8] [--fps 30] [--size 1920x1080] [--seconds 20]
                             [--compressed] [--workers N|auto] [--devices all|0,1]
                             [--phase synced|spread]
    python bench/capacity.py --bag BAG [--topics T ...] [--seconds 20] [--workers N|auto]

With --bag, one publisher process replays the bag's camera frames (every Image or every
CompressedImage topic, or those named) as recorded, at the recorded rate and looped for
--seconds, instead of synthetic frames: a measurement on your own data.

Publisher processes send N streams (bgr8 Images, or JPEG q90 CompressedImages with
--compressed; each on its own topic, paced to F fps) to the nodes `yolo-trt launch` starts
(the same as detect.launch.py: engine_builder, then `workers` detector processes that split
the cameras), each batching the newest frame of its cameras into one inference call.
Inference is taken out (bench/common.py `inference`): on a GPU the TensorRT backend runs
the stand-in engine (yolo_trt_ros/testing/gpu_standin.py), so upload or GPU JPEG decode,
the preprocessing kernel, GPU output decode, download and publishing all run for real; elsewhere the
null-inference model on ONNX Runtime. Counts come from the nodes' own diagnostics.

The figures are of a measured window, after a start outside it: the publishers send one
frame per camera every half second until every camera has reached the node (both sides of
each subscription matched, so none of the window's frames is lost to discovery), then
stop; once the node has reported after the last of those, its counters are read and the
window of --seconds at --fps starts. What the start sent and lost is kept apart in the
JSON (`before_window`). In the window the publisher processes send all at once (`--phase
synced`, the default: cameras on one hardware trigger, the hardest case for one receiving
process, since every camera's frame arrives in the same few milliseconds) or at evenly
spread times of the period (`--phase spread`: free-running cameras).
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import camera_jpeg, environment, inference, spin_while, stop, workdir

from yolo_trt_ros.core.dds import PROFILE_VARIABLES, with_profile
from yolo_trt_ros.core.defaults import DDS_PROFILE, DDS_PROFILES
from yolo_trt_ros.core.serving.health import rmem_max
from yolo_trt_ros.launch_args import fastdds_profile, shm_port_queue

# Why frames were lost before the node, as its diagnostics count them: the QoS event, gaps
# in a publisher's sequence numbers it did not report, frames sent before the match.
LOSS_CAUSES = ('lost_in_dds', 'replaced_in_queue', 'unmatched')
COUNTERS = ('frames_in', 'processed', 'dropped', *LOSS_CAUSES)
# The publisher processes' phases in the window: 'synced' sends every camera's frame at
# once (cameras on one trigger: raw 1080p frames of 8 cameras arrive as one 50 MB burst),
# 'spread' staggers the processes evenly over the period (free-running cameras). Runs
# before the window existed had the phases their processes' start-up gave them.
PHASES = ('synced', 'spread')
START_TIMEOUT = 180  # s for the launch (engine build and warm-up included) and the start


def linger(node) -> None:
    """Best effort has no acknowledgements: a publisher that exits right after its last
    frame can take the frames still in flight with it (the last 1-3 frames of a run missing,
    with no gap in the sequence numbers for the node to count). Stay a second."""
    spin_while(node, lambda: True, 1.0)


PRIME_PERIOD = 0.5  # s between a publisher's start frames (one per camera each time)


def bench_orders() -> queue.Queue:
    """The bench's orders on stdin ('hold', 'go'), read by a thread so that the start's
    frames go on while none has come."""
    orders: queue.Queue = queue.Queue()

    def read() -> None:
        for line in sys.stdin:
            orders.put(line.strip())
        orders.put('eof')

    threading.Thread(target=read, daemon=True).start()
    return orders


def start_phase(send_one_each: Callable[[], int]) -> None:
    """Send one frame per camera every PRIME_PERIOD until the bench says hold; say how
    many were sent; wait for its go."""
    orders, sent = bench_orders(), 0
    while True:
        sent += send_one_each()
        try:
            order = orders.get(timeout=PRIME_PERIOD)  # the bench's order, or the next frame
            break
        except queue.Empty:
            continue
    if order == 'hold':
        print(json.dumps({'start_sent': sent}), flush=True)
        order = orders.get(timeout=120)
    if order != 'go':
        raise SystemExit(f'capacity.py publisher: the bench said {order!r}, not go')


class PublisherProcess:
    """A publisher process and what it says: its stdout lines are read by a thread, so
    the bench waits for a report with a deadline and learns at once that it ended."""

    def __init__(self, command: list[str], env: dict) -> None:
        import subprocess

        self.proc = subprocess.Popen(command, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def tell(self, order: str) -> None:
        try:
            self.proc.stdin.write(order + '\n')
            self.proc.stdin.flush()
        except OSError:
            raise SystemExit(f'capacity.py: a publisher ended (exit {self.proc.wait()}) '
                             f'before the bench said {order}') from None

    def report(self, key: str, timeout: float) -> dict:
        """Its next JSON object holding key (other lines, such as a log's, are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise SystemExit(f'capacity.py: a publisher said no {key} in {timeout:g} s') \
                    from None
            if line is None:
                raise SystemExit(f'capacity.py: a publisher ended (exit {self.proc.wait()}) '
                                 f'before it said {key}')
            try:
                said = json.loads(line)
            except ValueError:
                continue
            if isinstance(said, dict) and key in said:
                return said

    def kill(self) -> bool:
        """End it; whether it was still running."""
        running = self.proc.poll() is None
        if running:
            self.proc.kill()
        self.proc.wait()
        return running


def publisher(topics: list[str], fps: float, h: int, w: int, seconds: float,
              compressed: bool, offset: float) -> None:
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage, Image

    from yolo_trt_ros.ros.image_source_node import to_message

    rclpy.init()
    node = Node(f'capacity_pub_{os.getpid()}')
    if compressed:
        pubs = [node.create_publisher(CompressedImage, f'{t}/compressed',
                                      qos_profile_sensor_data) for t in topics]
        msg = CompressedImage(format='jpeg', data=camera_jpeg(h, w))
    else:
        pubs = [node.create_publisher(Image, t, qos_profile_sensor_data) for t in topics]
        msg = to_message(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8),
                         'bgr8')
    spin_while(node, lambda: any(p.get_subscription_count() == 0 for p in pubs), 30)

    def send_one_each() -> int:
        msg.header.stamp = node.get_clock().now().to_msg()
        for p in pubs:
            p.publish(msg)
        return len(pubs)

    start_phase(send_one_each)
    period, start = 1.0 / fps, time.perf_counter() + offset  # this process's phase
    frame, caught_up, last = 0, 0, None
    time.sleep(offset)  # pacing a load generator, as below
    while time.perf_counter() - start < seconds:
        msg.header.stamp = node.get_clock().now().to_msg()
        sent = time.perf_counter()
        for p in pubs:
            p.publish(msg)
        # The schedule is fixed: after a stall of this process the frames it is late for
        # go out back to back, and two of a camera's frames that close may replace each
        # other in the node's queue (replaced_in_queue). Counted, to compare with it.
        caught_up += last is not None and sent - last < period / 2
        frame, last = frame + 1, sent
        delay = start + frame * period - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # pacing a load generator, not waiting for a result
    linger(node)
    print(json.dumps({'published_per_camera': frame, 'caught_up_per_camera': caught_up}),
          flush=True)
    rclpy.shutdown()


def bag_publisher(bag: str, topics: list[str], seconds: float) -> None:
    """Publish the bag's frames (their recorded bytes: rclpy takes serialized messages) at
    the recorded rate."""
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage, Image

    from yolo_trt_ros.bags.replay import frames, survey

    rclpy.init()
    node = Node(f'capacity_bag_{os.getpid()}')
    pubs = {cam.topic: node.create_publisher(CompressedImage if cam.compressed else Image,
                                             cam.topic, qos_profile_sensor_data)
            for cam in survey(Path(bag), topics).cameras}
    spin_while(node, lambda: any(p.get_subscription_count() == 0 for p in pubs.values()), 30)
    first = {}  # each camera's first recorded frame, for the start
    for cam, _, data in frames(Path(bag), topics, loop_s=seconds):
        first.setdefault(cam.topic, data)
        if len(first) == len(pubs):
            break

    def send_one_each() -> int:
        for topic, data in first.items():
            pubs[topic].publish(data)
        return len(first)

    start_phase(send_one_each)
    published, start = 0, time.perf_counter()
    for cam, due, data in frames(Path(bag), topics, loop_s=seconds):
        delay = start + due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # pacing a load generator to the recording, not waiting
        pubs[cam.topic].publish(data)
        published += 1
    linger(node)
    print(json.dumps({'published': published}), flush=True)
    rclpy.shutdown()


def bag_plan(args) -> tuple[list[str], list[str], bool, str]:
    """(the detector's image topics, the bag's topics, compressed, size) for --bag; sets
    --cameras and --fps from the recording."""
    from yolo_trt_ros.bags.replay import survey

    rec = survey(Path(args.bag), args.topics or ())
    kinds = {cam.compressed for cam in rec.cameras}
    if len(kinds) > 1:
        raise SystemExit('capacity.py: the bag has Image and CompressedImage topics; the '
                         'detector takes one kind: choose with --topics')
    compressed = kinds.pop()
    args.cameras, args.fps = len(rec.cameras), round(rec.fps, 1)
    bag_topics = [cam.topic for cam in rec.cameras]
    node_topics = [t.removesuffix('/compressed') if compressed else t for t in bag_topics]
    return node_topics, bag_topics, compressed, rec.size or 'recorded'


def start(node, pubs: list[PublisherProcess], cameras: int, counts, arrived: dict,
          where: str) -> tuple[int, dict]:
    """The run's start, outside the window: wait until every camera has reached the node,
    have the publishers hold, and wait until the node has reported idle after their last
    start frame. (frames the start sent, the node's counters then)."""
    def reached() -> bool:
        have = counts()
        return len(have) >= cameras and all(c['frames_in'] for c in have.values())

    if not spin_while(node, lambda: not reached(), START_TIMEOUT, 0.1):
        raise SystemExit(f'capacity.py: not every camera reached the node in {START_TIMEOUT} '
                         f's (reports of {sorted(counts())}); {where}')
    for p in pubs:
        p.tell('hold')
    sent = sum(p.report('start_sent', 30)['start_sent'] for p in pubs)
    held = time.monotonic()

    def settled() -> bool:  # every camera's report made after the last frame's way, idle
        have = counts()
        return all(arrived[name] > held + PRIME_PERIOD and
                   c['frames_in'] == c['processed'] + c['dropped'] for name, c in have.items())

    if not spin_while(node, lambda: not settled(), 15, 0.1):
        raise SystemExit(f'capacity.py: the node did not report idle within 15 s of the '
                         f'start ({counts()}); {where}')
    return sent, counts()


def main() -> int:
    import subprocess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cameras', type=int, default=8)
    parser.add_argument('--fps', type=float, default=30.0)
    parser.add_argument('--size', default='1920x1080')
    parser.add_argument('--seconds', type=float, default=20.0)
    parser.add_argument('--publishers', type=int, default=0, help='processes (default: auto)')
    parser.add_argument('--compressed', action='store_true', help='JPEG CompressedImages')
    parser.add_argument('--phase', choices=PHASES, default='synced',
                        help="the publisher processes' frame times: at once (cameras on one "
                             "trigger, the default: the hardest) or spread over the period "
                             "(free-running cameras)")
    parser.add_argument('--workers', default='1', help='detector processes: N or auto')
    parser.add_argument('--devices', help="the launch's devices (default: its own, all)")
    parser.add_argument('--dds-profile', choices=sorted(DDS_PROFILES), default=DDS_PROFILE,
                        help="the Fast DDS profile of the publishers and the launch's "
                             "dds_profile (default: the launch's own)")
    parser.add_argument('--qos-depth', type=int, help="the detector's qos_depth (default: its own)")
    parser.add_argument('--json')
    parser.add_argument('--bag', help='replay this bag\'s camera frames at the recorded rate')
    parser.add_argument('--topics', nargs='+', help='the bag\'s image topics (default: all)')
    parser.add_argument('--publish', nargs='*', help=argparse.SUPPRESS)
    parser.add_argument('--publish-bag', help=argparse.SUPPRESS)
    parser.add_argument('--offset', type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish_bag:
        bag_publisher(args.publish_bag, args.topics or [], args.seconds)
        return 0
    w, h = (int(v) for v in args.size.split('x'))
    if args.publish is not None:
        publisher(args.publish, args.fps, h, w, args.seconds, args.compressed, args.offset)
        return 0
    if args.bag:
        topics, bag_topics, args.compressed, args.size = bag_plan(args)
    n_pub = args.publishers or max(1, min(args.cameras, (os.cpu_count() or 2) // 2))
    if args.phase == 'spread' and not args.bag and n_pub < args.cameras:
        raise SystemExit(f'capacity.py: --phase spread staggers publisher processes, and '
                         f'{n_pub} for {args.cameras} cameras would send some at once: '
                         f'--publishers {args.cameras}')

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node

    tmp = workdir()
    env = with_profile(environment(profile=False), str(fastdds_profile(args.dds_profile)))
    os.environ.update({k: v for k, v in env.items() if k in PROFILE_VARIABLES})
    if not args.bag:
        topics = [f'cam{i}/image' for i in range(args.cameras)]
    params, extra_env = inference(tmp, max_batch=args.cameras)
    env.update(extra_env)
    params_file = tmp / 'params.yaml'
    params_file.write_text(json.dumps({'/**/detector': {'ros__parameters': {
        'engine_path': params.get('engine_path', ''), 'publish_annotated': False}}}))
    det = subprocess.Popen(
        [sys.executable, '-m', 'yolo_trt_ros.cli', 'launch', f"model:={params['model']}",
         f"backend:={params['backend']}", f"image_topic:={','.join(topics)}",
         f'compressed:={str(args.compressed).lower()}', f'workers:={args.workers}',
         f'params_file:={params_file}', f'cache_dir:={tmp / "cache"}',
         f'dds_profile:={args.dds_profile}',
         *([f'qos_depth:={args.qos_depth}'] if args.qos_depth else []),
         *([f'devices:={args.devices}'] if args.devices else [])],
        env=env, stdout=open(tmp / 'launch.log', 'w'), stderr=subprocess.STDOUT)
    rclpy.init()
    node = Node('capacity_bench')
    latest: dict[str, object] = {}  # camera -> its newest status (several workers publish)
    arrived: dict[str, float] = {}  # camera -> when its newest status came

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if any(kv.key == 'frames_in' for kv in status.values):  # a detector's camera
                latest[status.name], arrived[status.name] = status, time.monotonic()

    def counts() -> dict[str, dict[str, int]]:  # each camera's counters since the node began
        return {name: {k: int(v) for k, v in ((kv.key, kv.value) for kv in status.values)
                       if k in COUNTERS} for name, status in latest.items()}

    node.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, 10)
    if args.bag:  # one process keeps the cameras' recorded timing relative to each other
        n_pub, groups = 1, [topics]
        commands = [[sys.executable, __file__, '--publish-bag', args.bag, '--seconds',
                     str(args.seconds), '--topics', *bag_topics]]
    else:
        groups = [topics[i::n_pub] for i in range(n_pub)]
        flags = ['--compressed'] if args.compressed else []
        commands = [[sys.executable, __file__, '--fps', str(args.fps), '--size', args.size,
                     '--seconds', str(args.seconds), *flags, '--offset',
                     str(i / n_pub / args.fps if args.phase == 'spread' else 0.0),
                     '--publish', *g] for i, g in enumerate(groups)]
    pubs: list[PublisherProcess] = []
    try:
        pubs += [PublisherProcess(c, env) for c in commands]
        start_sent, before = start(node, pubs, len(topics), counts, arrived,
                                   f'see {tmp / "launch.log"}')
        for p in pubs:
            p.tell('go')
        spin_while(node, lambda: any(p.proc.poll() is None for p in pubs), args.seconds + 40,
                   0.1)
        spin_while(node, lambda: True, 3, 0.1)
        key = 'published' if args.bag else 'published_per_camera'
        reports = [p.report(key, 10) for p in pubs]
    finally:
        # a publisher that reported and still runs is stuck in rclpy's shutdown (seen on
        # the GPU host): its frames are counted, so it is ended and said, not a failure
        ended = [p.kill() for p in pubs]
        stop(det)
    lingering = sum(ended)
    if any(p.proc.returncode and not by_us for p, by_us in zip(pubs, ended, strict=True)):
        raise SystemExit(f'capacity.py: publishers exited {[p.proc.returncode for p in pubs]}')
    published = sum(r.get('published', r.get('published_per_camera', 0) * len(g))
                    for r, g in zip(reports, groups, strict=True))
    after = counts()
    cams = []
    for name, status in sorted(latest.items()):
        v = {kv.key: kv.value for kv in status.values}
        # The window's counts: the counters at the end less those after the start. The node
        # splits a loss between causes anew each report (a loss DDS reports late moves a
        # frame from one cause to another), so a cause's difference can come out below 0:
        # counted as 0; lost_before_node (published - received) is exact.
        window = {k: max(after[name].get(k, 0) - before.get(name, {}).get(k, 0), 0)
                  for k in COUNTERS}
        cams.append({'camera': name, 'frames_in': window['frames_in'],
                     'processed': window['processed'], 'dropped': window['dropped'],
                     **{cause: window[cause] for cause in LOSS_CAUSES},
                     'latency_p50_ms': float(v.get('latency_ms.p50', 'nan')),
                     'latency_p99_ms': float(v.get('latency_ms.p99', 'nan')),
                     'queue_p50_ms': float(v.get('queue_ms.p50', 'nan'))})
    total_in = sum(c['frames_in'] for c in cams)
    log = (tmp / 'launch.log').read_text()
    result = {'cameras': args.cameras, 'fps': args.fps, 'size': args.size,
              **({'qos_depth': args.qos_depth} if args.qos_depth else {}),
              **({'devices': args.devices} if args.devices else {}),
              'seconds': args.seconds, 'compressed': args.compressed, 'workers': args.workers,
              **({} if args.bag else {'phase': args.phase}),
              # what decides a loss in DDS: the profile, its shared-memory port queue, and
              # the kernel's cap on a UDP receive buffer
              'dds': {'profile': args.dds_profile, 'shm_port_queue': shm_port_queue(
                  args.dds_profile), 'rmem_max': rmem_max(),
                  # LOCALHOST: rmw_fastrtps sets the transports itself, over the profile's
                  'discovery_range': os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE')},
              **({'bag': Path(args.bag).name} if args.bag else {}),
              'backend': [line.split(']: backend ', 1)[1][:160] for line in log.splitlines()
                          if ']: backend ' in line][:1],
              'publisher_processes': n_pub, 'published': published,
              **({'publishers_ended_after_report': lingering} if lingering else {}),
              # frames each camera sent within half a period of its previous one (catching
              # up after a stall of its publisher process), all cameras together
              'publisher_caught_up': sum(r.get('caught_up_per_camera', 0) * len(g)
                                         for r, g in zip(reports, groups, strict=True)),
              'received': total_in, 'processed': sum(c['processed'] for c in cams),
              'dropped_in_node': sum(c['dropped'] for c in cams),
              'lost_before_node': published - total_in,
              # the start, outside the window: frames sent until every camera had reached
              # the node, and what the node counted of them (frames sent before it matched
              # the publisher among them)
              'before_window': {'published': start_sent, **{
                  k: sum(c.get(k, 0) for c in before.values()) for k in COUNTERS}},
              # of which, by the cause the node counted
              **{cause: sum(c[cause] for c in cams) for cause in LOSS_CAUSES},
              'processed_fps': round(sum(c['processed'] for c in cams) / args.seconds, 1),
              'latency_p99_ms_worst': max((c['latency_p99_ms'] for c in cams), default=None),
              # each detector's own account when it stopped: its batch steps and the
              # collector's pauses, CUDA graphs, frame buffers (yolo_trt_ros/ros/detector_node)
              'node_accounts': [line.split(']: ', 1)[1] for line in log.splitlines()
                                if any(f']: {what}' in line for what in (
                                    'worker: ', 'frame buffers: ', 'garbage collector: '))],
              # every warning and error the nodes logged (the first 50): a reason the
              # counters alone do not give (a failing take, refused memory)
              'node_log': [line for line in log.splitlines()
                           if '[WARN]' in line or '[ERROR]' in line][:50],
              'per_camera': cams}
    print(json.dumps({k: v for k, v in result.items() if k != 'per_camera'}, indent=1))
    for c in cams:
        print(c)
    if args.json:
        from yolo_trt_ros.benchmarks.stages import machine_info
        Path(args.json).write_text(json.dumps({'machine': machine_info(), 'result': result},
                                              indent=2))
    rclpy.shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
