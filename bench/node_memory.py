"""What a detector process spends per frame beside the pipeline: page faults and CPU time,
with its frame memory kept for reuse (as shipped) and with glibc's defaults, in one run.

    python bench/node_memory.py [--cameras 8] [--fps 2] [--size 1920x1080] [--frames 100]
                                [--json out.json]

This process publishes N raw cameras (bgr8, reliable, pre-serialized, paced to F fps) to a
detector node (another process) and counts the answers; the node's minor page faults and
CPU time come from /proc/PID/stat over the measured frames (after 10 warm-up frames).
The node keeps its frame memory (core/serving/memory.py) unless the user set glibc's
tunables: the "glibc's defaults" row sets one that changes nothing
(glibc.malloc.tcache_count=7, glibc's default value), so the same code runs with malloc
left to itself. Inference is taken out (bench/common.py `inference`).
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    STAMP_NANOSEC,
    environment,
    inference,
    serialized_frame,
    spin_until_time,
    spin_while,
    start_node,
    stop,
    workdir,
)

from yolo_trt_ros.core.serving.memory import USER_SETTINGS

WARM = 10
NEUTRAL = 'glibc.malloc.tcache_count=7'  # glibc's default value: malloc as if unset
SETTINGS = (('kept for reuse (as shipped)', {}), ("glibc's defaults", {
    'GLIBC_TUNABLES': NEUTRAL}))


def proc_counters(pid: int) -> tuple[int, float]:
    """(minor page faults, CPU seconds) of a process so far."""
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return int(fields[7]), (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def measure(node, cameras: int, fps: float, h: int, w: int, frames: int, env: dict,
            params: dict, log: Path) -> dict:
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    topics = [f'memcam{i}' for i in range(cameras)]
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    pubs = [node.create_publisher(Image, f'{t}/image', qos) for t in topics]
    answered = [0]
    subs = [node.create_subscription(Detection2DArray, f'{t}/detections',
                                     lambda _m: answered.__setitem__(0, answered[0] + 1), 50)
            for t in topics]
    proc = start_node('yolo_trt_ros.ros.detector_node',
                      {**params, 'image_topics': ','.join(f'{t}/image' for t in topics),
                       'camera_names': ','.join(topics), 'publish_annotated': False},
                      env, log)
    frame = serialized_frame(h, w, False)
    try:
        if not spin_while(node, lambda: proc.poll() is None and any(
                p.get_subscription_count() == 0 for p in pubs), 60) or proc.poll() is not None:
            raise SystemExit(f'node_memory.py: the detector did not subscribe (see {log})')
        next_t = time.perf_counter()
        for i in range(1, WARM + frames + 1):
            if i == WARM + 1:  # the warm-up frames' answers in, then the counters
                spin_while(node, lambda: answered[0] < WARM * cameras, 2)
                faults0, cpu0, answered0 = *proc_counters(proc.pid), answered[0]
            struct.pack_into('<I', frame, STAMP_NANOSEC, i)
            data = bytes(frame)
            for pub in pubs:
                pub.publish(data)
            next_t += 1.0 / fps
            spin_until_time(node, next_t)
        spin_while(node, lambda: answered[0] < (WARM + frames) * cameras, 3)
        faults1, cpu1 = proc_counters(proc.pid)
        n = answered[0] - answered0
    finally:
        stop(proc)
        for pub in pubs:
            node.destroy_publisher(pub)
        for sub in subs:
            node.destroy_subscription(sub)
    return {'answered': f'{n}/{frames * cameras}',
            'page_faults_per_frame': round((faults1 - faults0) / max(n, 1)),
            'cpu_ms_per_frame': round((cpu1 - cpu0) * 1e3 / max(n, 1), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cameras', type=int, default=8)
    parser.add_argument('--fps', type=float, default=2.0)
    parser.add_argument('--size', default='1920x1080')
    parser.add_argument('--frames', type=int, default=100, help='measured frames per camera')
    parser.add_argument('--json')
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split('x'))
    import rclpy
    from rclpy.node import Node

    from yolo_trt_ros.benchmarks.stages import machine_info

    tmp = workdir()
    params, extra = inference(tmp, max_batch=args.cameras)
    base = {**environment(True), **extra}
    for name in USER_SETTINGS:  # the shipped row runs as the node would for a user
        base.pop(name, None)
    rclpy.init()
    node = Node('node_memory_bench')
    rows = []
    try:
        for setting, env in SETTINGS:
            rows.append({'setting': setting, **measure(
                node, args.cameras, args.fps, h, w, args.frames, {**base, **env}, params,
                tmp / f'node_{len(rows)}.log')})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        node.destroy_node()
        rclpy.shutdown()
    if args.json:
        Path(args.json).write_text(json.dumps(
            {'machine': machine_info(), 'cameras': args.cameras, 'fps': args.fps,
             'size': args.size, 'frames': args.frames, 'results': rows}, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
