"""Engine-build parameters that engine_builder and detector both declare.

The detector looks up the engine the builder made through the cache key, so both must
see the same build options: they read them with this one function, and config/detector.yaml
sets them once for both nodes (under `/**`).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
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


# A scalar given for an array parameter (`-p classes:=5`, the natural way to write one
# class) is taken as a one-element array.
_ARRAY_OF = {Parameter.Type.INTEGER_ARRAY: int, Parameter.Type.DOUBLE_ARRAY: float,
             Parameter.Type.STRING_ARRAY: str}


def type_name(value: object) -> str:
    """A parameter value's ROS type, as a user reads it (`-p x:=abc` is a string)."""
    return Parameter.Type.from_parameter_value(value).name.lower().replace('_', ' ')


def declare_parameters(node: Node, table: dict[str, tuple[object, str]],
                       runtime: frozenset[str] = frozenset()) -> dict:
    """Declare (name -> (default, description)) with descriptors; return the values.

    A default that is a Parameter.Type declares a typed parameter without a value (None
    when not given). A value of the wrong type raises ValueError naming the parameter,
    the value and the type accepted, instead of rclpy's traceback.
    """
    overrides = node._parameter_overrides  # rclpy has no public accessor (Humble..Kilted)
    for name, (default, description) in table.items():
        given = overrides.get(name)
        element = _ARRAY_OF.get(default) if isinstance(default, Parameter.Type) else None
        if given is not None and element is not None and type(given.value) is element:
            overrides[name] = Parameter(name, value=[given.value])
        try:
            node.declare_parameter(name, default, ParameterDescriptor(
                description=description, read_only=name not in runtime))
        except InvalidParameterTypeException:
            expected = default if isinstance(default, Parameter.Type) else \
                Parameter.Type.from_parameter_value(default)
            value = given.value if given is not None else default
            raise ValueError(f'parameter {name}: {value!r} is a {type_name(value)}, expected '
                             f"a {expected.name.lower().replace('_', ' ')} ({description})"
                             ) from None
    return {name: parameter_value(node, name) for name in table}


def parameter_value(node: Node, name: str) -> object:
    """The parameter's value; None for a typed parameter that was never given one."""
    try:
        return node.get_parameter(name).value
    except ParameterUninitializedException:
        return None


def unknown_overrides(node: Node, known: set[str]) -> list[str]:
    """Parameters given to the node (-p, YAML) that it does not declare, each with the
    closest declared name: a misspelling must not pass in silence. `known` holds the
    parameters of this package's other nodes (config/detector.yaml shares `/**`)."""
    declared = set(node._parameters)
    out = []
    for name in sorted(set(node._parameter_overrides) - declared - known):
        close = difflib.get_close_matches(name, sorted(declared), n=1)
        out.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ''))
    return out


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
    if not p['model'] and not model.is_file():
        raise ValueError(f'parameter model: not set, and the default model {model} is missing: '
                         f'run `yolo-trt fetch-assets` (or pass model:=<your.onnx>)')
    return BuildParams(model, p['backend'], options,
                       Path(p['cache_dir']) if p['cache_dir'] else None)
