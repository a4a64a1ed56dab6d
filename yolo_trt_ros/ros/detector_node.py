"""detector: images (and aligned depth) in, Detection2DArray (and Detection3DArray) out.

Wiring only: parameters, subscriptions, publishers, timers and shutdown. Image callbacks
store the newest serialized frame per camera and return; the core's worker
(core/serving/worker.py) runs the batch step (parse -> decode -> detect -> serialize) on
every camera's newest frame and hands back what to publish. Bad frames are logged once
per cause (throttled), counted in diagnostics, and never stop the next frame.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String
from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo

try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

from yolo_trt_ros.core.runtime.detector import Detector, DetectorConfig
from yolo_trt_ros.core.serving.batch import BatchResult, BatchStep
from yolo_trt_ros.core.serving.cameras import CameraState, Tracking
from yolo_trt_ros.core.serving.config import (
    BUILD_PARAMETERS,
    BUILDER_PARAMETERS,
    DETECTOR_PARAMETERS,
    RUNTIME,
    detector_config,
    post_config,
    tracker_config,
)
from yolo_trt_ros.core.serving.decoding import Intake
from yolo_trt_ros.core.serving.health import CameraStats, LogOncePerCause
from yolo_trt_ros.core.serving.params import checked_value
from yolo_trt_ros.core.serving.worker import Worker
from yolo_trt_ros.ros.conversions import bgr_image, camera_status, header_message, label_info
from yolo_trt_ros.ros.log_bridge import route_to
from yolo_trt_ros.ros.parameters import LATCHED_QOS, declare, unknown_overrides, value_of
from yolo_trt_ros.ros.runner import run


def _join(prefix: str, name: str) -> str:
    return f'{prefix}/{name}' if prefix else name


@dataclasses.dataclass
class _Camera:
    name: str
    topic: str
    detections: object  # publishers
    annotated: object
    stats: CameraStats
    state: CameraState  # tracks, depth frames, camera model (core/serving/cameras.py)
    subscription: object = None
    reliable: bool | None = None  # the input QoS now in use
    detections_3d: object = None  # cameras with depth


class DetectorNode(Node):
    def __init__(self) -> None:
        super().__init__('detector')
        self._log_route = route_to(self.get_logger())
        given = {**declare(self, BUILD_PARAMETERS), **declare(self, DETECTOR_PARAMETERS)}
        self.config = detector_config(given)
        log = self.get_logger()
        unknown = unknown_overrides(self, set(BUILDER_PARAMETERS))
        if unknown:
            log.warning(f"parameters given but not known to the detector: {', '.join(unknown)}")
        self.detector = Detector.open(self._with_engine(self.config.detector))
        try:  # `classes` can only be checked against the model's classes now
            self.detector.post = post_config(self._runtime_values(), self._class_names())
        except ValueError:
            self.detector.close()
            raise
        info = self.detector.backend.info
        log.info(f'backend {info.name} on {info.device}: {info.reason}')
        log.info(f'model {self.config.detector.model} ({self.detector.output_format}, input '
                 f'{self.detector.input_size[1]}x{self.detector.input_size[0]})')
        self._log_gate = LogOncePerCause()
        self._lost_warned = False
        max_pixels = self.config.max_image_pixels
        # CompressedImage: each camera decodes in a process of its own, off the shared path.
        self.frames = Intake(len(self.config.topics), self.config.compressed, max_pixels,
                             lambda: self.detector.jpeg_on_gpu(max_pixels),
                             self.config.decode_timeout_s)
        values = self._runtime_values()
        self.tracking = Tracking(tracker_config(values), values['track_reset_gap_s'])
        self.cameras: list[_Camera] = []
        for topic, name in zip(self.config.topics, self.config.camera_names, strict=True):
            in_topic = _join(topic, 'compressed') if self.config.compressed else topic
            self.cameras.append(_Camera(
                name or 'camera', in_topic,
                self.create_publisher(Detection2DArray, _join(name, 'detections'), 10),
                self.create_publisher(Image, _join(name, 'detections_image'), 2),
                stats := CameraStats(), CameraState(self.tracking, stats.counts)))
            self._subscribe(len(self.cameras) - 1)
            self._subscribe_depth(len(self.cameras) - 1, name)
            log.info(f'{in_topic} -> {self.cameras[-1].detections.topic_name}')
        self.label_pub = self.create_publisher(LabelInfo, 'label_info', LATCHED_QOS)
        self._publish_label_info(values['conf_threshold'])
        # The builder's announcement ends with its process; this one lasts as long as the
        # detector and says what it really loaded.
        self.engine_pub = self.create_publisher(String, 'engine', LATCHED_QOS)
        self.engine_pub.publish(String(data=json.dumps({
            'engine_path': info.engine_path, 'backend': info.name,
            'model': str(self.config.detector.model), 'announced_by': 'detector'})))
        self.diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(1.0, self._publish_diagnostics)
        if self.config.qos_reliability == 'auto':
            # Publishers come and go (a camera driver restarts): follow them.
            self.create_timer(1.0, self._follow_publishers)
        self.add_on_set_parameters_callback(self._on_parameters)
        label = str if self.config.class_id_as_index else self.detector.label
        self.step = BatchStep(self.detector, self.config.compressed,
                              self.config.max_image_pixels, label,
                              [c.state for c in self.cameras], self.config.depth)
        self.worker = Worker(self.frames, self.step, self._deliver)
        self.worker.start()

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
        # raw=True: the serialized bytes, no Python message (see core/serving/cdr.py); the
        # worker parses only the frames it takes.
        cam.subscription = self.create_subscription(
            msg_type, cam.topic, lambda data, i=i: self.frames.put(i, data), qos, raw=True,
            event_callbacks=SubscriptionEventCallbacks(
                message_lost=lambda info, i=i: self._on_lost(i, info.total_count_change)))
        cam.reliable = reliable
        self.get_logger().info(f"{cam.topic}: input QoS {'reliable' if reliable else 'best effort'}"
                               f' ({self.config.qos_reliability})')

    def _subscribe_depth(self, i: int, name: str) -> None:
        """Depth (serialized, kept for pairing by stamp) and camera_info for camera i."""
        depth, cam = self.config.depth, self.cameras[i]
        if not depth.enabled(i):
            return
        self.create_subscription(Image, depth.topics[i], cam.state.put_depth,
                                 qos_profile_sensor_data, raw=True)
        self.create_subscription(CameraInfo, depth.info_topics[i], cam.state.camera_info, 10)
        cam.detections_3d = self.create_publisher(Detection3DArray,
                                                  _join(name, 'detections_3d'), 10)
        self.get_logger().info(f'{depth.topics[i]} + {depth.info_topics[i]} -> '
                               f'{cam.detections_3d.topic_name}')

    def _follow_publishers(self) -> None:
        for i in range(len(self.cameras)):
            self._subscribe(i)

    def _on_lost(self, camera: int, count: int) -> None:
        cam = self.cameras[camera]
        cam.stats.lost += count
        if not self._lost_warned:
            self._lost_warned = True
            self.get_logger().warning(
                f'{cam.topic}: {cam.stats.lost} frames lost in DDS before reaching the '
                f'detector. Fix: use the Fast DDS profile of the launch files for the camera too '
                f'(FASTDDS_DEFAULT_PROFILES_FILE=config/fastdds_large_frames.xml), set '
                f'qos_reliability:=reliable, or subscribe to the compressed topic')

    # -- start-up ------------------------------------------------------------------------
    def _class_names(self) -> list[str]:
        return self.detector.names or [str(i) for i in range(self.detector.num_classes or 0)]

    def _runtime_values(self) -> dict:
        return {name: checked_value(name, value_of(self, name), DETECTOR_PARAMETERS[name])
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
            self.get_logger().warning(f'no engine message within {self.config.engine_wait_s} s')
            return None
        path = json.loads(got[0].data).get('engine_path')
        return Path(path) if path else None

    # -- results (on the worker thread) ----------------------------------------------------
    def _deliver(self, result: BatchResult) -> None:
        for refused in result.refused:
            self._bad_input(refused.camera, refused.cause, refused.reason)
        for served in result.served:
            camera = self.cameras[served.frame.camera]
            camera.detections.publish(served.message)
            received = served.frame.received
            camera.stats.add_latency(time.monotonic() - received, result.taken - received)
            if self.config.publish_annotated and camera.annotated.get_subscription_count() > 0:
                camera.annotated.publish(bgr_image(self.step.annotated(served),
                                                   header_message(served.header)))
            if served.message_3d is not None:
                camera.detections_3d.publish(served.message_3d)
            bad = camera.stats.count_3d(served.message_3d is not None, served.left_out,
                                        served.depth_problem)
            if bad is not None:
                self._bad_input(served.frame.camera, bad.cause, bad.reason, 'no 3D')

    def _bad_input(self, camera: int, cause: str, message: str,
                   skipped: str = 'bad frame skipped') -> None:
        cam = self.cameras[camera]
        count = cam.stats.add_bad(cause)
        if self._log_gate.should_log(f'{camera}:{cause}'):
            self.get_logger().warning(f'{cam.topic}: {skipped} ({cause}, {count} so far): '
                                      f'{message}')

    # -- side channels -------------------------------------------------------------------
    def _publish_label_info(self, threshold: float) -> None:
        header = Header(stamp=self.get_clock().now().to_msg())
        self.label_pub.publish(label_info(self._class_names(), threshold, header))

    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        backend = self.detector.backend.info.name
        for i, cam in enumerate(self.cameras):
            totals, health = cam.stats.tick(self.frames.received(i), self.frames.dropped(i))
            msg.status.append(camera_status(cam.name, cam.topic, totals, cam.stats, backend,
                                            health))
        self.diagnostics.publish(msg)

    def _on_parameters(self, params: list[Parameter]) -> SetParametersResult:
        values = self._runtime_values()
        for p in params:
            if p.name not in RUNTIME:
                return SetParametersResult(successful=False,
                                           reason=f'{p.name} is read-only: restart to change it')
        try:
            for p in params:
                values[p.name] = checked_value(p.name, p.value, DETECTOR_PARAMETERS[p.name])
            post = post_config(values, self._class_names())
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.detector.post = post  # one reference swap: the worker sees old or new, whole
        self.tracking.set(tracker_config(values), values['track_reset_gap_s'])  # checked
        if any(p.name == 'conf_threshold' for p in params):
            self._publish_label_info(values['conf_threshold'])
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
        self.worker.stop()
        self.detector.close()


def main(args=None) -> None:
    run(DetectorNode, 'detector', args)


if __name__ == '__main__':
    main()
