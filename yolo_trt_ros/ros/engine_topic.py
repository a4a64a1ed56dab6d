"""The `engine` topic: std_msgs/String JSON naming the engine a builder made or a detector
loaded, transient local so that it outlives the builder's process."""
from __future__ import annotations

import json
import time
from pathlib import Path

import rclpy
from rclpy.node import Node
from std_msgs.msg import String

from yolo_trt_ros.ros.parameters import LATCHED_QOS


def announced_engine(node: Node, wait_s: float) -> Path | None:
    """The engine path a builder running separately announced within wait_s seconds; None
    when none came (logged) or the builder said ONNX Runtime."""
    got: list[String] = []
    sub = node.create_subscription(String, 'engine', got.append, LATCHED_QOS)
    deadline = time.monotonic() + wait_s
    while not got and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_subscription(sub)
    if not got:
        node.get_logger().warning(f'no engine message within {wait_s} s')
        return None
    path = json.loads(got[0].data).get('engine_path')
    return Path(path) if path else None


def engine_message(**fields) -> String:
    """The JSON String published on `engine`."""
    return String(data=json.dumps(fields))
