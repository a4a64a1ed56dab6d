"""What the nodes are told: their parameter tables and the validated configuration.

engine_builder and detector both read the build parameters (the detector finds the engine
the builder made through the cache key, so both must see the same options), and
config/detector.yaml sets them once for both (under `/**`). Every check here raises
ValueError with one line naming the parameter, the value and what to change.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from yolo_trt_ros.core import defaults
from yolo_trt_ros.core.build.options import BuildOptions, ShapeProfile
from yolo_trt_ros.core.defaults import check_choice
from yolo_trt_ros.core.files import regular_file_problem
from yolo_trt_ros.core.models.paths import default_model_path
from yolo_trt_ros.core.pipeline import depth as depth_defaults
from yolo_trt_ros.core.pipeline.results import PostprocessConfig
from yolo_trt_ros.core.pipeline.tracking import GMC_METHODS, TrackerConfig, detection_floor
from yolo_trt_ros.core.runtime.detector import DetectorConfig
from yolo_trt_ros.core.serving.decoding import DECODE_TIMEOUT_S
from yolo_trt_ros.core.serving.params import Table, array_param, check_values, param

BUILD_PARAMETERS: Table = {
    'model': param('', 'ONNX model path; empty: the default YOLOv3-tiny COCO model'),
    'backend': param(defaults.BACKEND, f"{', '.join(defaults.BACKENDS)} (onnxruntime needs "
                                       'no engine)'),
    'precision': param(defaults.PRECISION, ', '.join(defaults.PRECISIONS)),
    'calib_dir': param('', 'directory of images for int8 calibration'),
    'cache_dir': param('', 'engine cache directory; empty: ~/.cache/yolo_trt_ros/engines'),
    'dynamic': param('', 'dynamic input profile MIN:OPT:MAX, each NxHxW; empty: static'),
    'workspace_mb': param(0, 'builder workspace limit in MB; 0: TensorRT default'),
    'opt_level': param(-1, 'builder optimisation level 0..5; -1: TensorRT default'),
    'simplify': param(True, 'simplify the ONNX (onnxslim) before parsing'),
    'flavour': param('', 'tensorrt or tensorrt_rtx; empty: whichever is installed'),
}

BUILDER_PARAMETERS: Table = {
    'force': param(False, 'rebuild even when the cache has the engine'),
    'linger_s': param(10.0, 'seconds to wait for a subscriber to take the engine message'),
}

_TRACK = TrackerConfig()
# Lists of topics and names are comma-separated strings: launch arguments and `-p name:=value`
# carry them as they are, and an empty list needs no special type.
DETECTOR_PARAMETERS: Table = {
    'autostart': param(True, 'configure and activate at start; false: wait for a lifecycle '
                             'manager (the detector is a managed node)'),
    'engine_path': param('', 'TensorRT engine; empty: the cached engine for the build '
                             'parameters'),
    'engine_wait_s': param(0.0, 'wait this long for an engine message on `engine` before '
                                'looking in the cache (a builder running separately)'),
    'labels_file': param('', 'class names (one a line, or YAML); empty: the model metadata'),
    'output_format': param(defaults.OUTPUT_FORMAT, ', '.join(defaults.OUTPUT_FORMAT_CHOICES)),
    'conf_threshold': param(defaults.CONF_THRESHOLD, 'confidence threshold (changeable at '
                                                     'run time)', runtime=True),
    'iou_threshold': param(defaults.IOU_THRESHOLD, 'NMS IoU threshold (changeable at run '
                                                   'time)', runtime=True),
    'max_detections': param(defaults.MAX_DETECTIONS, 'most detections per image (changeable '
                                                     'at run time)', runtime=True),
    'classes': array_param('integer', 'class ids to keep, e.g. [0, 2]; not set: all '
                                      '(changeable at run time)', runtime=True),
    'classes_by_name': array_param('string', 'class names to keep, e.g. [person, car]; '
                                             'added to classes (changeable at run time)',
                                   runtime=True),
    'agnostic_nms': param(False, 'class-agnostic NMS (changeable at run time)', runtime=True),
    'class_id_as_index': param(False, 'hypothesis class_id holds the class index, not the '
                                      'name'),
    'image_topics': param(defaults.IMAGE_TOPIC, 'camera topic(s), comma-separated; '
                                                'compressed: <topic>/compressed'),
    'camera_names': param('', 'output prefix per camera, comma-separated (several cameras); '
                              'empty: derived from the topics'),
    'compressed': param(defaults.COMPRESSED, 'subscribe to sensor_msgs/CompressedImage'),
    'qos_reliability': param(defaults.QOS_RELIABILITY, 'input QoS reliability (images, '
                                                       'depth, camera_info): auto (reliable '
                                                       'when every publisher is), reliable '
                                                       'or best_effort'),
    'qos_depth': param(defaults.QOS_DEPTH, 'input QoS history depth'),
    'publish_annotated': param(defaults.PUBLISH_ANNOTATED, 'publish detections_image (bgr8) '
                                                           'while someone subscribes'),
    'max_image_pixels': param(defaults.MAX_IMAGE_PIXELS, 'largest frame in pixels, read from '
                              'the header before decoding; larger frames are bad input '
                              '(too_large); the decoding-cost limits scale with it'),
    'decode_timeout_s': param(DECODE_TIMEOUT_S, 'a CompressedImage whose CPU decode takes '
                                                'longer is refused (too_slow)'),
    'cuda_graphs': param(True, "GPU path: replay each frame's GPU work as one CUDA graph "
                               '(off: stream-ordered launches; a capture that fails turns it '
                               'off by itself, logged once)'),
    'gpu_nms': param(True, 'GPU path: non-maximum suppression on the GPU, with the result of '
                           "the host's (OpenCV's) exactly; off: on the host"),
    **{  # Tracking: the names and defaults of Ultralytics' bytetrack.yaml / botsort.yaml.
        'tracker': param(defaults.TRACKER, 'none, bytetrack or botsort: the track id in '
                         'Detection2D.id (changeable at run time: the tracks reset)',
                         runtime=True),
        'track_high_thresh': param(_TRACK.track_high_thresh, 'first association: detections '
                                   'at least this confident', runtime=True),
        'track_low_thresh': param(_TRACK.track_low_thresh, 'second association: detections '
                                  'above this (the detector keeps them for the tracker)',
                                  runtime=True),
        'new_track_thresh': param(_TRACK.new_track_thresh, 'a detection nobody matched '
                                  'starts a track from this confidence', runtime=True),
        'track_buffer': param(_TRACK.track_buffer, 'frames a lost track is kept',
                              runtime=True),
        'match_thresh': param(_TRACK.match_thresh, 'largest first-association cost, 1 - IoU '
                              '(x score with fuse_score)', runtime=True),
        'fuse_score': param(_TRACK.fuse_score, 'weigh the first association by the detection '
                            'score', runtime=True),
        'gmc_method': param(_TRACK.gmc_method, 'botsort camera-motion compensation: '
                            f"{' or '.join(GMC_METHODS)}", runtime=True),
        'track_reset_gap_s': param(1.0, "a camera's tracks reset when its stamps pause longer "
                                   'than this (or go backwards: a bag looping)', runtime=True),
    },
    # 3D from aligned depth (depth_image_proc's convention); one entry per camera.
    'depth_topics': param('', 'aligned depth image per camera (16UC1 mm or 32FC1 m), '
                          'comma-separated, an empty entry for a camera without; empty: no 3D'),
    'camera_info_topics': param('', 'camera_info per camera, comma-separated; empty: '
                                '<depth topic parent>/camera_info'),
    'depth_slop': param(0.02, 'seconds a depth stamp may differ from the image stamp (the '
                        'nearest is taken; 0: exact stamps only)'),
    'depth_min_m': param(depth_defaults.MIN_M, 'nearer depth is invalid (m)'),
    'depth_max_m': param(depth_defaults.MAX_M, 'farther depth is invalid (m)'),
}
RUNTIME = frozenset(name for name, spec in DETECTOR_PARAMETERS.items() if spec.runtime)


@dataclass(frozen=True)
class BuildParams:
    model: Path
    backend: str
    options: BuildOptions
    cache_dir: Path | None


def build_params(given: dict[str, object]) -> BuildParams:
    """The build parameters from the values given (name -> value; missing: default)."""
    p = check_values(BUILD_PARAMETERS, given)
    check_choice('parameter backend', p['backend'], defaults.BACKENDS)
    try:
        options = BuildOptions(
            precision=p['precision'], calib_dir=Path(p['calib_dir']) if p['calib_dir'] else None,
            dynamic=ShapeProfile.parse(p['dynamic']) if p['dynamic'] else None,
            workspace_mb=p['workspace_mb'] or None,
            opt_level=None if p['opt_level'] < 0 else p['opt_level'], simplify=p['simplify'],
            flavour=p['flavour'] or None)
    except ValueError as exc:
        raise ValueError(f'parameter {exc}') from None
    model = Path(p['model']) if p['model'] else default_model_path()
    problem = regular_file_problem(model)
    if not p['model'] and problem:
        raise ValueError(f'parameter model: not set, and the default model {model} is missing: '
                         f'run `yolo-trt fetch-assets` (or pass model:=<your.onnx>)')
    if problem:
        raise ValueError(f'parameter model: {model} {problem}')
    return BuildParams(model, p['backend'], options,
                       Path(p['cache_dir']) if p['cache_dir'] else None)


@dataclass(frozen=True)
class BuilderConfig:
    build: BuildParams
    force: bool
    linger_s: float


def builder_config(given: dict[str, object]) -> BuilderConfig:
    p = check_values(BUILDER_PARAMETERS, given)
    return BuilderConfig(build_params(given), bool(p['force']), max(0.0, float(p['linger_s'])))


@dataclass(frozen=True)
class DepthConfig:
    """topics, info_topics: per camera, '' for a camera without depth."""

    topics: tuple[str, ...]
    info_topics: tuple[str, ...]
    slop_s: float
    min_m: float
    max_m: float

    def enabled(self, camera: int) -> bool:
        return bool(self.topics[camera])


@dataclass(frozen=True)
class NodeConfig:
    detector: DetectorConfig
    build: BuildParams
    engine_wait_s: float
    class_id_as_index: bool
    topics: tuple[str, ...]
    camera_names: tuple[str, ...]
    compressed: bool
    qos_reliability: str
    qos_depth: int
    publish_annotated: bool
    max_image_pixels: int
    decode_timeout_s: float
    depth: DepthConfig


def detector_config(given: dict[str, object]) -> NodeConfig:
    """The detector's configuration from the values given; `classes` is checked against
    the model's classes later (post_config), once the model is open."""
    build = build_params(given)
    p = check_values(DETECTOR_PARAMETERS, given)
    check_choice('parameter qos_reliability', p['qos_reliability'], defaults.QOS_RELIABILITIES)
    if not 1 <= p['qos_depth'] <= defaults.MAX_QOS_DEPTH:
        raise ValueError(f"parameter qos_depth: {p['qos_depth']} is outside "
                         f'1..{defaults.MAX_QOS_DEPTH}')
    topics = image_topics(p['image_topics'])
    engine = Path(p['engine_path']) if p['engine_path'] else None
    if engine is not None and build.backend != 'onnxruntime' and not engine.is_file():
        raise ValueError(f'parameter engine_path: {engine} does not exist (leave it empty to '
                         f'use the cached engine, or set backend:=onnxruntime)')
    if p['max_image_pixels'] < 1:
        raise ValueError(f"parameter max_image_pixels: {p['max_image_pixels']} must be at "
                         f'least 1')
    if not 0 < p['decode_timeout_s'] <= 60:
        raise ValueError(f"parameter decode_timeout_s: {p['decode_timeout_s']} is outside "
                         f'(0, 60] seconds')
    check_choice('parameter output_format', p['output_format'], defaults.OUTPUT_FORMAT_CHOICES)
    detector = DetectorConfig(
        model=build.model, backend=build.backend, engine=engine,
        labels=Path(p['labels_file']) if p['labels_file'] else None,
        output_format=p['output_format'], post=post_config(p, None),
        cuda_graphs=bool(p['cuda_graphs']), gpu_nms=bool(p['gpu_nms']),
        # With no engine_path, the core finds the engine the builder cached for these.
        build=build.options, cache_dir=build.cache_dir)
    names = camera_names(topics, tuple(split_list(p['camera_names'])))
    return NodeConfig(detector, build, float(p['engine_wait_s']), bool(p['class_id_as_index']),
                      topics, names, bool(p['compressed']), p['qos_reliability'],
                      p['qos_depth'], bool(p['publish_annotated']), p['max_image_pixels'],
                      float(p['decode_timeout_s']),
                      depth_config(p, len(topics)))


def tracker_config(p: dict) -> TrackerConfig | None:
    """The tracker the run-time parameters ask for; None for tracker none. The tracker's
    parameters are checked with tracker none too: a bad value set then (track_buffer -3)
    was kept, and refused only when a tracker was turned on."""
    check_choice('parameter tracker', p['tracker'], defaults.TRACKERS)
    if p['track_reset_gap_s'] <= 0:
        raise ValueError(f"parameter track_reset_gap_s: {p['track_reset_gap_s']} must be "
                         f'positive (seconds)')
    kind = 'bytetrack' if p['tracker'] == 'none' else p['tracker']
    try:
        config = TrackerConfig(kind=kind, track_high_thresh=p['track_high_thresh'],
                               track_low_thresh=p['track_low_thresh'],
                               new_track_thresh=p['new_track_thresh'],
                               track_buffer=p['track_buffer'], match_thresh=p['match_thresh'],
                               fuse_score=bool(p['fuse_score']), gmc_method=p['gmc_method'])
    except ValueError as exc:
        raise ValueError(f'parameter {exc}') from None
    return None if p['tracker'] == 'none' else config


def per_camera(name: str, text: str, cameras: int) -> tuple[str, ...]:
    """A comma-separated topic per camera, an empty entry for none; '' for none at all."""
    if not str(text).strip():
        return ('',) * cameras
    topics = tuple(t.strip() for t in str(text).split(','))
    if len(topics) != cameras:
        raise ValueError(f'parameter {name}: {len(topics)} entries for {cameras} image_topics '
                         f'(one per camera, comma-separated; an empty entry for a camera '
                         f'without)')
    for topic in topics:
        if topic:
            validate_topic(topic, name)
    return topics


def sibling(topic: str, name: str) -> str:
    """camera/depth/image_raw -> camera/depth/camera_info (image_transport's convention)."""
    return topic.rsplit('/', 1)[0] + '/' + name if '/' in topic.strip('/') else name


def depth_config(p: dict, cameras: int) -> DepthConfig:
    topics = per_camera('depth_topics', p['depth_topics'], cameras)
    infos = per_camera('camera_info_topics', p['camera_info_topics'], cameras)
    for i, (depth, info) in enumerate(zip(topics, infos, strict=True)):
        if info and not depth:
            raise ValueError(f"parameter camera_info_topics: '{info}' is given for camera {i}, "
                             f'which has no depth topic')
    infos = tuple(info or (sibling(depth, 'camera_info') if depth else '')
                  for depth, info in zip(topics, infos, strict=True))
    if p['depth_slop'] < 0:
        raise ValueError(f"parameter depth_slop: {p['depth_slop']} must be 0 or more (seconds)")
    if not 0 <= p['depth_min_m'] < p['depth_max_m']:
        raise ValueError(f"parameters depth_min_m, depth_max_m: {p['depth_min_m']}, "
                         f"{p['depth_max_m']} must satisfy 0 <= min < max (metres)")
    return DepthConfig(topics, infos, float(p['depth_slop']), float(p['depth_min_m']),
                       float(p['depth_max_m']))


def post_config(p: dict, names: list[str] | None) -> PostprocessConfig:
    """The postprocessing settings from the run-time parameters; names (the model's classes,
    None before the model is open) validate `classes` and resolve `classes_by_name`."""
    max_det = p['max_detections']
    if not 1 <= max_det <= defaults.MAX_DETECTIONS_LIMIT:
        raise ValueError(f'parameter max_detections: {max_det} is outside 1..'
                         f'{defaults.MAX_DETECTIONS_LIMIT}')
    classes = list(p['classes'] or [])
    if names is not None:
        bad = [c for c in classes if not 0 <= c < len(names)]
        if bad:
            raise ValueError(f'parameter classes: {bad} not in 0..{len(names) - 1} (the '
                             f'model has {len(names)} classes)')
        index = {n: i for i, n in enumerate(names)}
        unknown = [n for n in p['classes_by_name'] or [] if n not in index]
        if unknown:
            raise ValueError(f'parameter classes_by_name: {unknown} are not class names of '
                             f"the model (e.g. {', '.join(names[:5])})")
        classes += [index[n] for n in p['classes_by_name'] or []]
    tracking = tracker_config(p)
    try:
        post = PostprocessConfig(conf_threshold=float(p['conf_threshold']),
                                 iou_threshold=float(p['iou_threshold']),
                                 max_detections=int(max_det),
                                 classes=tuple(sorted(set(classes))) if classes else None,
                                 agnostic=bool(p['agnostic_nms']))
    except ValueError as exc:
        raise ValueError(f'parameter {exc}') from None
    # With a tracker, the detector keeps what the tracker's second stage needs.
    return dataclasses.replace(post, conf_threshold=detection_floor(post.conf_threshold,
                                                                    tracking))


def split_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c'] (launch arguments and list parameters)."""
    return [t.strip() for t in str(text).split(',') if t.strip()]


def topic_name_error(topic: str) -> str | None:
    """Why rcl would refuse topic as a topic name (rcl_validate_topic_name's rules, in its
    order), or None. Stricter in two places, where rcl refuses the name only later: repeated
    slashes (refused in the expanded name when the node subscribes), and a two-character
    `~x` (rcl checks the "~ then /" rule only from three characters on).
    test_serving_config.py checks this against rclpy's own validator."""
    if not topic:
        return 'it is empty'
    if topic.endswith('/'):
        return 'it ends with /'
    in_braces = False
    for i, ch in enumerate(topic):
        if ch.isascii() and (ch.isalnum() or ch == '_'):
            if ch.isdigit() and (i == 0 or topic[i - 1] == '/'):
                return 'a name token starts with a digit'
            if ch.isdigit() and in_braces and topic[i - 1] == '{':
                return 'a substitution starts with a digit'
        elif ch == '/':
            if in_braces:
                return '/ inside {}'
            if i and topic[i - 1] == '/':
                return 'it repeats /'
        elif ch == '~':
            if i:
                return '~ is not its first character'
            if len(topic) > 1 and topic[1] != '/':
                return '~ is not followed by /'
        elif ch == '{':
            if in_braces:
                return 'unbalanced {}'
            in_braces = True
        elif ch == '}':
            if not in_braces:
                return 'unbalanced {}'
            in_braces = False
        else:
            return f'{ch!r} is not a letter, digit, _, / or ~'
    return 'unbalanced {}' if in_braces else None


def namespace_error(name: str) -> str | None:
    """Why a namespace or node name (no leading /) is not one rcl takes, or None: a topic
    name's rules, without ~ and without {} substitutions."""
    return topic_name_error(name) or ('it has ~ or {}' if set(name) & set('~{}') else None)


def validate_topic(topic: str, parameter: str = 'image_topics') -> None:
    """ValueError unless topic is a valid ROS 2 topic name (relative, absolute or ~)."""
    why = topic_name_error(topic)
    if why:
        raise ValueError(f"parameter {parameter}: '{topic}' is not a valid topic name "
                         f'({why}; letters, digits, _ and /, not starting with a digit)')


def image_topics(text: str) -> tuple[str, ...]:
    topics = tuple(split_list(text))
    if not topics:
        raise ValueError('parameter image_topics: no topic given')
    for topic in topics:
        validate_topic(topic)
    twice = sorted({t for t in topics if topics.count(t) > 1})
    if twice:
        raise ValueError(f'parameter image_topics: {twice} given more than once')
    return topics


def camera_names(topics: tuple[str, ...], names: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The output prefix of each camera: the names given; else none for a single camera
    (outputs sit in the node's namespace); else the topics' parents (cam1/image_raw ->
    cam1) where they are distinct; else camera0, camera1, ..."""
    if names:
        if len(names) != len(topics):
            raise ValueError(f'parameter camera_names: {len(names)} names for '
                             f'{len(topics)} image_topics')
        return tuple(names)
    if len(topics) == 1:
        return ('',)
    derived = tuple(t.strip('/').rsplit('/', 1)[0] if '/' in t.strip('/') else '' for t in topics)
    if len(set(derived)) == len(topics) and all(derived):
        return derived
    return tuple(f'camera{i}' for i in range(len(topics)))
