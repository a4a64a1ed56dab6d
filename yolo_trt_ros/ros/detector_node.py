"""detector: camera images in, vision_msgs/Detection2DArray out.

Image callbacks only store the newest frame per camera; one worker thread runs the core
`Detector` on every camera's newest frame (batched where the engine allows), so a slow
model drops stale frames instead of queueing them. Bad frames are logged once per cause
(throttled), counted in diagnostics, and never stop the next frame.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String
from vision_msgs.msg import Detection2DArray, LabelInfo

from ..core import defaults
from ..core.annotate import draw
from ..core.builder import find_cached_engine
from ..core.detector import Detector, DetectorConfig
from ..core.errors import ImageError, YoloTrtError
from ..core.frames import CameraStats, LatestFrames, LogOncePerCause
from ..core.images import to_bgr
from ..core.postprocess import PostprocessConfig
from .build_params import LATCHED_QOS, BuildParams, declare_parameters, read_build_params
from .conversions import bgr_image, camera_status, detection_array, label_info, raw_frame

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
    'classes': ('', 'class ids to keep, comma-separated; empty: all (changeable at run time)'),
    'agnostic_nms': (False, 'class-agnostic NMS (changeable at run time)'),
    'class_id_as_index': (False, 'hypothesis class_id holds the class index, not the name'),
    'image_topics': ('image', 'camera topic(s), comma-separated; compressed: <topic>/compressed'),
    'camera_names': ('', 'output prefix per camera, comma-separated (several cameras); '
                         'empty: derived from the topics'),
    'compressed': (False, 'subscribe to sensor_msgs/CompressedImage'),
    'qos_reliability': ('best_effort', 'input QoS reliability: best_effort or reliable'),
    'qos_depth': (1, 'input QoS history depth'),
    'publish_annotated': (True, 'publish detections_image (bgr8) while someone subscribes'),
}
RUNTIME = frozenset({'conf_threshold', 'iou_threshold', 'max_detections', 'classes',
                     'agnostic_nms'})


@dataclass(frozen=True)
class NodeConfig:
    detector: DetectorConfig
    build: BuildParams
    engine_wait_s: float
    class_id_as_index: bool
    topics: tuple[str, ...]
    camera_names: tuple[str, ...]
    compressed: bool
    qos: QoSProfile
    publish_annotated: bool


def _split(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(',') if t.strip()]


def _post_config(p: dict) -> PostprocessConfig:
    try:
        classes = [int(c) for c in _split(p['classes'])]
    except ValueError as exc:
        raise ValueError(f"parameter classes: '{p['classes']}' is not a comma-separated "
                         f'list of class ids') from exc
    return PostprocessConfig(conf_threshold=float(p['conf_threshold']),
                             iou_threshold=float(p['iou_threshold']),
                             max_detections=int(p['max_detections']),
                             classes=tuple(classes) if classes else None,
                             agnostic=bool(p['agnostic_nms']))


def _camera_names(topics: tuple[str, ...], names) -> tuple[str, ...]:
    if len(topics) == 1:
        return ('',)  # one camera: outputs sit directly in the node's namespace
    if names:
        if len(names) != len(topics):
            raise ValueError(f'parameter camera_names: {len(names)} names for '
                             f'{len(topics)} image_topics')
        return tuple(names)
    derived = tuple(t.strip('/').rsplit('/', 1)[0] if '/' in t.strip('/') else '' for t in topics)
    if len(set(derived)) == len(topics) and all(derived):
        return derived  # cam1/image_raw, cam2/image_raw -> cam1, cam2
    return tuple(f'camera{i}' for i in range(len(topics)))


def read_config(node: Node) -> NodeConfig:
    """Declare every parameter, read them once, validate; ValueError says what to change."""
    build = read_build_params(node)
    p = declare_parameters(node, PARAMETERS, RUNTIME)
    if p['qos_reliability'] not in ('best_effort', 'reliable'):
        raise ValueError(f"parameter qos_reliability: '{p['qos_reliability']}' is not "
                         f'best_effort or reliable')
    if p['qos_depth'] < 1:
        raise ValueError(f"parameter qos_depth: {p['qos_depth']} must be at least 1")
    topics = tuple(_split(p['image_topics']))
    if not topics:
        raise ValueError('parameter image_topics: no topic given')
    if not build.model.is_file():
        raise ValueError(f'parameter model: {build.model} does not exist (the default '
                         f'model comes from `yolo-trt fetch-assets`)')
    qos = QoSProfile(depth=p['qos_depth'], history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.BEST_EFFORT
                     if p['qos_reliability'] == 'best_effort' else ReliabilityPolicy.RELIABLE,
                     durability=qos_profile_sensor_data.durability)
    detector = DetectorConfig(
        model=build.model, backend=build.backend,
        engine=Path(p['engine_path']) if p['engine_path'] else None,
        labels=Path(p['labels_file']) if p['labels_file'] else None,
        output_format=p['output_format'], post=_post_config(p))
    return NodeConfig(detector, build, float(p['engine_wait_s']), bool(p['class_id_as_index']),
                      topics,
                      _camera_names(topics, _split(p['camera_names'])), bool(p['compressed']), qos,
                      bool(p['publish_annotated']))


def _join(prefix: str, name: str) -> str:
    return f'{prefix}/{name}' if prefix else name


@dataclass
class _Camera:
    name: str
    topic: str
    detections: object  # publishers
    annotated: object
    stats: CameraStats


class DetectorNode(Node):
    def __init__(self) -> None:
        super().__init__('detector')
        self.config = read_config(self)
        log = self.get_logger()
        self.detector = Detector.open(self._with_engine(self.config.detector))
        info = self.detector.backend.info
        log.info(f'backend {info.name} on {info.device}: {info.reason}')
        log.info(f'model {self.config.detector.model} ({self.detector.output_format}, input '
                 f'{self.detector.input_size[1]}x{self.detector.input_size[0]})')
        self._log_gate = LogOncePerCause()
        self.frames: LatestFrames = LatestFrames(len(self.config.topics))
        msg_type = CompressedImage if self.config.compressed else Image
        self.cameras: list[_Camera] = []
        for i, (topic, name) in enumerate(zip(self.config.topics, self.config.camera_names,
                                              strict=True)):
            in_topic = _join(topic, 'compressed') if self.config.compressed else topic
            # raw=True: the serialized bytes, no Python message (see core/cdr.py); the
            # worker parses only the frames it takes.
            self.create_subscription(msg_type, in_topic,
                                     lambda data, i=i: self.frames.put(i, data),
                                     self.config.qos, raw=True)
            self.cameras.append(_Camera(
                name or 'camera', in_topic,
                self.create_publisher(Detection2DArray, _join(name, 'detections'), 10),
                self.create_publisher(Image, _join(name, 'detections_image'), 2),
                CameraStats()))
            log.info(f'{in_topic} -> {self.cameras[-1].detections.topic_name}')
        self.label_pub = self.create_publisher(LabelInfo, 'label_info', LATCHED_QOS)
        self._publish_label_info()
        self.diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(1.0, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_parameters)
        self._worker = threading.Thread(target=self._work, name='detector-worker', daemon=True)
        self._worker.start()

    # -- start-up ------------------------------------------------------------------------
    def _with_engine(self, config: DetectorConfig) -> DetectorConfig:
        """Fill in the engine: given, announced on `engine`, or found in the cache."""
        if config.engine is not None or config.backend == 'onnxruntime':
            return config
        engine = self._wait_for_engine_message() if self.config.engine_wait_s > 0 else None
        if engine is None:
            build = self.config.build
            engine, why = find_cached_engine(config.model, build.options, build.cache_dir)
            if engine is None:
                self.get_logger().info(f'no cached engine for {config.model.name} '
                                       f'({build.options.precision}): {why}')
        return dataclasses.replace(config, engine=engine)

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
                for frame in frames:
                    self._bad_input(frame.camera, 'internal',
                                    f'{type(exc).__name__}: {exc} (please report this)')

    def _process(self, frames) -> None:
        good, views, headers = [], [], []
        for frame in frames:
            try:
                header, view = raw_frame(frame.payload, self.config.compressed)
            except ImageError as exc:
                self._bad_input(frame.camera, exc.cause, str(exc))
                continue
            good.append(frame)
            views.append(view)
            headers.append(header)
        if not views:
            return
        try:
            results = self.detector.detect(views)
        except YoloTrtError as exc:
            for frame in good:
                self._bad_input(frame.camera, 'inference', f'inference failed: {exc}')
            return
        label = (lambda c: str(c)) if self.config.class_id_as_index else self.detector.label
        for frame, view, header, det in zip(good, views, headers, results, strict=True):
            camera = self.cameras[frame.camera]
            camera.detections.publish(detection_array(det, header, label))
            camera.stats.add_latency(time.monotonic() - frame.received)
            if self.config.publish_annotated and camera.annotated.get_subscription_count() > 0:
                camera.annotated.publish(bgr_image(draw(to_bgr(view), det, self.detector.label),
                                                   header))

    def _bad_input(self, camera: int, cause: str, message: str) -> None:
        cam = self.cameras[camera]
        count = cam.stats.add_bad(cause)
        if self._log_gate.should_log(f'{camera}:{cause}'):
            self.get_logger().warn(f'{cam.topic}: bad frame skipped ({cause}, {count} so far): '
                                   f'{message}')

    # -- side channels -------------------------------------------------------------------
    def _publish_label_info(self) -> None:
        names = self.detector.names or [str(i) for i in range(self.detector.num_classes or 0)]
        header = Header(stamp=self.get_clock().now().to_msg())
        self.label_pub.publish(label_info(names, self.detector.post.conf_threshold, header))

    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        backend = self.detector.backend.info.name
        for i, cam in enumerate(self.cameras):
            msg.status.append(camera_status(cam.name, cam.topic, self.frames.received[i],
                                            self.frames.dropped[i], cam.stats, backend))
        self.diagnostics.publish(msg)

    def _on_parameters(self, params: list[Parameter]) -> SetParametersResult:
        values = {name: self.get_parameter(name).value for name in RUNTIME}
        for p in params:
            if p.name not in RUNTIME:
                return SetParametersResult(successful=False,
                                           reason=f'{p.name} is read-only: restart to change it')
            values[p.name] = p.value
        try:
            post = _post_config(values)
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.detector.post = post  # one reference swap: the worker sees old or new, whole
        if any(p.name == 'conf_threshold' for p in params):
            self._publish_label_info()
        self.get_logger().info(f'thresholds now conf {post.conf_threshold}, iou '
                               f'{post.iou_threshold}, max {post.max_detections}')
        return SetParametersResult(successful=True)

    def close(self) -> None:
        self.frames.close()
        self._worker.join(timeout=5.0)
        self.detector.close()


def main(args=None) -> None:
    rclpy.init(args=args)
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
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
