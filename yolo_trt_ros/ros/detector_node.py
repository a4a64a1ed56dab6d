"""detector: images (and aligned depth) in, Detection2DArray (and Detection3DArray) out; a
managed (lifecycle) node.

Wiring only: parameters, subscriptions, publishers, timers and the lifecycle. configure
opens the model and engine and validates everything; activate subscribes and starts the
core's worker (core/serving/worker.py), which runs the batch step (parse -> decode ->
detect -> serialize) on every camera's newest frame; deactivate stops work and publishing
within a frame and gives back the GPU memory of running; cleanup releases the engine.
With autostart (the default) the node configures and activates itself at start.
"""
from __future__ import annotations

import dataclasses
import os
import time

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String
from vision_msgs.msg import LabelInfo

from yolo_trt_ros.core.errors import ImageError, YoloTrtError
from yolo_trt_ros.core.runtime.detector import Detector, DetectorConfig
from yolo_trt_ros.core.serving.batch import BatchResult, BatchStep, Served
from yolo_trt_ros.core.serving.cameras import Tracking
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
from yolo_trt_ros.core.serving.health import LogOncePerCause
from yolo_trt_ros.core.serving.memory import keep_frame_memory
from yolo_trt_ros.core.serving.params import checked_value
from yolo_trt_ros.core.serving.pauses import Pauses, freeze_heap, thaw_heap
from yolo_trt_ros.core.serving.worker import Worker
from yolo_trt_ros.ros.cameras import Camera, CameraInputs, close_camera, open_camera
from yolo_trt_ros.ros.conversions import bgr_image, camera_status, header_message, label_info
from yolo_trt_ros.ros.engine_topic import announced_engine, engine_message
from yolo_trt_ros.ros.log_bridge import route_to
from yolo_trt_ros.ros.parameters import (
    LATCHED_QOS,
    declare,
    keep_kinds,
    kind_refusal,
    unknown_overrides,
    value_of,
)
from yolo_trt_ros.ros.rcl_take import available as take_available
from yolo_trt_ros.ros.runner import run

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
FRAME_HEADER_BYTES = 4096  # a serialized frame's CDR fields besides its pixels, and more


class DetectorNode(LifecycleNode):
    def __init__(self) -> None:
        super().__init__('detector')
        self._log_route = route_to(self.get_logger())
        self.get_logger().info(keep_frame_memory())  # the process's, before any frame
        declare(self, BUILD_PARAMETERS)
        declare(self, DETECTOR_PARAMETERS)
        unknown = unknown_overrides(self, set(BUILDER_PARAMETERS))
        if unknown:
            self.get_logger().warning(f'parameters given but not known to the detector: '
                                      f"{', '.join(unknown)}")
        self.config = self.detector = self.step = self.frames = self.worker = None
        self._buffers = self._pauses = None
        self._frozen = False  # this node froze the heap (and thaws it when it stops)
        self.cameras: list[Camera] = []
        self._timers: list = []
        self.configure_error: Exception | None = None  # why the last configure failed
        self._log_gate = LogOncePerCause()
        keep_kinds(self, DETECTOR_PARAMETERS)
        self.add_on_set_parameters_callback(self._on_parameters)

    def start(self) -> None:
        """autostart: configure and activate now; raises what made configure fail."""
        if not value_of(self, 'autostart'):
            self.get_logger().info('autostart false: waiting for a lifecycle manager')
            return
        if self.trigger_configure() != SUCCESS:
            raise self.configure_error or YoloTrtError('configure failed')
        self.trigger_activate()

    # -- the lifecycle -------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        log = self.get_logger()
        try:
            given = {name: value_of(self, name)
                     for name in (*BUILD_PARAMETERS, *DETECTOR_PARAMETERS)}
            self.config = detector_config(given)
            self.detector = Detector.open(self._with_engine(self.config.detector))
            # `classes` can only be checked against the model's classes now
            values = self._runtime_values()
            self.detector.post = post_config(values, self._class_names())
        except (ValueError, YoloTrtError) as exc:
            self.configure_error = exc
            log.error(f'{"bad parameter" if isinstance(exc, ValueError) else "cannot start"}'
                      f': {exc}')
            self._release()
            return FAILURE
        info = self.detector.backend.info
        gpu = os.environ.get('CUDA_VISIBLE_DEVICES')  # a worker's GPU (launch's devices:=)
        log.info(f'backend {info.name} on {info.device}'
                 f"{f' (CUDA_VISIBLE_DEVICES={gpu})' if gpu is not None else ''}: {info.reason}")
        log.info(f'model {self.config.detector.model} ({self.detector.task}, '
                 f'{self.detector.output_format}, input {self.detector.input_size[1]}x'
                 f'{self.detector.input_size[0]})')
        task = self.detector.task
        self.tracking = Tracking(tracker_config(values), values['track_reset_gap_s'])
        self.cameras = [open_camera(self, i, self.config, task, self.tracking)
                        for i in range(len(self.config.topics))]
        self.label_pub = self.create_lifecycle_publisher(LabelInfo, 'label_info', LATCHED_QOS)
        self.engine_pub = self.create_lifecycle_publisher(String, 'engine', LATCHED_QOS)
        self.diagnostics = self.create_lifecycle_publisher(DiagnosticArray, '/diagnostics', 10)
        label = str if self.config.class_id_as_index else self.detector.label
        self.step = BatchStep(self.detector, self.config.compressed,
                              self.config.max_image_pixels, label,
                              [c.state for c in self.cameras], self.config.depth)
        self.inputs = CameraInputs(self, self.config, self.cameras,
                                   lambda i, data: self.frames.put(i, data))
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.detector.resume()
        except YoloTrtError as exc:
            self.get_logger().error(f'cannot activate: {exc}')
            return FAILURE
        max_pixels = self.config.max_image_pixels
        try:
            # CompressedImage: each camera decodes in a process of its own, off the shared
            # path. Decoders and pipeline are warmed here, before the node subscribes, so
            # that the first frames are served like the rest (issue 21).
            started = time.monotonic()
            self.frames = Intake(len(self.cameras), self.config.compressed, max_pixels,
                                 lambda: self.detector.jpeg_on_gpu(max_pixels),
                                 self.config.decode_timeout_s)
            h, w = self.step.warm_up(len(self.cameras))
        except (YoloTrtError, ValueError) as exc:  # ValueError: a bad warm-up size asked for
            self.get_logger().error(f'cannot activate: {exc}')
            if self.frames is not None:
                self.frames.close()
            self.frames = None
            return FAILURE
        self.get_logger().info(f'warmed up for {w}x{h} frames in '
                               f'{time.monotonic() - started:.2f} s')
        self._pauses = Pauses()
        self.worker = Worker(self.frames, self.step, self._deliver, self._pauses.step)
        super().on_activate(state)  # the lifecycle publishers publish from now on
        self._publish_label_info()
        # The builder's announcement ends with its process; this one lasts as long as the
        # detector and says what it really loaded.
        info = self.detector.backend.info
        self.engine_pub.publish(engine_message(
            engine_path=info.engine_path, backend=info.name,
            model=str(self.config.detector.model), announced_by='detector'))
        # What exists now lives as long as the node serves: out of the collector's walks
        # (core/serving/pauses.py), which otherwise stop every thread for that long. Before
        # the subscriptions: the one full collection here must not hold up their frames.
        self._frozen = freeze_heap()
        self._pauses.start()
        self.get_logger().info('garbage collector: the warmed-up heap frozen' if self._frozen
                               else 'garbage collector: as Python sets it')
        self.worker.start()
        self._buffers = self.detector.frame_buffers()
        if take_available():  # frames are taken into these buffers (not by rclpy)
            # Two per camera (what 8 raw cameras in one process used on the H100 host), for
            # frames as large as the warm-up's: bgr8, or a JPEG of at most 6 bits a pixel.
            frame_bytes = (h * w * 3 // (4 if self.config.compressed else 1)
                           + FRAME_HEADER_BYTES)
            self._buffers.reserve(frame_bytes, 2 * len(self.cameras))
        self.inputs.subscribe_all(self._buffers)
        self._timers = [self.create_timer(1.0, self._publish_diagnostics)]
        if self.config.qos_reliability == 'auto':
            self._timers.append(self.create_timer(1.0, self.inputs.follow))
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_work()
        self.detector.suspend()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_work()
        self._release()
        return SUCCESS

    def _stop_work(self) -> None:
        """No new frame is taken, the one in flight is published, then nothing more."""
        if self.cameras:
            self.inputs.unsubscribe()
        for timer in self._timers:
            self.destroy_timer(timer)
        self._timers = []
        if self.worker is not None:
            self.worker.stop()
        if self._pauses is not None:  # stopped before the thaw's collection: not serving's
            self._pauses.stop()
            self.get_logger().info(f'worker: {self._pauses.summary()}; '
                                   f'{self.detector.graph_use}')
        if self._frozen:
            thaw_heap()
            self._frozen = False
        if self._buffers is not None:  # after the worker: it may still hold a frame
            b = self._buffers
            count, size = b.ordinary_blocks
            self.get_logger().info(
                f'frame buffers: {len(b)} of {b.kind} memory, {b.pooled_bytes >> 20} MB '
                f'({b.allocations} allocated, {b.reserved} of them before the first frame, '
                f'the longest in '
                f'{b.longest_allocation_s * 1e3:.1f} ms)'
                + (f'; {b.overflowed} frames above the limit got their own' if b.overflowed
                   else '')
                + (f'; {b.kind} memory refused {b.refused} times ({b.refusal}): '
                   f'{count} blocks ({size >> 20} MB) are ordinary memory' if b.refused
                   else ''))
            b.close()
        if self.frames is not None:  # after the worker: every frame counted
            for i, cam in enumerate(self.cameras):
                cam.stats.intake_closed(self.frames.received(i), self.frames.dropped(i))
        self.worker = self.frames = self._buffers = self._pauses = None

    def _release(self) -> None:
        for cam in self.cameras:
            close_camera(self, cam)
        if self.cameras:
            for pub in (self.label_pub, self.engine_pub, self.diagnostics):
                self.destroy_lifecycle_publisher(pub)
        self.cameras = []
        if self.detector is not None:
            self.detector.close()
        self.detector = self.step = self.config = None

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
        return dataclasses.replace(config, engine=announced_engine(
            self, self.config.engine_wait_s))

    # -- results (on the worker thread) ----------------------------------------------------
    def _deliver(self, result: BatchResult) -> None:
        for refused in result.refused:
            self._bad_input(refused.camera, refused.cause, refused.reason)
        for served in result.served:
            camera = self.cameras[served.frame.camera]
            camera.publish(served, (lambda s=served: self._annotated(s))
                           if self.config.publish_annotated else None)
            received = served.frame.received
            camera.stats.add_latency(time.monotonic() - received, result.taken - received)
            bad = camera.stats.count_3d(served.message_3d is not None, served.left_out,
                                        served.depth_problem)
            if bad is not None:
                self._bad_input(served.frame.camera, bad.cause, bad.reason, 'no 3D')

    def _annotated(self, served: Served) -> Image | None:
        """The annotated image, or None (logged once per camera) where it cannot be drawn."""
        image = self.step.annotated(served)
        if isinstance(image, ImageError):
            camera = served.frame.camera
            if self._log_gate.should_log(f'{camera}:annotated'):
                self.get_logger().warning(f'{self.cameras[camera].topic}: annotated image '
                                          f'skipped, detections published ({image})')
            return None
        return bgr_image(image, header_message(served.header))

    def _bad_input(self, camera: int, cause: str, message: str,
                   skipped: str = 'bad frame skipped') -> None:
        cam = self.cameras[camera]
        count = cam.stats.add_bad(cause)
        if self._log_gate.should_log(f'{camera}:{cause}'):
            self.get_logger().warning(f'{cam.topic}: {skipped} ({cause}, {count} so far): '
                                      f'{message}')

    # -- side channels -------------------------------------------------------------------
    def _publish_label_info(self) -> None:
        # conf_threshold as given: with a tracker the detector keeps less confident ones too
        header = Header(stamp=self.get_clock().now().to_msg())
        self.label_pub.publish(label_info(self._class_names(), value_of(self, 'conf_threshold'),
                                          header))

    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        backend = self.detector.backend.info.name
        for i, cam in enumerate(self.cameras):
            totals, health = cam.stats.tick(self.frames.received(i), self.frames.dropped(i))
            msg.status.append(camera_status(self.get_fully_qualified_name(), cam.name,
                                            cam.topic, totals, cam.stats, backend, health))
        self.diagnostics.publish(msg)

    def _on_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for p in params:
            if p.name not in RUNTIME:
                return SetParametersResult(successful=False,
                                           reason=f'{p.name} is read-only: restart to change it')
        values = self._runtime_values()
        try:
            for p in params:
                refusal = kind_refusal(p, DETECTOR_PARAMETERS[p.name])
                if refusal:
                    return SetParametersResult(successful=False, reason=refusal)
                values[p.name] = checked_value(p.name, p.value, DETECTOR_PARAMETERS[p.name])
            post = post_config(values, self._class_names() if self.detector else None)
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if self.detector is None:
            return SetParametersResult(successful=True)  # taken at the next configure
        self.detector.post = post  # one reference swap: the worker sees old or new, whole
        self.tracking.set(tracker_config(values), values['track_reset_gap_s'])  # checked
        if any(p.name == 'conf_threshold' for p in params):
            self._publish_label_info()
        self.get_logger().info(f'thresholds now conf {post.conf_threshold}, iou '
                               f'{post.iou_threshold}, max {post.max_detections}, classes '
                               f"{list(post.classes) if post.classes else 'all'}")
        return SetParametersResult(successful=True)

    def close(self) -> None:
        """Shut down from whatever state the node is in (the lifecycle's shutdown), unless a
        lifecycle manager already did."""
        if self._state_machine.current_state[1] != 'finalized':
            self.trigger_shutdown()


def main(args=None) -> None:
    run(DetectorNode, 'detector', args)


if __name__ == '__main__':
    main()
