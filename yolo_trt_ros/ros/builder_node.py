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
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from ..core import assets
from ..core.builder import BuildOptions, BuildResult, ShapeProfile, engine_for_backend
from ..core.errors import YoloTrtError

ENGINE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)

# name -> (default, description); the launch file and config/ use exactly these keys.
PARAMETERS: dict[str, tuple[object, str]] = {
    'model': ('', 'ONNX model path; empty: the default YOLOv3-tiny COCO model'),
    'backend': ('auto', 'auto, tensorrt or onnxruntime (onnxruntime needs no engine)'),
    'precision': ('fp32', 'fp32, fp16 or int8'),
    'calib_dir': ('', 'directory of images for int8 calibration'),
    'cache_dir': ('', 'engine cache directory; empty: ~/.cache/yolo_trt_ros/engines'),
    'dynamic': ('', 'dynamic input profile MIN:OPT:MAX, each NxHxW; empty: static'),
    'workspace_mb': (0, 'builder workspace limit in MB; 0: TensorRT default'),
    'opt_level': (-1, 'builder optimisation level 0..5; -1: TensorRT default'),
    'simplify': (True, 'simplify the ONNX (onnxslim) before parsing'),
    'flavour': ('', 'tensorrt or tensorrt_rtx; empty: whichever is installed'),
    'force': (False, 'rebuild even when the cache has the engine'),
    'linger_s': (10.0, 'seconds to wait for a subscriber to take the engine message'),
}


@dataclass(frozen=True)
class BuilderConfig:
    model: Path
    backend: str
    options: BuildOptions
    cache_dir: Path | None
    force: bool
    linger_s: float


def read_config(node: Node) -> BuilderConfig:
    """Parameters -> a validated config; ValueError says which parameter to change."""
    for name, (default, description) in PARAMETERS.items():
        node.declare_parameter(name, default, ParameterDescriptor(description=description))
    p = {name: node.get_parameter(name).value for name in PARAMETERS}
    if p['backend'] not in ('auto', 'tensorrt', 'onnxruntime'):
        raise ValueError(f"parameter backend: '{p['backend']}' is not auto, tensorrt or "
                         f'onnxruntime')
    options = BuildOptions(
        precision=p['precision'], calib_dir=Path(p['calib_dir']) if p['calib_dir'] else None,
        dynamic=ShapeProfile.parse(p['dynamic']) if p['dynamic'] else None,
        workspace_mb=p['workspace_mb'] or None,
        opt_level=None if p['opt_level'] < 0 else p['opt_level'], simplify=p['simplify'],
        flavour=p['flavour'] or None)
    model = Path(p['model']) if p['model'] else assets.default_model_path()
    return BuilderConfig(model, p['backend'], options,
                         Path(p['cache_dir']) if p['cache_dir'] else None, p['force'],
                         max(0.0, float(p['linger_s'])))


def announcement(config: BuilderConfig, result: BuildResult | None) -> dict:
    if result is None:
        return {'engine_path': None, 'backend': 'onnxruntime', 'model': str(config.model)}
    return {'engine_path': str(result.engine_path), 'backend': 'tensorrt',
            'model': str(config.model), 'cache_hit': result.cache_hit,
            'seconds': round(result.seconds, 3), 'sidecar': result.sidecar}


class EngineBuilderNode(Node):
    def __init__(self) -> None:
        super().__init__('engine_builder')
        self.config = read_config(self)
        self.publisher = self.create_publisher(String, 'engine', ENGINE_QOS)

    def run(self) -> int:
        log = self.get_logger()
        try:
            result = engine_for_backend(self.config.model, self.config.options,
                                        self.config.backend, self.config.cache_dir,
                                        self.config.force, log.info)
        except (YoloTrtError, ValueError) as exc:
            log.error(f'engine build failed: {exc}')
            return 1
        message = announcement(self.config, result)
        self.publisher.publish(String(data=json.dumps(message)))
        log.info(f"published engine {message['engine_path']} on "
                 f'{self.publisher.topic_name}')
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
