"""engine_builder: build (or find in the cache) the TensorRT engine, announce it, exit.

Exit 0: an engine is ready, or none is needed (backend onnxruntime, or auto where no
TensorRT builder exists: the detector then runs ONNX Runtime). Exit 1: the build failed,
with the reason logged. Exit 2: a parameter is wrong.

The result goes out once as JSON on `engine` (std_msgs/String, reliable, transient local)
so that a detector or tool that subscribes later still gets it; the node lingers up to
`linger_s` for a subscriber to take it. The launch file orders the detector after this
node's exit and the detector finds the same engine through the cache, so nothing depends
on the message's timing.
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import rclpy
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import String

from yolo_trt_ros.core.build.builder import BuildResult, engine_for_backend
from yolo_trt_ros.core.errors import Cancelled, YoloTrtError
from yolo_trt_ros.core.serving.config import (
    BUILD_PARAMETERS,
    BUILDER_PARAMETERS,
    DETECTOR_PARAMETERS,
    BuilderConfig,
    builder_config,
)
from yolo_trt_ros.core.stopping import StopSignals
from yolo_trt_ros.ros.engine_topic import engine_message
from yolo_trt_ros.ros.log_bridge import route_to
from yolo_trt_ros.ros.parameters import LATCHED_QOS, declare, unknown_overrides
from yolo_trt_ros.ros.runner import init


def read_config(node: Node) -> BuilderConfig:
    given = {**declare(node, BUILD_PARAMETERS), **declare(node, BUILDER_PARAMETERS)}
    config = builder_config(given)
    unknown = unknown_overrides(node, set(DETECTOR_PARAMETERS))
    if unknown:
        node.get_logger().warning(f"parameters given but not known to engine_builder: "
                                  f"{', '.join(unknown)}")
    return config


def announcement(model: Path, result: BuildResult | None) -> dict:
    if result is None:
        return {'engine_path': None, 'backend': 'onnxruntime', 'model': str(model)}
    return {'engine_path': str(result.engine_path), 'backend': 'tensorrt',
            'model': str(model), 'cache_hit': result.cache_hit,
            'seconds': round(result.seconds, 3), 'sidecar': result.sidecar}


class EngineBuilderNode(Node):
    def __init__(self, cancel: threading.Event | None = None) -> None:
        super().__init__('engine_builder')
        route_to(self.get_logger())  # the build's progress, TensorRT's messages
        self.config = read_config(self)
        self.cancel = cancel or threading.Event()
        self.publisher = self.create_publisher(String, 'engine', LATCHED_QOS)

    def run(self) -> int:
        """0 with the engine announced; 1 when the build failed; Cancelled propagates."""
        log = self.get_logger()
        build = self.config.build
        try:
            result = engine_for_backend(build.model, build.options, build.backend,
                                        build.cache_dir, self.config.force, self.cancel)
        except Cancelled:
            raise
        except (YoloTrtError, ValueError) as exc:
            log.error(f'engine build failed: {exc}')
            return 1
        message = announcement(build.model, result)
        self.publisher.publish(engine_message(**message))
        what = f"engine {message['engine_path']}" if message['engine_path'] else \
            'no engine (the detector runs ONNX Runtime)'
        log.info(f'published {what} on {self.publisher.topic_name}')
        self._linger()
        return 0

    def _linger(self) -> None:
        """Stay until a subscriber has acknowledged the message, linger_s passed, or a
        signal asked to stop."""
        deadline = time.monotonic() + self.config.linger_s
        while time.monotonic() < deadline and not self.cancel.is_set():
            if self.publisher.get_subscription_count() > 0 and \
                    self.publisher.wait_for_all_acked(Duration(seconds=1.0)):
                return
            self.cancel.wait(0.05)


def main(args=None) -> None:
    """Exit 0 with an engine (or none needed), 1 when the build failed, 2 on a bad
    parameter, 128 + the signal's number when SIGINT or SIGTERM stopped it (a build stops
    at TensorRT's next progress step, within a second or two, and writes nothing)."""
    init(args, signal_handler_options=SignalHandlerOptions.NO)
    log = rclpy.logging.get_logger('engine_builder')
    with StopSignals() as stops:
        try:
            node = EngineBuilderNode(stops.cancel)
        except ValueError as exc:
            log.error(f'bad parameter: {exc}')
            rclpy.try_shutdown()
            sys.exit(2)
        try:
            rc = node.run()
        except Cancelled as exc:
            rc = 1  # replaced by the signal's code below
            log.error(f'engine build stopped by {stops.name}: {exc}; nothing was written')
        except ExternalShutdownException:
            rc = 130
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
        sys.exit(stops.exit_code(rc))


if __name__ == '__main__':
    main()
