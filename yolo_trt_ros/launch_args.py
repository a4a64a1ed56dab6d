"""The arguments of detect.launch.py and `yolo-trt launch`, in one place.

Both the launch file and the CLI read this module, so names and defaults cannot drift;
test_launch.py checks the launch file, the YAML and the nodes' parameters against it.
"""
from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from yolo_trt_ros.core import defaults
from yolo_trt_ros.core.defaults import check_choice
from yolo_trt_ros.core.errors import one_line
from yolo_trt_ros.core.files import TEXT_FILE_LIMIT, FileError, config_file, read_regular
from yolo_trt_ros.core.serving.config import (
    BUILD_PARAMETERS,
    BUILDER_PARAMETERS,
    DETECTOR_PARAMETERS,
    camera_names,
    namespace_error,
    per_camera,
    split_list,
    topic_name_error,
)

ALL_DEVICES = 'all'
# name -> (default, description). Values are strings, as launch arguments are.
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    'namespace': ('', 'namespace of both nodes; detections go out on <namespace>/detections'),
    'model': ('', 'ONNX model; empty: the default YOLOv3-tiny COCO model'),
    'image_topic': (defaults.IMAGE_TOPIC, 'camera image topic, relative to the namespace; '
                                          'several cameras: comma-separated'),
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
    'dds_profile': (defaults.DDS_PROFILE, 'Fast DDS profile of the nodes, unless '
                                          'FASTDDS_DEFAULT_PROFILES_FILE (Humble, Jazzy: '
                                          'FASTRTPS_DEFAULT_PROFILES_FILE) is set: large_frames '
                                          '(shared memory; cameras must use it too) or '
                                          'stock_cameras (UDP with a large receive buffer: '
                                          'best-effort cameras with stock settings)'),
    'workers': (defaults.WORKERS, 'detector processes that split the cameras and share the '
                                  'engine and the GPU: a number, or auto (one per camera, at '
                                  'most one per CPU core)'),
    'devices': (ALL_DEVICES, 'GPUs the detector processes run on, each with an engine built '
                             'for it: all (every GPU CUDA sees, as far as the workers reach) '
                             'or CUDA device indices, comma-separated (0,1); workers are '
                             'spread over them in contiguous groups'),
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
                          ('tracker', defaults.TRACKERS),
                          ('dds_profile', tuple(defaults.DDS_PROFILES))):
        _choice(name, values[name], choices)
    depth = values['qos_depth']
    _check('qos_depth', depth, depth.isdigit() and 1 <= int(depth) <= defaults.MAX_QOS_DEPTH,
           f'an integer in 1..{defaults.MAX_QOS_DEPTH}')
    _check('image_topic', values['image_topic'], bool(values['image_topic'].strip(' ,')),
           'a topic name (several: comma-separated)')
    # Names reach rcl as they are: one it refuses ended a node in an RCLError traceback.
    _check_names(values)
    if values['params_file']:
        params_document(values['params_file'])
    workers = values['workers']
    _check('workers', workers, workers == 'auto' or
           (workers.isdigit() and 1 <= int(workers) <= defaults.MAX_WORKERS),
           f'auto or an integer in 1..{defaults.MAX_WORKERS}')
    devices = values['devices']
    _check('devices', devices, devices == ALL_DEVICES or device_list(devices) is not None,
           f'{ALL_DEVICES} or GPU indices, comma-separated and each once (0,1)')
    cameras = len(split_list(values['image_topic']))
    for name in ('depth_topic', 'camera_info_topic'):
        try:
            per_camera(name, values[name], cameras)
        except ValueError as exc:
            raise ValueError(f"launch argument {str(exc).removeprefix('parameter ')}") from None


def _check_names(values: dict[str, str]) -> None:
    """namespace and every topic entry as rcl takes them (core/serving/config.py's rules);
    no {} substitutions: a value goes to the node as YAML, where {x} is a mapping."""
    ns = values['namespace'].strip('/')
    why = namespace_error(ns) if ns else None
    if why:
        raise ValueError(f"launch argument namespace: '{values['namespace']}' is not a "
                         f'namespace ({why}; letters, digits, _ and /, not starting with a '
                         'digit)')
    for name in ('image_topic', 'depth_topic', 'camera_info_topic'):
        entries = [t.strip() for t in values[name].split(',')] if values[name].strip() else []
        for topic in entries:
            if set(topic) & set('{}'):
                why = 'it has {}'
            elif name != 'image_topic':
                continue  # depth and camera_info entries' names are per_camera's (validate)
            else:
                why = topic_name_error(topic) if topic else 'an entry is empty'
            if why:
                raise ValueError(f"launch argument {name}: '{values[name]}' is not a topic "
                                 f'name per camera ({why}; letters, digits, _ and /, not '
                                 'starting with a digit)')


def params_document(path: str | Path) -> dict:
    """A parameter file's document: a mapping of node sections (nested namespaces
    allowed), each with a mapping under ros__parameters, as rcl reads it; ValueError in one
    line otherwise (rcl's own refusal was a traceback in each node)."""
    said = f'launch argument params_file: {path}'
    try:
        doc = yaml.safe_load(read_regular(path, TEXT_FILE_LIMIT, 'parameter file')) or {}
    except FileError as exc:
        raise ValueError(f'launch argument params_file: {exc}') from None
    except yaml.YAMLError as exc:
        raise ValueError(f'{said} is not YAML: {one_line(exc)}') from None

    def check(section: object, where: str) -> None:
        if not isinstance(section, dict):
            raise ValueError(f'{said}: {where or "the file"} is not a mapping of node sections '
                             '(node: {ros__parameters: {name: value}})')
        for key, value in section.items():
            if key == 'ros__parameters':
                if not isinstance(value, dict):
                    raise ValueError(f'{said}: {where}ros__parameters is not a mapping of '
                                     'names to values')
            else:
                check(value, f'{where}{key}: ')

    check(doc, '')
    return doc


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


def worker_note(image_topic: str, workers: str) -> str | None:
    """What the launch says where workers:=N asks for more processes than there are
    cameras: a worker serves whole cameras, so it starts one per camera (auto picks as
    many by design and is not said)."""
    cameras = len(split_list(image_topic))
    if workers == 'auto' or int(workers) <= cameras:
        return None
    return (f'workers:={workers} for {cameras} camera{"s" * (cameras != 1)}: starting '
            f'{cameras} detector process{"es" * (cameras != 1)} (a worker serves whole '
            f'cameras)')


def device_list(text: str) -> list[int] | None:
    """'0,1' -> [0, 1]; None where text is not distinct non-negative integers."""
    items = [item.strip() for item in text.split(',')]
    if not all(item.isdigit() for item in items) or len(set(map(int, items))) != len(items):
        return None
    return [int(item) for item in items]


def device_plan(devices: str, workers: int, visible: int, why: str = '') -> list[int | None]:
    """The CUDA device of each of `workers` detector processes (in worker_plan's order),
    spread in contiguous groups whose sizes differ by one at most. devices: the validated
    argument; visible: how many GPUs CUDA sees here (why: the reason where none). `all`
    uses the first min(visible, workers) GPUs, and [None] * workers where there is none
    (ONNX Runtime, or CUDA's default device, as without the argument). Indices are checked
    before any node starts: ValueError, one line, for a GPU that is not there or a GPU
    that no worker would use."""
    if devices == ALL_DEVICES:
        if visible == 0:
            return [None] * workers
        use = list(range(min(visible, workers)))
    else:
        use = device_list(devices) or []
        missing = [d for d in use if d >= visible]
        if missing:
            seen = (f'{visible} GPU{"s" if visible > 1 else ""}: '
                    f'{", ".join(map(str, range(visible)))}' if visible
                    else f'no GPU: {why or "none found"}')
            raise ValueError(f'launch argument devices: GPU {missing[0]} is not visible here '
                             f'({seen})')
        if len(use) > workers:
            raise ValueError(f'launch argument devices: {len(use)} GPUs ({devices}) for '
                             f'{workers} detector process{"es" if workers > 1 else ""}: each '
                             f'GPU needs a worker (workers:={len(use)} or more; a worker '
                             f'takes one camera at least)')
    return [use[i * len(use) // workers] for i in range(workers)]


def device_environment(device: int | None, visible_devices: str | None) -> dict[str, str]:
    """The environment that puts a node on CUDA device `device` (None: leave it as it is):
    CUDA_VISIBLE_DEVICES naming that one GPU, so the node's device 0 is it, and its engine
    cache key names it. visible_devices: this process's CUDA_VISIBLE_DEVICES, whose
    entries the indices count (they may be UUIDs)."""
    if device is None:
        return {}
    entries = visible_devices.split(',') if visible_devices else None
    return {'CUDA_VISIBLE_DEVICES': entries[device].strip() if entries else str(device)}


def visible_gpus() -> tuple[int, str]:
    """(how many GPUs CUDA sees, why none where 0)."""
    from yolo_trt_ros.core.gpu.cuda import probe_gpu

    gpu = probe_gpu()
    return gpu.count, gpu.reason


@dataclass(frozen=True)
class Process:
    """A node process of the launch: its node name, the parameters it is given beyond the
    shared ones, and the environment it needs beyond the launch's own."""

    name: str
    params: dict
    env: dict


def launch_plan(values: dict[str, str], own: dict,
                gpus: Callable[[], tuple[int, str]] = visible_gpus
                ) -> tuple[list[Process], list[Process]]:
    """(engine builders, detectors) of a launch: detect.launch.py and `yolo-trt launch`
    start exactly these. One builder per GPU used (each builds for its GPU; GPUs of one
    model share the engine, built once under the cache's lock), `engine_builder` where
    there is one. own: the detector section of the parameters file (workers get it
    explicitly). gpus is asked only where devices matter (several workers, or indices
    given). ValueError (one line) for devices that cannot be used."""
    plan = worker_plan(values['image_topic'], values['workers'],
                       names=str(own.get('camera_names', '')), depth=values['depth_topic'],
                       info=values['camera_info_topic'])
    devices: list[int | None] = [None] * len(plan)
    if values['devices'] != ALL_DEVICES or len(plan) > 1:
        devices = device_plan(values['devices'], len(plan), *gpus())
    visible = os.environ.get('CUDA_VISIBLE_DEVICES')
    used = list(dict.fromkeys(devices))
    builders = [Process('engine_builder' if len(used) == 1 else f'engine_builder_{d}', {},
                        device_environment(d, visible)) for d in used]
    detectors = [Process(w['name'], {**(own if len(plan) > 1 else {}),
                                     **{k: v for k, v in w.items() if k != 'name'}},
                         device_environment(d, visible))
                 for w, d in zip(plan, devices, strict=True)]
    return builders, detectors


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
    doc = params_document(params_file)
    merged: dict = {}
    for key, section in doc.items():
        if key in wanted and isinstance(section, dict):
            merged.update(section.get('ros__parameters') or {})
    return {k: v for k, v in merged.items() if k not in set(skip)}


def default_params_file() -> Path:
    return config_file('detector.yaml')


def fastdds_profile(name: str = defaults.DDS_PROFILE) -> Path:
    """The Fast DDS profile file of a dds_profile value."""
    return config_file(defaults.DDS_PROFILES[name])


SHM_PORT_QUEUE_DEFAULT = 512  # Fast DDS's, where a profile's SHM transport sets none


def shm_port_queue(name: str = defaults.DDS_PROFILE) -> int | None:
    """The shared-memory port queue (messages) a dds_profile gives the process that
    listens; None where the profile has no shared-memory transport."""
    import xml.etree.ElementTree as ET

    ns = {'p': 'http://www.eprosima.com'}
    for descriptor in ET.parse(fastdds_profile(name)).getroot().iterfind(
            './/p:transport_descriptor', ns):
        if descriptor.findtext('p:type', namespaces=ns) == 'SHM':
            return int(descriptor.findtext('p:port_queue_capacity', namespaces=ns)
                       or SHM_PORT_QUEUE_DEFAULT)
    return None
