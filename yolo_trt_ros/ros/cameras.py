"""A detector node's cameras: their lifecycle publishers (detections and, where the model
or the camera has them, 3D, masks, keypoints, the annotated image), and subscriptions that
hand the serialized frames to the intake, with the input QoS following the publishers;
depth and camera_info for cameras with depth."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from rclpy.lifecycle import LifecycleNode
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.subscription import Subscription
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from vision_msgs.msg import Detection2DArray, Detection3DArray

try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

from yolo_trt_ros.core.image.frame_buffers import FrameBuffers
from yolo_trt_ros.core.serving.batch import Served
from yolo_trt_ros.core.serving.cameras import CameraState, Tracking
from yolo_trt_ros.core.serving.config import NodeConfig
from yolo_trt_ros.core.serving.health import CameraStats, dds_loss_fix
from yolo_trt_ros.ros.frame_reader import FrameReader
from yolo_trt_ros.ros.rcl_take import GID_BYTES

# MessageInfo (publication sequence numbers) in subscription callbacks: rclpy of Iron on;
# Humble's calls every callback with the message alone.
WITH_MESSAGE_INFO = hasattr(Subscription, 'CallbackType')


def input_qos(reliable: bool, depth: int) -> QoSProfile:
    """An input's QoS: keep the newest `depth`, volatile, reliable or best effort."""
    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE if reliable
                      else ReliabilityPolicy.BEST_EFFORT,
                      durability=qos_profile_sensor_data.durability)


def is_reliable(subscription: Subscription | None) -> bool | None:
    """Whether a subscription is reliable; None where there is none (yet)."""
    if subscription is None:
        return None
    return subscription.qos_profile.reliability == ReliabilityPolicy.RELIABLE


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
    detections_3d: object = None  # the publisher, for cameras with depth
    depth_subscriptions: list = field(default_factory=list)  # depth image, camera_info
    masks: object = None  # publishers, for a segment model
    keypoints: object = None  # and a pose model

    @property
    def outputs(self) -> list:
        """Every publisher of this camera."""
        return [p for p in (self.detections, self.annotated, self.detections_3d, self.masks,
                            self.keypoints) if p is not None]

    def publish(self, served: Served, annotated: Callable[[], object] | None) -> None:
        """What the batch step made of one frame; annotated() draws the image (None where
        it cannot), asked only while someone subscribes to it."""
        self.detections.publish(served.message)
        # The other heads' outputs, aligned with `detections` by index and stamp.
        for pub, message in ((self.masks, served.masks), (self.keypoints, served.keypoints),
                             (self.detections_3d, served.message_3d)):
            if message is not None:
                pub.publish(message)
        if annotated is not None and self.annotated.get_subscription_count() > 0:
            image = annotated()
            if image is not None:
                self.annotated.publish(image)


def open_camera(node: LifecycleNode, i: int, config: NodeConfig, task: str,
                tracking: Tracking) -> Camera:
    """Camera i of config, its publishers made (they publish only while the node is
    active)."""
    topic, name, pub = config.topics[i], config.camera_names[i], node.create_lifecycle_publisher
    stats = CameraStats()
    return Camera(
        name or 'camera', join(topic, 'compressed') if config.compressed else topic,
        pub(Detection2DArray, join(name, 'detections'), 10),
        pub(Image, join(name, 'detections_image'), 2),
        stats, CameraState(tracking, stats.counts),
        detections_3d=pub(Detection3DArray, join(name, 'detections_3d'), 10)
        if config.depth.enabled(i) else None,
        masks=pub(Image, join(name, 'masks'), 2) if task == 'segment' else None,
        keypoints=pub(Detection2DArray, join(name, 'keypoints'), 10) if task == 'pose' else None)


def close_camera(node: LifecycleNode, camera: Camera) -> None:
    for pub in camera.outputs:
        node.destroy_lifecycle_publisher(pub)


class CameraInputs:
    """put(camera, serialized frame) is called from the subscriptions' callbacks."""

    def __init__(self, node: Node, config: NodeConfig, cameras: list[Camera],
                 put: Callable[[int, bytes], None]) -> None:
        self.node, self.config, self.cameras, self.put = node, config, cameras, put
        self._lost_warned = False
        self._unaccounted_said = False
        self._reader: FrameReader | None = None  # from subscribe_all to unsubscribe

    def _reader_failed(self, exc: Exception) -> None:
        self.node.get_logger().error(
            f'taking a frame failed: {type(exc).__name__}: {exc} (please report this); '
            'the next frame is taken as usual', throttle_duration_sec=10.0)

    def _wants_reliable(self, topic: str) -> bool:
        """auto: reliable when every publisher is (as rosbag2 and `ros2 topic echo` do), so
        a reliable camera's large frames are resent instead of lost; best effort otherwise,
        which matches every publisher."""
        if self.config.qos_reliability != 'auto':
            return self.config.qos_reliability == 'reliable'
        infos = self.node.get_publishers_info_by_topic(topic)
        return bool(infos) and all(
            i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)

    def _reliability_to_use(self, resolved: str, subscription: Subscription | None
                            ) -> bool | None:
        """The reliability the subscription to `resolved` should have; None where
        `subscription` has it already."""
        wanted = self._wants_reliable(resolved)
        return None if wanted == is_reliable(subscription) else wanted

    def _said(self, topic: str, reliable: bool, history: int) -> None:
        self.node.get_logger().info(f"{topic}: input QoS "
                                    f"{'reliable' if reliable else 'best effort'} "
                                    f'({self.config.qos_reliability}), depth {history}')

    def subscribe(self, i: int) -> None:
        """Subscribe camera i, or subscribe again where its publishers' QoS changed."""
        cam = self.cameras[i]
        resolved = self.node.resolve_topic_name(cam.topic)
        reliable = self._reliability_to_use(resolved, cam.subscription)
        if reliable is None:
            return
        if cam.subscription is not None:
            self._reader.remove(cam.subscription)
            self.node.destroy_subscription(cam.subscription)
        qos = input_qos(reliable, self.config.qos_depth)
        msg_type = CompressedImage if self.config.compressed else Image
        # raw=True: the serialized bytes, no Python message (see core/serving/cdr.py); the
        # worker parses only the frames it takes.
        if cam.subscription is None:  # the first: publishers there before the node
            cam.stats.sequences.preexisting = {  # as rcl_take.py reads a sample's gid
                bytes(info.endpoint_gid)[:GID_BYTES] for info in
                self.node.get_publishers_info_by_topic(resolved)}
        # Served by the frame reader's thread, not the executor (frame_reader.py says why);
        # the same handler is the callback, for an executor that ignores callback groups.
        def on_frame(data: bytes, info: dict | None, i: int = i) -> None:
            self._on_frame(i, data, info)
        cam.subscription = self.node.create_subscription(
            msg_type, cam.topic, on_frame if WITH_MESSAGE_INFO else lambda d: on_frame(d, None),
            qos, raw=True, callback_group=self._reader.group,
            event_callbacks=SubscriptionEventCallbacks(
                message_lost=lambda info, i=i: self._on_lost(i, info.total_count_change)))
        self._reader.add(cam.subscription, on_frame)
        self._said(cam.topic, reliable, self.config.qos_depth)

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
        for i, cam in enumerate(self.cameras):
            self.subscribe(i)
            if cam.depth_subscriptions:
                self.subscribe_depth(i)

    def subscribe_all(self, buffers: FrameBuffers | None = None) -> None:
        """Every camera's image (and depth) subscriptions, each logged with its outputs;
        buffers: the memory frames are taken into (frame_reader.py)."""
        log, depth = self.node.get_logger(), self.config.depth
        self._reader = FrameReader(self.node.context, self._reader_failed, WITH_MESSAGE_INFO,
                                   buffers)
        log.info(self._reader.taking)
        for i, cam in enumerate(self.cameras):
            self.subscribe(i)
            for pub in cam.outputs:
                if pub is not cam.annotated and pub is not cam.detections_3d:
                    log.info(f'{cam.topic} -> {pub.topic_name}')
            if cam.detections_3d is not None:
                self.subscribe_depth(i)
                log.info(f'{depth.topics[i]} + {depth.info_topics[i]} -> '
                         f'{cam.detections_3d.topic_name}')

    def subscribe_depth(self, i: int) -> None:
        """Depth (serialized, kept for pairing by stamp) and camera_info for camera i, or
        either again where its publishers' QoS changed: the input QoS, as for the image (a
        fixed best-effort depth lost a reliable camera's large frames in fragments, and a
        fixed reliable camera_info never matched a best-effort driver's)."""
        cam, depth = self.cameras[i], self.config.depth
        inputs = ((Image, depth.topics[i], cam.state.put_depth, True, 5),
                  (CameraInfo, depth.info_topics[i], cam.state.camera_info, False, 10))
        subs = cam.depth_subscriptions or [None] * len(inputs)
        for k, (msg_type, topic, callback, raw, history) in enumerate(inputs):
            reliable = self._reliability_to_use(self.node.resolve_topic_name(topic), subs[k])
            if reliable is None:
                continue
            if subs[k] is not None:
                self.node.destroy_subscription(subs[k])
            subs[k] = self.node.create_subscription(msg_type, topic, callback,
                                                    input_qos(reliable, history), raw=raw)
            self._said(topic, reliable, history)
        cam.depth_subscriptions = subs

    def unsubscribe(self) -> None:
        for cam in self.cameras:
            if cam.subscription is not None:
                self._reader.remove(cam.subscription)
            for sub in [cam.subscription, *cam.depth_subscriptions]:
                if sub is not None:
                    self.node.destroy_subscription(sub)
            cam.subscription = None
            cam.depth_subscriptions = []
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _on_lost(self, camera: int, count: int) -> None:
        cam = self.cameras[camera]
        cam.stats.lost += count
        wanted = self._reliability_to_use(self.node.resolve_topic_name(cam.topic),
                                          cam.subscription)
        if wanted is not None:
            # auto QoS subscribed (best effort) before the camera was discovered, and is about
            # to follow it: the start-up's loss, not a DDS setting to fix (nor the warning
            # spent on it, which a later real loss needs)
            qos = ('best effort', 'reliable')
            self.node.get_logger().info(
                f'{cam.topic}: {count} frames lost while subscribed {qos[not wanted]}, before '
                f'the publishers were known to be {qos[wanted]}; the subscription follows '
                'them within a second')
            return
        if not self._lost_warned:
            self._lost_warned = True
            fix = dds_loss_fix(reliable=bool(is_reliable(cam.subscription)))
            self.node.get_logger().warning(
                f'{cam.topic}: {cam.stats.lost} frames lost in DDS before reaching the '
                f'detector. Fix: {fix}')
