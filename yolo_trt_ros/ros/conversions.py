"""ROS messages <-> core types. No image or tensor math here: that lives in core."""
from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import (
    BoundingBox2D,
    Detection2D,
    Detection2DArray,
    LabelInfo,
    ObjectHypothesisWithPose,
    VisionClass,
)

from yolo_trt_ros.core.image.buffers import ImageView, view_image
from yolo_trt_ros.core.image.decode import decode_compressed
from yolo_trt_ros.core.pipeline.results import Detections
from yolo_trt_ros.core.serving.cdr import Stamped
from yolo_trt_ros.core.serving.cdr_writer import box_geometry
from yolo_trt_ros.core.serving.health import CameraStats, Window


def image_view(msg: Image | CompressedImage) -> ImageView:
    """A zero-copy view of a raw Image, or the decoded CompressedImage. Raises ImageError."""
    if isinstance(msg, CompressedImage):
        return decode_compressed(msg.data, msg.format)
    return view_image(msg.data, msg.height, msg.width, msg.encoding, msg.step,
                      bool(msg.is_bigendian))


def header_message(stamp: Stamped) -> Header:
    header = Header(frame_id=stamp.frame_id)
    header.stamp.sec, header.stamp.nanosec = stamp.sec, stamp.nanosec
    return header


def detection_array(det: Detections, header: Header, class_id_of) -> Detection2DArray:
    """Detections (original pixels, xyxy) -> Detection2DArray with the image's header.

    class_id_of(int) -> str: the label name, or the index as text (a parameter decides).
    `id`: the track id in decimal, or empty without a tracker.
    """
    out = Detection2DArray(header=header)
    ids = [''] * len(det) if det.track_ids is None else [str(i) for i in det.track_ids.tolist()]
    centres, sizes, thetas = box_geometry(det)
    for (cx, cy), (w, h), theta, score, cid, ident in zip(
            centres.tolist(), sizes.tolist(), thetas.tolist(), det.scores.tolist(),
            det.class_ids.tolist(), ids, strict=True):
        d = Detection2D(header=header, id=ident)
        d.bbox = BoundingBox2D(size_x=w, size_y=h)
        d.bbox.center.position.x, d.bbox.center.position.y = cx, cy
        d.bbox.center.theta = theta
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id, hyp.hypothesis.score = class_id_of(cid), score
        d.results.append(hyp)
        out.detections.append(d)
    return out


def label_info(names: list[str], threshold: float, header: Header) -> LabelInfo:
    return LabelInfo(header=header, threshold=float(threshold),
                     class_map=[VisionClass(class_id=i, class_name=n) for i, n in enumerate(names)])


def bgr_image(bgr: np.ndarray, header: Header) -> Image:
    """(H, W, 3) uint8 BGR -> sensor_msgs/Image bgr8."""
    h, w = bgr.shape[:2]
    msg = Image(header=header, height=h, width=w, encoding='bgr8', is_bigendian=0, step=w * 3)
    msg.data = np.ascontiguousarray(bgr).tobytes()
    return msg


def camera_status(node: str, name: str, topic: str, totals: Window, stats: CameraStats,
                  backend: str, health: tuple[int, str]) -> DiagnosticStatus:
    """One camera's counters (since start), latency percentiles and health (over the last
    window) as a DiagnosticStatus named by the node's full name and the camera, so that two
    detectors in different namespaces never share a name."""
    bad = sum(stats.bad_reported.values())  # as tick() read them for the health
    values = {'topic': topic, 'backend': backend, 'frames_in': totals.frames_in,
              'processed': totals.processed, 'dropped': totals.dropped,
              'lost_in_dds': totals.lost, 'replaced_in_queue': totals.replaced,
              'unmatched': totals.unmatched, 'bad_input': bad}
    values.update({f'bad_input.{cause}': n for cause, n in sorted(stats.bad_reported.items())})
    values.update(sorted(stats.counts.items()))
    values.update({f'latency_ms.{k}': round(v, 2) for k, v in stats.percentiles_ms().items()})
    # Of which waiting for the worker (the rest: parse, decode, detect, publish).
    values.update({f'queue_ms.{k}': round(v, 2)
                   for k, v in stats.percentiles_ms('waits').items()})
    level, message = health
    return DiagnosticStatus(level=bytes([level]), name=f'{node}: {name}',
                            hardware_id=name, message=message,
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
