"""Engine-build parameters that engine_builder and detector both declare.

The detector looks up the engine the builder made through the cache key, so both must
see the same build options: they read them with this one function, and config/detector.yaml
sets them once for both nodes (under `/**`).
"""
from __future__ import annotations

import array
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


_ARRAY_OF = {Parameter.Type.INTEGER_ARRAY: Parameter.Type.INTEGER,
             Parameter.Type.DOUBLE_ARRAY: Parameter.Type.DOUBLE,
             Parameter.Type.STRING_ARRAY: Parameter.Type.STRING}


def _type_of(value: object) -> Parameter.Type:
    return value if isinstance(value, Parameter.Type) else \
        Parameter.Type.from_parameter_value(value)


def _text(kind: Parameter.Type) -> str:
    """'a double', 'an integer array'."""
    words = kind.name.lower().replace('_', ' ')
    return ('an ' if words[0] in 'aeiou' else 'a ') + words


def checked_value(name: str, value: object, default: object) -> object:
    """`value` as the type of `default` (a value or a Parameter.Type): an integer is taken
    where a double is expected, and a single item where an array is (`classes:=5`, the
    natural way to write one class). Otherwise ValueError naming the parameter, the value
    and the type accepted: one line instead of rclpy's traceback or type error."""
    expected = _type_of(default)
    if value is None:
        return None  # a parameter without default that was never set
    given = _type_of(value)
    element = _ARRAY_OF.get(expected)
    if isinstance(value, (list, tuple, array.array)) and not value and element is not None:
        return []  # an empty list has no element type of its own
    if given == expected:
        return list(value) if element is not None else value
    if expected == Parameter.Type.DOUBLE and given == Parameter.Type.INTEGER:
        return float(value)
    if element is not None and given == element:
        return [value]
    raise ValueError(f'parameter {name}: {value!r} is {_text(given)}, expected '
                     f'{_text(expected)}' + (f' (or {_text(element)})' if element else ''))


def declare_parameters(node: Node, table: dict[str, tuple[object, str]],
                       runtime: frozenset[str] = frozenset()) -> dict:
    """Declare (name -> (default, description)) with descriptors; return the values.

    A default that is a Parameter.Type declares a parameter without a value (None when
    not given). Parameters changeable at run time are declared dynamically typed and
    checked by checked_value, at start-up and on every change, so that a wrong type
    gets our one-line message there too; the others are typed by rclpy, whose type
    error is turned into the same message.
    """
    for name, (default, description) in table.items():
        if name in runtime:
            node.declare_parameter(
                name, None if isinstance(default, Parameter.Type) else default,
                ParameterDescriptor(description=description, dynamic_typing=True))
            continue
        try:
            node.declare_parameter(name, default, ParameterDescriptor(
                description=description, read_only=True))
        except InvalidParameterTypeException:
            checked_value(name, node._parameter_overrides[name].value, default)  # raises
            raise  # not reached: the override had the wrong type
    return {name: checked_value(name, parameter_value(node, name), table[name][0])
            for name in table}


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
