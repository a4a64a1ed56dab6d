"""image_source: publish images from a file, a folder or a video at a fixed rate.

For demos and tests: `image` (sensor_msgs/Image in the chosen encoding) or
`image/compressed` (CompressedImage, JPEG) with the current time as stamp and frame_id
from a parameter. Stops by itself after `count` frames (0: never).
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from yolo_trt_ros.core.defaults import check_choice
from yolo_trt_ros.core.errors import YoloTrtError
from yolo_trt_ros.core.image.sources import frames_from
from yolo_trt_ros.core.serving.params import Table, check_values, param
from yolo_trt_ros.ros.parameters import declare
from yolo_trt_ros.ros.runner import init

ENCODINGS = ('bgr8', 'rgb8', 'mono8', 'compressed')
PARAMETERS: Table = {
    'path': param('', 'an image file, a folder of images, or a video file'),
    'rate': param(10.0, 'frames per second'),
    'encoding': param('bgr8', f"{', '.join(ENCODINGS)} (compressed: JPEG on image/compressed)"),
    'frame_id': param('camera', 'header frame_id'),
    'loop': param(True, 'start again at the end'),
    'count': param(0, 'stop after this many frames; 0: never'),
    'reliable': param(True, 'reliable QoS (a best-effort subscriber still matches)'),
    'wait_for_subscriber': param(True, 'start publishing once a subscriber has matched'),
}


def to_message(bgr: np.ndarray, encoding: str) -> Image | CompressedImage:
    if encoding == 'compressed':
        ok, jpg = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        return CompressedImage(format='jpeg', data=jpg.tobytes())
    pixels = {'bgr8': lambda: bgr, 'rgb8': lambda: cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
              'mono8': lambda: cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)}[encoding]()
    pixels = np.ascontiguousarray(pixels)
    h, w = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=w * channels,
                 data=pixels.tobytes())


class ImageSourceNode(Node):
    def __init__(self) -> None:
        super().__init__('image_source')
        p = check_values(PARAMETERS, declare(self, PARAMETERS))
        check_choice('parameter encoding', p['encoding'], ENCODINGS)
        if p['rate'] <= 0:
            raise ValueError(f"parameter rate: {p['rate']} must be positive")
        if not p['path']:
            raise ValueError('parameter path: give an image file, folder or video')
        self.encoding, self.frame_id, self.count = p['encoding'], p['frame_id'], p['count']
        self.wait_for_subscriber = p['wait_for_subscriber']
        self.frames = frames_from(Path(p['path']), p['loop'])
        # Encode each distinct image once: a demo source should not cost more than a camera.
        self._cache: dict[int, Image | CompressedImage] = {}
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE if p['reliable']
                         else ReliabilityPolicy.BEST_EFFORT)
        compressed = self.encoding == 'compressed'
        self.pub = self.create_publisher(CompressedImage if compressed else Image,
                                         'image/compressed' if compressed else 'image', qos)
        self.sent = 0
        self.timer = self.create_timer(1.0 / p['rate'], self._tick)
        self.done = False

    def _tick(self) -> None:
        if self.wait_for_subscriber and self.sent == 0 and self.pub.get_subscription_count() == 0:
            return  # frames sent before anyone listens are lost: don't count them
        item = next(self.frames, None)
        if item is None or (self.count and self.sent >= self.count):
            self.done = True
            return
        index, frame = item
        msg = self._cache.get(index) if index is not None else None
        if msg is None:
            msg = to_message(frame, self.encoding)
            if index is not None and len(self._cache) < 64:
                self._cache[index] = msg
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.frame_id
        self.pub.publish(msg)
        self.sent += 1


def main(args=None) -> None:
    init(args)
    try:
        node = ImageSourceNode()
    except (ValueError, OSError, YoloTrtError) as exc:
        rclpy.logging.get_logger('image_source').error(str(exc))
        rclpy.try_shutdown()
        sys.exit(2)
    try:
        while rclpy.ok() and not node.done:
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
