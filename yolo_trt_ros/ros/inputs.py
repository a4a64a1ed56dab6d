"""A detector node's cameras: their publishers, and subscriptions that hand the serialized
frames to the intake, with the input QoS following the publishers; depth and camera_info
for cameras with depth."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.subscription import Subscription
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

from yolo_trt_ros.core.serving.cameras import CameraState
from yolo_trt_ros.core.serving.config import NodeConfig
from yolo_trt_ros.core.serving.health import CameraStats, dds_loss_fix

# MessageInfo (publication sequence numbers) in subscription callbacks: rclpy of Iron on;
# Humble's calls every callback with the message alone.
WITH_MESSAGE_INFO = hasattr(Subscription, 'CallbackType')


def join(prefix: str, name: str) -> str:
    return f'{prefix}/{name}' if prefix else name


@dataclass
class Camera:
    name: str
    topic: str  # the input topic (with /compressed for CompressedImage)
    detections: object  # publishers
    annotated: object
    stats: CameraStats
    state: CameraState  # tracks, depth frames, camera model (core/serving/cameras.py)
    subscription: object = None
    reliable: bool | None = None  # the input QoS now in use
    detections_3d: object = None  # the publisher, for cameras with depth
    depth_subscriptions: list = field(default_factory=list)
    masks: object = None  # publishers, for a segment model
    keypoints: object = None  # and a pose model


class CameraInputs:
    """put(camera, serialized frame) is called from the subscriptions' callbacks."""

    def __init__(self, node: Node, config: NodeConfig, cameras: list[Camera],
                 put: Callable[[int, bytes], None]) -> None:
        self.node, self.config, self.cameras, self.put = node, config, cameras, put
        self._lost_warned = False
        self._unaccounted_said = False

    def _wants_reliable(self, topic: str) -> bool:
        """auto: reliable when every publisher is (as rosbag2 and `ros2 topic echo` do), so
        a reliable camera's large frames are resent instead of lost; best effort otherwise,
        which matches every publisher."""
        if self.config.qos_reliability != 'auto':
            return self.config.qos_reliability == 'reliable'
        infos = self.node.get_publishers_info_by_topic(topic)
        return bool(infos) and all(
            i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)

    def subscribe(self, i: int) -> None:
        """Subscribe camera i, or subscribe again where its publishers' QoS changed."""
        cam = self.cameras[i]
        reliable = self._wants_reliable(self.node.resolve_topic_name(cam.topic))
        if cam.subscription is not None:
            if reliable == cam.reliable:
                return
            self.node.destroy_subscription(cam.subscription)
        qos = QoSProfile(depth=self.config.qos_depth, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE if reliable
                         else ReliabilityPolicy.BEST_EFFORT,
                         durability=qos_profile_sensor_data.durability)
        msg_type = CompressedImage if self.config.compressed else Image
        # raw=True: the serialized bytes, no Python message (see core/serving/cdr.py); the
        # worker parses only the frames it takes.
        if cam.reliable is None:  # the first subscription: publishers there before the node
            cam.stats.sequences.preexisting = {
                bytes(info.endpoint_gid) for info in
                self.node.get_publishers_info_by_topic(self.node.resolve_topic_name(cam.topic))}
        if WITH_MESSAGE_INFO:  # rclpy passes MessageInfo to a callback of two arguments
            callback = lambda data, info, i=i: self._on_frame(i, data, info)  # noqa: E731
        else:
            callback = lambda data, i=i: self._on_frame(i, data, None)  # noqa: E731
        cam.subscription = self.node.create_subscription(
            msg_type, cam.topic, callback, qos, raw=True,
            event_callbacks=SubscriptionEventCallbacks(
                message_lost=lambda info, i=i: self._on_lost(i, info.total_count_change)))
        cam.reliable = reliable
        self.node.get_logger().info(f"{cam.topic}: input QoS "
                                    f"{'reliable' if reliable else 'best effort'} "
                                    f'({self.config.qos_reliability})')

    def _on_frame(self, camera: int, data: bytes, info: dict | None) -> None:
        """A frame, and what rmw says of it (MessageInfo; None on Humble's rclpy)."""
        self.put(camera, data)
        if info is not None and info.get('publisher_gid'):
            self.cameras[camera].stats.sequences.seen(
                bytes(info['publisher_gid']['data']), info.get('publication_sequence_number'))
        elif not self._unaccounted_said:
            self._unaccounted_said = True
            self.node.get_logger().info(
                'frames replaced in the subscription queue or sent before it matched are not '
                "counted here: this rclpy's message info does not name the publisher (Humble, "
                'Jazzy); frames lost in DDS still are')

    def follow(self) -> None:
        """Publishers come and go (a camera driver restarts): follow their QoS."""
        for i in range(len(self.cameras)):
            self.subscribe(i)

    def subscribe_depth(self, i: int, depth_topic: str, info_topic: str) -> None:
        """Depth (serialized, kept for pairing by stamp) and camera_info for camera i."""
        cam = self.cameras[i]
        cam.depth_subscriptions = [
            self.node.create_subscription(Image, depth_topic, cam.state.put_depth,
                                          qos_profile_sensor_data, raw=True),
            self.node.create_subscription(CameraInfo, info_topic, cam.state.camera_info, 10)]

    def unsubscribe(self) -> None:
        for cam in self.cameras:
            for sub in [cam.subscription, *cam.depth_subscriptions]:
                if sub is not None:
                    self.node.destroy_subscription(sub)
            cam.subscription = cam.reliable = None
            cam.depth_subscriptions = []

    def _on_lost(self, camera: int, count: int) -> None:
        cam = self.cameras[camera]
        cam.stats.lost += count
        if not self._lost_warned:
            self._lost_warned = True
            self.node.get_logger().warning(
                f'{cam.topic}: {cam.stats.lost} frames lost in DDS before reaching the '
                f'detector. Fix: {dds_loss_fix()}')
