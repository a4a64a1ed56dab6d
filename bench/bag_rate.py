"""`yolo-trt bag` throughput: frames per second over a recorded bag, as a user runs it.

    python bench/bag_rate.py [--frames 200] [--size 1920x1080] [--json out.json]

Writes bags of camera-like 1080p frames (the bus photo resized, as `yolo-trt bench`'s JPEG
rows) with rosbags, one per input kind (bgr8 Image, JPEG q90 CompressedImage; mcap; one
camera, and two cameras whose frames the bag command batches), then runs `yolo-trt bag` on
each with the default model and takes the rate it reports (model load excluded; reading,
decoding, inference, writing included) and the command's wall time.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import workdir

# (cameras, compressed)
CASES = ((1, False), (1, True), (2, True))


def write_bag(path: Path, frames: int, h: int, w: int, cameras: int, compressed: bool) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from yolo_trt_ros.benchmarks.stages import camera_frame

    store = get_typestore(Stores.ROS2_JAZZY)
    T = store.types
    pixels = camera_frame(h, w)
    jpeg = cv2.imencode('.jpg', pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].ravel()
    msgtype = 'sensor_msgs/msg/CompressedImage' if compressed else 'sensor_msgs/msg/Image'
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = [writer.add_connection(f'/cam{c}/image_raw' + ('/compressed' if compressed
                                                               else ''), msgtype,
                                       typestore=store) for c in range(cameras)]
        per_camera = frames // cameras
        for i in range(per_camera):
            for c, conn in enumerate(conns):
                t = 1_700_000_000_000_000_000 + i * 33_333_333 + c * 1000
                header = T['std_msgs/msg/Header'](
                    stamp=T['builtin_interfaces/msg/Time'](sec=t // 10**9, nanosec=t % 10**9),
                    frame_id=f'cam{c}')
                msg = (T[msgtype](header=header, format='jpeg', data=jpeg) if compressed else
                       T[msgtype](header=header, height=h, width=w, encoding='bgr8',
                                  is_bigendian=0, step=w * 3, data=pixels.reshape(-1)))
                writer.write(conn, t, store.serialize_cdr(msg, msgtype))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=200, help='frames per bag (all cameras)')
    parser.add_argument('--size', default='1920x1080')
    parser.add_argument('--json')
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split('x'))
    tmp = workdir()
    rows = []
    try:
        for cameras, compressed in CASES:
            bag = tmp / f'bag_{cameras}_{"jpeg" if compressed else "raw"}'
            write_bag(bag, args.frames, h, w, cameras, compressed)
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, '-m', 'yolo_trt_ros.cli', 'bag', str(bag),
                                   '--out', str(tmp / f'{bag.name}_out')],
                                  capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode:
                print(proc.stdout, proc.stderr, file=sys.stderr)
                return proc.returncode
            found = re.search(r'(\d+) frames from \d+ cameras? in ([\d.]+) s \(([\d.]+) frames/s\)',
                              proc.stdout)
            row = {'input': f'{w}x{h} {"JPEG q90" if compressed else "bgr8"}',
                   'cameras': cameras, 'frames': int(found[1]), 'storage': 'mcap',
                   'backend': proc.stderr.splitlines()[0].removeprefix('backend: '),
                   'run_s': float(found[2]), 'frames_per_s': float(found[3]),
                   'wall_s': round(wall, 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            shutil.rmtree(bag)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        from yolo_trt_ros.benchmarks.stages import machine_info
        Path(args.json).write_text(json.dumps({'machine': machine_info(), 'model': 'default '
                                               '(YOLOv3-tiny COCO 416)', 'results': rows},
                                              indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
