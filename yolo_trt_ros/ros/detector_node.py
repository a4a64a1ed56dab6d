"""detector: camera images in, vision_msgs/Detection2DArray out.

Image callbacks only store the newest frame per camera; one worker thread runs the core
`Detector` on every camera's newest frame (batched where the engine allows), so a slow
model drops stale frames instead of queueing them. Bad frames are logged once per cause
(throttled), counted in diagnostics, and never stop the next frame.
"""
from __future__ import annotations

import dataclasses
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import InvalidTopicNameException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.signals import SignalHandlerOptions
from rclpy.validate_topic_name import validate_topic_name
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String
from vision_msgs.msg import Detection2DArray, LabelInfo

try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

from ..core import defaults
from ..core.annotate import draw
from ..core.cdr import parse_compressed
from ..core.cdr_writer import detection_array_cdr
from ..core.detector import Detector, DetectorConfig
from ..core.errors import ImageError, YoloTrtError
from ..core.frames import CameraStats, LatestFrames, LogOncePerCause, Window, health
from ..core.images import ImageView, decode_compressed, to_bgr
from ..core.postprocess import PostprocessConfig
from ..launch_args import camera_names, split_list
from .build_params import (
    LATCHED_QOS,
    BuildParams,
    checked_value,
    declare_parameters,
    parameter_value,
    read_build_params,
    unknown_overrides,
)
from .builder_node import PARAMETERS as BUILDER_PARAMETERS
from .conversions import bgr_image, camera_status, header_message, label_info, parse_frame

# Beyond the shared build parameters (build_params.py), which tell the detector which
# cached engine the builder made. Lists are comma-separated strings: launch arguments and
# `-p name:=value` carry them as they are, and an empty list needs no special type.
PARAMETERS: dict[str, tuple[object, str]] = {
    'engine_path': ('', 'TensorRT engine; empty: the cached engine for the build parameters'),
    'engine_wait_s': (0.0, 'wait this long for an engine message on `engine` before '
                           'looking in the cache (a builder running separately)'),
    'labels_file': ('', 'class names (one a line, or YAML); empty: the model metadata'),
    'output_format': (defaults.OUTPUT_FORMAT, ', '.join(defaults.OUTPUT_FORMAT_CHOICES)),
    'conf_threshold': (defaults.CONF_THRESHOLD, 'confidence threshold (changeable at run time)'),
    'iou_threshold': (defaults.IOU_THRESHOLD, 'NMS IoU threshold (changeable at run time)'),
    'max_detections': (defaults.MAX_DETECTIONS, 'most detections per image (changeable at run '
                                                'time)'),
    'classes': (Parameter.Type.INTEGER_ARRAY, 'class ids to keep, e.g. [0, 2]; not set: all '
                                              '(changeable at run time)'),
    'classes_by_name': (Parameter.Type.STRING_ARRAY, 'class names to keep, e.g. [person, car]; '
                                                     'added to classes (changeable at run time)'),
    'agnostic_nms': (False, 'class-agnostic NMS (changeable at run time)'),
    'class_id_as_index': (False, 'hypothesis class_id holds the class index, not the name'),
    'image_topics': ('image', 'camera topic(s), comma-separated; compressed: <topic>/compressed'),
    'camera_names': ('', 'output prefix per camera, comma-separated (several cameras); '
                         'empty: derived from the topics'),
    'compressed': (False, 'subscribe to sensor_msgs/CompressedImage'),
    'qos_reliability': (defaults.QOS_RELIABILITY, 'input QoS reliability: auto (reliable when '
                                                  'every publisher is), reliable or best_effort'),
    'qos_depth': (defaults.QOS_DEPTH, 'input QoS history depth'),
    'publish_annotated': (True, 'publish detections_image (bgr8) while someone subscribes'),
    'max_image_pixels': (defaults.MAX_IMAGE_PIXELS, 'largest frame in pixels, read from the '
                         'header before decoding; larger frames are bad input (too_large)'),
}
RUNTIME = frozenset({'conf_threshold', 'iou_threshold', 'max_detections', 'classes',
                     'classes_by_name', 'agnostic_nms'})
MAX_QOS_DEPTH = 100  # frames are big: a deeper queue only holds stale ones
# config/detector.yaml gives both nodes the `/**` section: the builder's are not unknown.
OTHER_NODES_PARAMETERS = set(BUILDER_PARAMETERS)


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


def _post_config(p: dict, names: list[str] | None) -> PostprocessConfig:
    """The postprocessing settings from the parameters; names (the model's classes, None
    before the model is open) validate `classes` and resolve `classes_by_name`."""
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
    try:
        return PostprocessConfig(conf_threshold=float(p['conf_threshold']),
                                 iou_threshold=float(p['iou_threshold']),
                                 max_detections=int(max_det),
                                 classes=tuple(sorted(set(classes))) if classes else None,
                                 agnostic=bool(p['agnostic_nms']))
    except ValueError as exc:
        raise ValueError(f'parameter {exc}') from None


def _topics(text: str) -> tuple[str, ...]:
    topics = tuple(split_list(text))
    if not topics:
        raise ValueError('parameter image_topics: no topic given')
    for topic in topics:
        try:
            validate_topic_name(topic)
        except InvalidTopicNameException:
            raise ValueError(f"parameter image_topics: '{topic}' is not a valid topic name "
                             f'(letters, digits, _ and /; not starting with a digit)') from None
    twice = sorted({t for t in topics if topics.count(t) > 1})
    if twice:
        raise ValueError(f'parameter image_topics: {twice} given more than once')
    return topics


def read_config(node: Node) -> NodeConfig:
    """Declare every parameter, read them once, validate; ValueError says what to change."""
    build = read_build_params(node)
    p = declare_parameters(node, PARAMETERS, RUNTIME)
    if p['qos_reliability'] not in defaults.QOS_RELIABILITIES:
        raise ValueError(f"parameter qos_reliability: '{p['qos_reliability']}' is not "
                         f"{', '.join(defaults.QOS_RELIABILITIES)}")
    if not 1 <= p['qos_depth'] <= MAX_QOS_DEPTH:
        raise ValueError(f"parameter qos_depth: {p['qos_depth']} is outside 1..{MAX_QOS_DEPTH}")
    topics = _topics(p['image_topics'])
    if build.model.is_dir():
        raise ValueError(f'parameter model: {build.model} is a directory, not an ONNX file')
    if not build.model.is_file():
        raise ValueError(f'parameter model: {build.model} does not exist (the default '
                         f'model comes from `yolo-trt fetch-assets`)')
    engine = Path(p['engine_path']) if p['engine_path'] else None
    if engine is not None and build.backend != 'onnxruntime' and not engine.is_file():
        raise ValueError(f'parameter engine_path: {engine} does not exist (leave it empty to '
                         f'use the cached engine, or set backend:=onnxruntime)')
    if p['max_image_pixels'] < 1:
        raise ValueError(f"parameter max_image_pixels: {p['max_image_pixels']} must be at "
                         f'least 1')
    if p['output_format'] not in defaults.OUTPUT_FORMAT_CHOICES:
        raise ValueError(f"parameter output_format: '{p['output_format']}' is not "
                         f"{', '.join(defaults.OUTPUT_FORMAT_CHOICES)}")
    detector = DetectorConfig(
        model=build.model, backend=build.backend, engine=engine,
        labels=Path(p['labels_file']) if p['labels_file'] else None,
        output_format=p['output_format'], post=_post_config(p, None),
        # With no engine_path, the core finds the engine the builder cached for these.
        build=build.options, cache_dir=build.cache_dir)
    names = camera_names(topics, tuple(split_list(p['camera_names'])))
    return NodeConfig(detector, build, float(p['engine_wait_s']), bool(p['class_id_as_index']),
                      topics, names, bool(p['compressed']),
                      p['qos_reliability'], p['qos_depth'], bool(p['publish_annotated']),
                      p['max_image_pixels'])


def _join(prefix: str, name: str) -> str:
    return f'{prefix}/{name}' if prefix else name


@dataclass
class _Camera:
    name: str
    topic: str
    detections: object  # publishers
    annotated: object
    stats: CameraStats
    subscription: object = None
    reliable: bool | None = None  # the input QoS now in use
    lost: int = 0  # samples DDS reported lost
    last: Window = Window(0, 0, 0, 0)  # counters at the previous diagnostics


class DetectorNode(Node):
    def __init__(self) -> None:
        super().__init__('detector')
        self.config = read_config(self)
        log = self.get_logger()
        unknown = unknown_overrides(self, OTHER_NODES_PARAMETERS)
        if unknown:
            log.warn(f"parameters given but not known to the detector: {', '.join(unknown)}")
        opened = self._with_engine(self.config.detector)
        self.detector = Detector.open(opened, log=log.info)
        try:  # `classes` can only be checked against the model's classes now
            self.detector.post = _post_config(self._runtime_values(), self._class_names())
        except ValueError:
            self.detector.close()
            raise
        info = self.detector.backend.info
        log.info(f'backend {info.name} on {info.device}: {info.reason}')
        log.info(f'model {self.config.detector.model} ({self.detector.output_format}, input '
                 f'{self.detector.input_size[1]}x{self.detector.input_size[0]})')
        self._log_gate = LogOncePerCause()
        self._lost_warned = False
        self.frames: LatestFrames = LatestFrames(len(self.config.topics))
        self.cameras: list[_Camera] = []
        for topic, name in zip(self.config.topics, self.config.camera_names, strict=True):
            in_topic = _join(topic, 'compressed') if self.config.compressed else topic
            self.cameras.append(_Camera(
                name or 'camera', in_topic,
                self.create_publisher(Detection2DArray, _join(name, 'detections'), 10),
                self.create_publisher(Image, _join(name, 'detections_image'), 2),
                CameraStats()))
            self._subscribe(len(self.cameras) - 1)
            log.info(f'{in_topic} -> {self.cameras[-1].detections.topic_name}')
        self.label_pub = self.create_publisher(LabelInfo, 'label_info', LATCHED_QOS)
        self._publish_label_info()
        # The builder's announcement ends with its process; this one lasts as long as the
        # detector and says what it really loaded.
        self.engine_pub = self.create_publisher(String, 'engine', LATCHED_QOS)
        self.engine_pub.publish(String(data=json.dumps({
            'engine_path': info.engine_path,
            'backend': info.name, 'model': str(self.config.detector.model),
            'announced_by': 'detector'})))
        self.diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(1.0, self._publish_diagnostics)
        if self.config.qos_reliability == 'auto':
            # Publishers come and go (a camera driver restarts): follow them.
            self.create_timer(1.0, self._follow_publishers)
        self.add_on_set_parameters_callback(self._on_parameters)
        self._worker = threading.Thread(target=self._work, name='detector-worker', daemon=True)
        self._worker.start()

    # -- input QoS -------------------------------------------------------------------------
    def _wants_reliable(self, topic: str) -> bool:
        """auto: reliable when every publisher is (as rosbag2 and `ros2 topic echo` do), so
        a reliable camera's large frames are resent instead of lost; best effort otherwise,
        which matches every publisher."""
        if self.config.qos_reliability != 'auto':
            return self.config.qos_reliability == 'reliable'
        infos = self.get_publishers_info_by_topic(topic)
        return bool(infos) and all(
            i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)

    def _subscribe(self, i: int) -> None:
        cam = self.cameras[i]
        reliable = self._wants_reliable(self.resolve_topic_name(cam.topic))
        if cam.subscription is not None:
            if reliable == cam.reliable:
                return
            self.destroy_subscription(cam.subscription)
        qos = QoSProfile(depth=self.config.qos_depth, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE if reliable
                         else ReliabilityPolicy.BEST_EFFORT,
                         durability=qos_profile_sensor_data.durability)
        msg_type = CompressedImage if self.config.compressed else Image
        # raw=True: the serialized bytes, no Python message (see core/cdr.py); the worker
        # parses only the frames it takes.
        cam.subscription = self.create_subscription(
            msg_type, cam.topic, lambda data, i=i: self.frames.put(i, data), qos, raw=True,
            event_callbacks=SubscriptionEventCallbacks(
                message_lost=lambda info, i=i: self._on_lost(i, info.total_count_change)))
        cam.reliable = reliable
        self.get_logger().info(f"{cam.topic}: input QoS {'reliable' if reliable else 'best effort'}"
                               f' ({self.config.qos_reliability})')

    def _follow_publishers(self) -> None:
        for i in range(len(self.cameras)):
            self._subscribe(i)

    def _on_lost(self, camera: int, count: int) -> None:
        cam = self.cameras[camera]
        cam.lost += count
        if not self._lost_warned:
            self._lost_warned = True
            self.get_logger().warn(
                f'{cam.topic}: {cam.lost} frames lost in DDS before reaching the detector. '
                f'Fix: use the Fast DDS profile of the launch files for the camera too '
                f'(FASTDDS_DEFAULT_PROFILES_FILE=config/fastdds_large_frames.xml), set '
                f'qos_reliability:=reliable, or subscribe to the compressed topic')

    # -- start-up ------------------------------------------------------------------------
    def _class_names(self) -> list[str]:
        return self.detector.names or [str(i) for i in range(self.detector.num_classes or 0)]

    def _runtime_values(self) -> dict:
        return {name: checked_value(name, parameter_value(self, name), PARAMETERS[name][0])
                for name in RUNTIME}

    def _with_engine(self, config: DetectorConfig) -> DetectorConfig:
        """The engine announced on `engine` by a builder running separately, if asked to
        wait for one; otherwise Detector.open finds the cached one (or says why not)."""
        if config.engine is not None or config.backend == 'onnxruntime' or \
                self.config.engine_wait_s <= 0:
            return config
        return dataclasses.replace(config, engine=self._wait_for_engine_message())

    def _wait_for_engine_message(self) -> Path | None:
        got: list[String] = []
        sub = self.create_subscription(String, 'engine', got.append, LATCHED_QOS)
        deadline = time.monotonic() + self.config.engine_wait_s
        while not got and time.monotonic() < deadline:
            rclpy.spin_once(self, timeout_sec=0.1)
        self.destroy_subscription(sub)
        if not got:
            self.get_logger().warn(f'no engine message within {self.config.engine_wait_s} s')
            return None
        path = json.loads(got[0].data).get('engine_path')
        return Path(path) if path else None

    # -- the pipeline ----------------------------------------------------------------------
    def _work(self) -> None:
        while not self.frames.closed:
            frames = self.frames.take(timeout=0.5)
            if not frames:
                continue
            try:
                self._process(frames)
            except Exception as exc:  # the worker boundary: a bug must not stop detection
                if self.frames.closed:
                    return  # shutting down: the frame in flight is dropped, not an error
                for frame in frames:
                    self._bad_input(frame.camera, 'internal',
                                    f'{type(exc).__name__}: {exc} (please report this)')

    def _process(self, frames) -> None:
        taken = time.monotonic()
        parsed = []  # (frame, header, pixels: ImageView, or a payload still encoded)
        for frame in frames:
            try:
                parsed.append((frame, *parse_frame(frame.payload, self.config.compressed,
                                                   self.config.max_image_pixels)))
            except ImageError as exc:
                self._bad_input(frame.camera, exc.cause, str(exc))
        if self.config.compressed and parsed:  # one batch: on the GPU where there is one
            decoded = self.detector.decode_compressed(
                [(m.data, m.format) for _, _, m in parsed], self.config.max_image_pixels)
            parsed = [(frame, header, image) for (frame, header, _), image
                      in zip(parsed, decoded, strict=True)]
        good = []
        for frame, header, image in parsed:
            if isinstance(image, ImageError):
                self._bad_input(frame.camera, image.cause, str(image))
            else:
                good.append((frame, header, image))
        if not good:
            return
        try:
            results = self.detector.detect([image for _, _, image in good])
        except YoloTrtError as exc:
            for frame, _, _ in good:
                self._bad_input(frame.camera, 'inference', f'inference failed: {exc}')
            return
        label = (lambda c: str(c)) if self.config.class_id_as_index else self.detector.label
        for (frame, header, image), det in zip(good, results, strict=True):
            camera = self.cameras[frame.camera]
            # Serialized straight to CDR: no Python message built field by field.
            camera.detections.publish(detection_array_cdr(det, header, label))
            camera.stats.add_latency(time.monotonic() - frame.received, taken - frame.received)
            if self.config.publish_annotated and camera.annotated.get_subscription_count() > 0:
                self._publish_annotated(camera, frame, header, image, det)

    def _publish_annotated(self, camera: _Camera, frame, header, image, det) -> None:
        if not isinstance(image, ImageView):  # decoded on the GPU: decode again for drawing
            payload = parse_compressed(frame.payload)
            image = decode_compressed(payload.data, payload.format, self.config.max_image_pixels)
        camera.annotated.publish(bgr_image(draw(to_bgr(image), det, self.detector.label),
                                           header_message(header)))

    def _bad_input(self, camera: int, cause: str, message: str) -> None:
        cam = self.cameras[camera]
        count = cam.stats.add_bad(cause)
        if self._log_gate.should_log(f'{camera}:{cause}'):
            self.get_logger().warn(f'{cam.topic}: bad frame skipped ({cause}, {count} so far): '
                                   f'{message}')

    # -- side channels -------------------------------------------------------------------
    def _publish_label_info(self) -> None:
        header = Header(stamp=self.get_clock().now().to_msg())
        self.label_pub.publish(label_info(self._class_names(), self.detector.post.conf_threshold,
                                          header))

    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        backend = self.detector.backend.info.name
        for i, cam in enumerate(self.cameras):
            now = Window(self.frames.received[i], cam.stats.processed, self.frames.dropped[i],
                         cam.lost)
            window = Window(*(a - b for a, b in zip(dataclasses.astuple(now),
                                                    dataclasses.astuple(cam.last), strict=True)))
            cam.last = now
            msg.status.append(camera_status(cam.name, cam.topic, now, cam.stats, backend,
                                            health(window, sum(cam.stats.bad_input.values()))))
        self.diagnostics.publish(msg)

    def _on_parameters(self, params: list[Parameter]) -> SetParametersResult:
        values = self._runtime_values()
        for p in params:
            if p.name not in RUNTIME:
                return SetParametersResult(successful=False,
                                           reason=f'{p.name} is read-only: restart to change it')
        try:
            for p in params:
                values[p.name] = checked_value(p.name, p.value, PARAMETERS[p.name][0])
            post = _post_config(values, self._class_names())
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.detector.post = post  # one reference swap: the worker sees old or new, whole
        if any(p.name == 'conf_threshold' for p in params):
            self._publish_label_info()
        self.get_logger().info(f'thresholds now conf {post.conf_threshold}, iou '
                               f'{post.iou_threshold}, max {post.max_detections}, classes '
                               f"{list(post.classes) if post.classes else 'all'}")
        return SetParametersResult(successful=True)

    def close(self) -> None:
        """Stop taking frames, let the worker finish the frame in flight, free the model.
        Publishers and the node are destroyed after this, so nothing publishes into a
        context that is gone."""
        for cam in self.cameras:
            self.destroy_subscription(cam.subscription)
        self.frames.close()
        self._worker.join()
        self.detector.close()


def main(args=None) -> None:
    """Exit 0 on SIGINT/SIGTERM (any number of them), 2 on a bad parameter, 1 when the
    model or engine cannot be opened."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def on_signal(*_) -> None:
        # The first signal asks to stop; later ones (a terminal and launch both signal the
        # process group) are ignored, also while the interpreter finalizes, when Python
        # would otherwise die of them (exit -2 instead of 0).
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    logger = rclpy.logging.get_logger('detector')
    try:
        node = DetectorNode()
    except ValueError as exc:
        logger.error(f'bad parameter: {exc}')
        rclpy.try_shutdown()
        sys.exit(2)
    except YoloTrtError as exc:
        logger.error(f'cannot start: {exc}')
        rclpy.try_shutdown()
        sys.exit(1)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    finally:
        node.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
