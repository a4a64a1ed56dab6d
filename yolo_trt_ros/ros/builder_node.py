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

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import rclpy
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from std_msgs.msg import String

from ..core.builder import BuildResult, engine_for_backend
from ..core.errors import YoloTrtError
from .build_params import (
    LATCHED_QOS,
    BuildParams,
    declare_parameters,
    read_build_params,
    unknown_overrides,
)

# Beyond the shared build parameters (build_params.py).
PARAMETERS: dict[str, tuple[object, str]] = {
    'force': (False, 'rebuild even when the cache has the engine'),
    'linger_s': (10.0, 'seconds to wait for a subscriber to take the engine message'),
}


@dataclass(frozen=True)
class BuilderConfig:
    build: BuildParams
    force: bool
    linger_s: float


def read_config(node: Node) -> BuilderConfig:
    from .detector_node import PARAMETERS as DETECTOR_PARAMETERS  # a cycle at import time

    build = read_build_params(node)
    p = declare_parameters(node, PARAMETERS)
    unknown = unknown_overrides(node, set(DETECTOR_PARAMETERS))
    if unknown:
        node.get_logger().warn(f"parameters given but not known to engine_builder: "
                               f"{', '.join(unknown)}")
    return BuilderConfig(build, bool(p['force']), max(0.0, float(p['linger_s'])))


def announcement(model: Path, result: BuildResult | None) -> dict:
    if result is None:
        return {'engine_path': None, 'backend': 'onnxruntime', 'model': str(model)}
    return {'engine_path': str(result.engine_path), 'backend': 'tensorrt',
            'model': str(model), 'cache_hit': result.cache_hit,
            'seconds': round(result.seconds, 3), 'sidecar': result.sidecar}


class EngineBuilderNode(Node):
    def __init__(self) -> None:
        super().__init__('engine_builder')
        self.config = read_config(self)
        self.publisher = self.create_publisher(String, 'engine', LATCHED_QOS)

    def run(self) -> int:
        log = self.get_logger()
        build = self.config.build
        try:
            result = engine_for_backend(build.model, build.options, build.backend,
                                        build.cache_dir, self.config.force, log.info)
        except (YoloTrtError, ValueError) as exc:
            log.error(f'engine build failed: {exc}')
            return 1
        message = announcement(build.model, result)
        self.publisher.publish(String(data=json.dumps(message)))
        what = f"engine {message['engine_path']}" if message['engine_path'] else \
            'no engine (the detector runs ONNX Runtime)'
        log.info(f'published {what} on {self.publisher.topic_name}')
        self._linger()
        return 0

    def _linger(self) -> None:
        """Stay until a subscriber has acknowledged the message, or linger_s passed."""
        deadline = time.monotonic() + self.config.linger_s
        while time.monotonic() < deadline:
            if self.publisher.get_subscription_count() > 0 and \
                    self.publisher.wait_for_all_acked(Duration(seconds=1.0)):
                return
            time.sleep(0.05)


def main(args=None) -> None:
    rc = 0
    rclpy.init(args=args)
    try:
        node = EngineBuilderNode()
    except ValueError as exc:
        rclpy.logging.get_logger('engine_builder').error(f'bad parameter: {exc}')
        rclpy.try_shutdown()
        sys.exit(2)
    try:
        rc = node.run()
    except (KeyboardInterrupt, ExternalShutdownException):
        rc = 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    sys.exit(rc)


if __name__ == '__main__':
    main()
