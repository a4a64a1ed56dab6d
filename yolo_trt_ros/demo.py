"""`yolo-trt demo`: the main job end to end on any machine.

engine_builder -> detector (the pair of detect.launch.py, through `yolo-trt launch`'s
launcher), then image_source publishing the sample photos until `frames` results came
back. This process prints one line per frame as detections arrive (labels, scores,
latency from the image stamp) and saves the annotated images the detector publishes.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2

from yolo_trt_ros.core.defaults import BACKEND
from yolo_trt_ros.core.models import paths
from yolo_trt_ros.launcher import Launcher, param_args, parse_assignments


def run_demo(save_dir: Path, backend: str = BACKEND, frames: int = 4, rate: float = 2.0,
             timeout: float = 120.0) -> int:
    launcher = Launcher(parse_assignments([f'backend:={backend}']),
                        log=lambda m: print(m, file=sys.stderr))
    os.environ.update(launcher.env)  # this process's nodes: the launch's Fast DDS profile
    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    from yolo_trt_ros.core.image.buffers import to_bgr
    from yolo_trt_ros.ros.conversions import image_view

    rc = launcher.start()
    if rc != 0:
        launcher.stop()
        return rc
    source = None
    rclpy.init()
    try:
        node = Node('yolo_trt_demo')
        results: list[Detection2DArray] = []
        saved: list[Path] = []
        save_dir.mkdir(parents=True, exist_ok=True)

        # `frames` of each, no more: the two topics match and deliver independently (on
        # Jazzy the annotated images ran 5 ahead of the detections once in CI), and the
        # loop below waits for the slower one.
        def on_detections(msg: Detection2DArray) -> None:
            if len(results) >= frames:
                return
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            latency_ms = (time.time() - stamp) * 1e3
            found = ', '.join(f'{d.results[0].hypothesis.class_id} '
                              f'{d.results[0].hypothesis.score:.2f}' for d in msg.detections)
            results.append(msg)
            print(f'frame {len(results)} [{msg.header.frame_id}]: {len(msg.detections)} '
                  f'objects ({found or "none"}), latency {latency_ms:.0f} ms', flush=True)

        def on_annotated(msg: Image) -> None:
            if len(saved) >= frames:
                return
            path = save_dir / f'frame_{len(saved) + 1:03d}.jpg'
            cv2.imwrite(str(path), to_bgr(image_view(msg)))
            saved.append(path)

        node.create_subscription(Detection2DArray, 'detections', on_detections, 10)
        node.create_subscription(Image, 'detections_image', on_annotated, 10)
        ready = time.monotonic() + timeout
        while node.count_subscribers('image') == 0 or node.count_publishers('detections') == 0:
            exited = any(p.poll() is not None for p in launcher.detectors.values())
            if time.monotonic() > ready or exited:
                print('yolo-trt demo: the detector did not come up', file=sys.stderr)
                return 1
            rclpy.spin_once(node, timeout_sec=0.1)
        images = paths.data_home() / 'images'
        source = subprocess.Popen(
            [sys.executable, '-m', 'yolo_trt_ros.ros.image_source_node', '--ros-args',
             *param_args({'path': str(images), 'rate': float(rate),
                          'frame_id': 'demo_camera'})], env=launcher.env)
        deadline = time.monotonic() + timeout
        while len(results) < frames or len(saved) < frames:
            if time.monotonic() > deadline:
                print(f'yolo-trt demo: only {len(results)} of {frames} results within '
                      f'{timeout:.0f} s', file=sys.stderr)
                return 1
            rclpy.spin_once(node, timeout_sec=0.1)
        print(f'{len(saved)} annotated images in {save_dir}/')
        return 0
    finally:
        if source is not None and source.poll() is None:
            source.terminate()
            source.wait(5)
        launcher.stop()
        rclpy.try_shutdown()
