"""Engine-build parameters that engine_builder and detector both declare.

The detector looks up the engine the builder made through the cache key, so both must
see the same build options: they read them with this one function, and config/detector.yaml
sets them once for both nodes (under `/**`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from ..core import assets, defaults
from ..core.builder import BuildOptions, ShapeProfile

# Announcements a late subscriber must still get (engine, label_info).
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)

# name -> (default, description)
BUILD_PARAMETERS: dict[str, tuple[object, str]] = {
    'model': ('', 'ONNX model path; empty: the default YOLOv3-tiny COCO model'),
    'backend': (defaults.BACKEND, f"{', '.join(defaults.BACKENDS)} (onnxruntime needs no "
                                  'engine)'),
    'precision': (defaults.PRECISION, ', '.join(defaults.PRECISIONS)),
    'calib_dir': ('', 'directory of images for int8 calibration'),
    'cache_dir': ('', 'engine cache directory; empty: ~/.cache/yolo_trt_ros/engines'),
    'dynamic': ('', 'dynamic input profile MIN:OPT:MAX, each NxHxW; empty: static'),
    'workspace_mb': (0, 'builder workspace limit in MB; 0: TensorRT default'),
    'opt_level': (-1, 'builder optimisation level 0..5; -1: TensorRT default'),
    'simplify': (True, 'simplify the ONNX (onnxslim) before parsing'),
    'flavour': ('', 'tensorrt or tensorrt_rtx; empty: whichever is installed'),
}


@dataclass(frozen=True)
class BuildParams:
    model: Path
    backend: str
    options: BuildOptions
    cache_dir: Path | None


def declare_parameters(node: Node, table: dict[str, tuple[object, str]],
                       runtime: frozenset[str] = frozenset()) -> dict:
    """Declare (name -> (default, description)) with descriptors; return the values."""
    for name, (default, description) in table.items():
        node.declare_parameter(name, default, ParameterDescriptor(
            description=description, read_only=name not in runtime))
    return {name: node.get_parameter(name).value for name in table}


def read_build_params(node: Node) -> BuildParams:
    """Declare and validate the build parameters; ValueError names the one to change."""
    p = declare_parameters(node, BUILD_PARAMETERS)
    if p['backend'] not in defaults.BACKENDS:
        raise ValueError(f"parameter backend: '{p['backend']}' is not "
                         f"{', '.join(defaults.BACKENDS)}")
    options = BuildOptions(
        precision=p['precision'], calib_dir=Path(p['calib_dir']) if p['calib_dir'] else None,
        dynamic=ShapeProfile.parse(p['dynamic']) if p['dynamic'] else None,
        workspace_mb=p['workspace_mb'] or None,
        opt_level=None if p['opt_level'] < 0 else p['opt_level'], simplify=p['simplify'],
        flavour=p['flavour'] or None)
    model = Path(p['model']) if p['model'] else assets.default_model_path()
    return BuildParams(model, p['backend'], options,
                       Path(p['cache_dir']) if p['cache_dir'] else None)
