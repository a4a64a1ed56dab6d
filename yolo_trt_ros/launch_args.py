"""The arguments of detect.launch.py and `yolo-trt launch`, in one place.

Both the launch file and the CLI read this module, so names and defaults cannot drift;
test_launch.py checks the launch file, the YAML and the nodes' parameters against it.
"""
from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path

import yaml

from yolo_trt_ros.core import defaults
from yolo_trt_ros.core.defaults import check_choice
from yolo_trt_ros.core.files import TEXT_FILE_LIMIT, read_regular
from yolo_trt_ros.core.serving.config import (
    BUILD_PARAMETERS,
    BUILDER_PARAMETERS,
    DETECTOR_PARAMETERS,
    camera_names,
    per_camera,
    split_list,
)

# name -> (default, description). Values are strings, as launch arguments are.
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    'namespace': ('', 'namespace of both nodes; detections go out on <namespace>/detections'),
    'model': ('', 'ONNX model; empty: the default YOLOv3-tiny COCO model'),
    'image_topic': (defaults.IMAGE_TOPIC, 'camera image topic; several cameras: comma-separated'),
    'compressed': (str(defaults.COMPRESSED).lower(), 'subscribe to <image_topic>/compressed '
                                                    '(CompressedImage)'),
    'precision': (defaults.PRECISION, f"engine precision: {', '.join(defaults.PRECISIONS)}"),
    'conf': (str(defaults.CONF_THRESHOLD), 'confidence threshold'),
    'iou': (str(defaults.IOU_THRESHOLD), 'NMS IoU threshold'),
    'backend': (defaults.BACKEND, ', '.join(defaults.BACKENDS)),
    'cache_dir': ('', 'engine cache directory; empty: ~/.cache/yolo_trt_ros/engines'),
    'publish_annotated': (str(defaults.PUBLISH_ANNOTATED).lower(), 'publish detections_image '
                                                                  'while someone subscribes'),
    'qos_reliability': (defaults.QOS_RELIABILITY, 'input QoS: auto (reliable when every '
                                                  'publisher is), reliable or best_effort'),
    'qos_depth': (str(defaults.QOS_DEPTH), 'input QoS history depth'),
    'tracker': (defaults.TRACKER, f"multi-object tracking: {', '.join(defaults.TRACKERS)} "
                                  '(the track id in Detection2D.id)'),
    'depth_topic': ('', 'aligned depth image (16UC1 mm or 32FC1 m) per camera, comma-separated '
                        'like image_topic; empty: no 3D (detections_3d)'),
    'camera_info_topic': ('', 'camera_info per camera, comma-separated; empty: <depth_topic '
                              'parent>/camera_info'),
    'params_file': ('', 'parameter YAML; empty: the installed config/detector.yaml'),
    'autostart': ('true', 'configure and activate the detector(s) at start; false: a '
                          'lifecycle manager does (the detector is a managed node)'),
    'workers': (defaults.WORKERS, 'detector processes that split the cameras and share the '
                                  'engine and the GPU: a number, or auto (one per camera, at '
                                  'most one per CPU core)'),
}

# node parameter -> launch argument that sets it
BUILDER_FROM_ARGS = {'model': 'model', 'precision': 'precision', 'backend': 'backend',
                     'cache_dir': 'cache_dir'}
DETECTOR_FROM_ARGS = {'model': 'model', 'precision': 'precision', 'backend': 'backend',
                      'cache_dir': 'cache_dir', 'image_topics': 'image_topic',
                      'compressed': 'compressed', 'conf_threshold': 'conf',
                      'iou_threshold': 'iou', 'publish_annotated': 'publish_annotated',
                      'qos_reliability': 'qos_reliability', 'qos_depth': 'qos_depth',
                      'tracker': 'tracker', 'depth_topics': 'depth_topic',
                      'camera_info_topics': 'camera_info_topic', 'autostart': 'autostart'}

# Python type of each node parameter set from a launch argument: launch arguments are
# strings, and an empty string must stay a string, not become YAML's null.
PARAM_TYPES = {'model': str, 'precision': str, 'backend': str, 'cache_dir': str,
               'image_topics': str, 'compressed': bool, 'conf_threshold': float,
               'iou_threshold': float, 'publish_annotated': bool, 'qos_reliability': str,
               'qos_depth': int, 'tracker': str, 'depth_topics': str, 'camera_info_topics': str,
               'autostart': bool}
BOOLEANS = ('true', 'false')
# What `ros2 launch --launch-prefix ...` adds to the arguments itself.
ROS2_LAUNCH_OWN = frozenset({'launch-prefix', 'launch-prefix-filter'})


def unknown_argument(name: str) -> str:
    """One line for a launch argument nobody declared: a node parameter given as one
    (`conf_threshold:=0.9`) is told its launch argument, or params_file where it has none;
    a misspelling (`cof:=0.3`) is told the closest argument."""
    to_arg = {**BUILDER_FROM_ARGS, **DETECTOR_FROM_ARGS}
    head = f"unknown launch argument '{name}'"
    if name in to_arg:
        return f"{head}: {name} is a node parameter; its launch argument is '{to_arg[name]}'"
    if name in {**BUILD_PARAMETERS, **BUILDER_PARAMETERS, **DETECTOR_PARAMETERS}:
        return (f'{head}: {name} is a node parameter without a launch argument; set it in a '
                f'params_file (see config/detector.yaml)')
    close = difflib.get_close_matches(name, LAUNCH_ARGUMENTS, n=1)
    return head + (f" (did you mean '{close[0]}'?)" if close
                   else f"; known: {', '.join(LAUNCH_ARGUMENTS)}")


def check_names(names: Iterable[str], also: Iterable[str] = ()) -> None:
    """ValueError (unknown_argument) for the first name that is neither a launch argument
    nor in also: `ros2 launch` passes any NAME:=VALUE on, so a typo would change nothing."""
    also = set(also)
    for name in names:
        if name not in LAUNCH_ARGUMENTS and name not in also:
            raise ValueError(unknown_argument(name))


def _check(name: str, value: str, ok: bool, accepted: str) -> None:
    if not ok:
        raise ValueError(f"launch argument {name}: '{value}' is not {accepted}")


def _choice(name: str, value: str, choices) -> None:
    check_choice(f'launch argument {name}', value, choices)


def _is_fraction(text: str) -> bool:
    try:
        return 0.0 <= float(text) <= 1.0
    except ValueError:
        return False


def validate(values: dict[str, str]) -> None:
    """Check every launch argument before any node starts; ValueError names the argument,
    the value and what is accepted. detect.launch.py and `yolo-trt launch` both call it."""
    for name in ('compressed', 'publish_annotated', 'autostart'):
        _check(name, values[name], values[name].lower() in BOOLEANS, 'true or false')
    for name in ('conf', 'iou'):
        _check(name, values[name], _is_fraction(values[name]), 'a number in [0, 1]')
    for name, choices in (('precision', defaults.PRECISIONS), ('backend', defaults.BACKENDS),
                          ('qos_reliability', defaults.QOS_RELIABILITIES),
                          ('tracker', defaults.TRACKERS)):
        _choice(name, values[name], choices)
    depth = values['qos_depth']
    _check('qos_depth', depth, depth.isdigit() and 1 <= int(depth) <= defaults.MAX_QOS_DEPTH,
           f'an integer in 1..{defaults.MAX_QOS_DEPTH}')
    _check('image_topic', values['image_topic'], bool(values['image_topic'].strip(' ,')),
           'a topic name (several: comma-separated)')
    workers = values['workers']
    _check('workers', workers, workers == 'auto' or
           (workers.isdigit() and 1 <= int(workers) <= defaults.MAX_WORKERS),
           f'auto or an integer in 1..{defaults.MAX_WORKERS}')
    cameras = len(split_list(values['image_topic']))
    for name in ('depth_topic', 'camera_info_topic'):
        try:
            per_camera(name, values[name], cameras)
        except ValueError as exc:
            raise ValueError(f"launch argument {str(exc).removeprefix('parameter ')}") from None


def worker_plan(image_topic: str, workers: str, cores: int | None = None,
                names: str = '', depth: str = '', info: str = '') -> list[dict]:
    """The detector processes to start: [{'name', 'image_topics', 'camera_names'}]. One
    worker keeps the plain `detector` node and its parameters as given. Several split the
    cameras into contiguous groups (sizes differing by one at most), each named
    detector_<i> and told its cameras' output prefixes explicitly, so every camera keeps
    the topics it has with one worker. names: the detector's camera_names parameter
    (comma-separated), if the parameters file sets one; depth, info: the depth_topic and
    camera_info_topic arguments (one entry per camera), split with the cameras."""
    topics = tuple(split_list(image_topic))
    wanted = min(len(topics), cores or os.cpu_count() or 1) if workers == 'auto' \
        else int(workers)
    count = max(1, min(wanted, len(topics)))
    if count == 1:
        return [{'name': 'detector'}]
    names = camera_names(topics, tuple(split_list(names)))
    bounds = [round(i * len(topics) / count) for i in range(count + 1)]
    lists = {'depth_topics': per_camera('depth_topic', depth, len(topics)),
             'camera_info_topics': per_camera('camera_info_topic', info, len(topics))}
    plan = []
    for i, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
        worker = {'name': f'detector_{i}', 'image_topics': ','.join(topics[lo:hi]),
                  'camera_names': ','.join(names[lo:hi])}
        worker.update({k: ','.join(v[lo:hi]) for k, v in lists.items() if any(v)})
        plan.append(worker)
    return plan


def node_section(params_file: str | Path, namespace: str = '', node: str = 'detector',
                 skip: Iterable[str] = ()) -> dict:
    """The parameters a YAML file sets for `node` in `namespace` by name (sections `node`,
    `/**/node`, `/*/node` or `/<namespace>/node`, as rcl matches them): what a worker
    renamed detector_<i> must be given explicitly. skip: keys a launch argument sets, so
    that the argument wins with N workers as it does with one."""
    ns = '/' + namespace.strip('/') if namespace.strip('/') else ''
    wanted = {node, f'/**/{node}', f'{ns}/{node}' if ns else f'/{node}'}
    if ns.count('/') == 1:
        wanted.add(f'/*/{node}')
    doc = yaml.safe_load(read_regular(params_file, TEXT_FILE_LIMIT, 'parameter file')) or {}
    merged: dict = {}
    for key, section in doc.items():
        if key in wanted and isinstance(section, dict):
            merged.update(section.get('ros__parameters') or {})
    return {k: v for k, v in merged.items() if k not in set(skip)}


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
