"""The arguments of detect.launch.py and `yolo-trt launch`, in one place.

Both the launch file and the CLI read this module, so names and defaults cannot drift;
test_launch.py checks the launch file, the YAML and the nodes' parameters against it.
"""
from __future__ import annotations

from pathlib import Path

from .core import defaults

# name -> (default, description). Values are strings, as launch arguments are.
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    'namespace': ('', 'namespace of both nodes; detections go out on <namespace>/detections'),
    'model': ('', 'ONNX model; empty: the default YOLOv3-tiny COCO model'),
    'image_topic': ('image', 'camera image topic; several cameras: comma-separated'),
    'compressed': ('false', 'subscribe to <image_topic>/compressed (CompressedImage)'),
    'precision': (defaults.PRECISION, f"engine precision: {', '.join(defaults.PRECISIONS)}"),
    'conf': (str(defaults.CONF_THRESHOLD), 'confidence threshold'),
    'iou': (str(defaults.IOU_THRESHOLD), 'NMS IoU threshold'),
    'backend': (defaults.BACKEND, ', '.join(defaults.BACKENDS)),
    'cache_dir': ('', 'engine cache directory; empty: ~/.cache/yolo_trt_ros/engines'),
    'publish_annotated': ('true', 'publish detections_image while someone subscribes'),
    'qos_reliability': (defaults.QOS_RELIABILITY, 'input QoS: auto (reliable when every '
                                                  'publisher is), reliable or best_effort'),
    'qos_depth': (str(defaults.QOS_DEPTH), 'input QoS history depth'),
    'params_file': ('', 'parameter YAML; empty: the installed config/detector.yaml'),
}

# node parameter -> launch argument that sets it
BUILDER_FROM_ARGS = {'model': 'model', 'precision': 'precision', 'backend': 'backend',
                     'cache_dir': 'cache_dir'}
DETECTOR_FROM_ARGS = {'model': 'model', 'precision': 'precision', 'backend': 'backend',
                      'cache_dir': 'cache_dir', 'image_topics': 'image_topic',
                      'compressed': 'compressed', 'conf_threshold': 'conf',
                      'iou_threshold': 'iou', 'publish_annotated': 'publish_annotated',
                      'qos_reliability': 'qos_reliability', 'qos_depth': 'qos_depth'}

# Python type of each node parameter set from a launch argument: launch arguments are
# strings, and an empty string must stay a string, not become YAML's null.
PARAM_TYPES = {'model': str, 'precision': str, 'backend': str, 'cache_dir': str,
               'image_topics': str, 'compressed': bool, 'conf_threshold': float,
               'iou_threshold': float, 'publish_annotated': bool, 'qos_reliability': str,
               'qos_depth': int}
MAX_QOS_DEPTH = 100
BOOLEANS = ('true', 'false')


def _check(name: str, value: str, ok: bool, accepted: str) -> None:
    if not ok:
        raise ValueError(f"launch argument {name}: '{value}' is not {accepted}")


def _is_fraction(text: str) -> bool:
    try:
        return 0.0 <= float(text) <= 1.0
    except ValueError:
        return False


def validate(values: dict[str, str]) -> None:
    """Check every launch argument before any node starts; ValueError names the argument,
    the value and what is accepted. detect.launch.py and `yolo-trt launch` both call it."""
    for name in ('compressed', 'publish_annotated'):
        _check(name, values[name], values[name].lower() in BOOLEANS, 'true or false')
    for name in ('conf', 'iou'):
        _check(name, values[name], _is_fraction(values[name]), 'a number in [0, 1]')
    for name, choices in (('precision', defaults.PRECISIONS), ('backend', defaults.BACKENDS),
                          ('qos_reliability', defaults.QOS_RELIABILITIES)):
        _check(name, values[name], values[name] in choices, ', '.join(choices))
    depth = values['qos_depth']
    _check('qos_depth', depth, depth.isdigit() and 1 <= int(depth) <= MAX_QOS_DEPTH,
           f'an integer in 1..{MAX_QOS_DEPTH}')
    _check('image_topic', values['image_topic'], bool(values['image_topic'].strip(' ,')),
           'a topic name (several: comma-separated)')


def _config_file(name: str) -> Path:
    """A file of config/: from the ament index where installed with colcon, else from the
    source tree (the pip route installs this package editable)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        try:
            return Path(get_package_share_directory('yolo_trt_ros')) / 'config' / name
        except (PackageNotFoundError, OSError):  # OSError: no AMENT_PREFIX_PATH at all
            pass
    except ImportError:
        pass
    return Path(__file__).resolve().parents[1] / 'config' / name


def default_params_file() -> Path:
    return _config_file('detector.yaml')


def fastdds_profile() -> Path:
    return _config_file('fastdds_large_frames.xml')
