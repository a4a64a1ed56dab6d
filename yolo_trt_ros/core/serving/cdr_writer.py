"""Write vision_msgs/Detection2DArray straight to its serialized (CDR) bytes.

The twin of cdr.py's reader: the node publishes these bytes (rclpy's Publisher.publish
takes a serialized message as `bytes`) instead of building a Python message field by field
and having rclpy serialize it: 0.03 vs 0.43 ms for 20 detections, 0.23 vs 6.5 ms for 300
on the 2-core dev machine (bench/message_build.py). rclpy deserializes the bytes to exactly
the message `ros.conversions.detection_array` builds (test/test_cdr_writer.py).

Layout (plain CDR, little-endian; alignment counts from the end of the 4-byte
encapsulation header): Detection2DArray {Header header; Detection2D[] detections}, where
Detection2D {Header header; ObjectHypothesisWithPose[] results (one); BoundingBox2D bbox;
string id (empty)}, ObjectHypothesisWithPose {string class_id; float64 score;
PoseWithCovariance pose (zero position, identity orientation, zero covariance)} and
BoundingBox2D {float64 center.x, center.y, theta (0), size_x, size_y}.
"""
from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np

from yolo_trt_ros.core.pipeline.results import Detections
from yolo_trt_ros.core.serving.cdr import Stamped

_ENCAPSULATION = b'\x00\x01\x00\x00'  # CDR, little-endian
# PoseWithCovariance as a detector leaves it: position 0, orientation (0, 0, 0, 1), 36 zeros.
_POSE = struct.pack('<7d', 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0) + bytes(36 * 8)
_EMPTY_ID = struct.pack('<I', 1) + b'\x00'  # string id: length 1 (the NUL), then the NUL
_F64 = struct.Struct('<d')
_BBOX = struct.Struct('<5d')
_ID_PAD = bytes(3)  # the id ends 8-aligned + 5: the next detection starts 4-aligned
_DETECTION_TAIL = 8 + len(_POSE) + _BBOX.size + len(_EMPTY_ID) + len(_ID_PAD)


def _string(text: str) -> bytes:
    """A CDR string: uint32 length counting the trailing NUL, the UTF-8 bytes, the NUL."""
    raw = text.encode()
    return struct.pack('<I', len(raw) + 1) + raw + b'\x00'


def _pad(offset: int, size: int) -> bytes:
    return bytes(-offset % size)


def detection_array_cdr(det: Detections, header: Stamped,
                        class_id_of: Callable[[int], str]) -> bytes:
    """Detections (original pixels, xyxy) -> a serialized Detection2DArray with `header`
    on the array and on every detection, as ros.conversions.detection_array builds it.

    class_id_of(int) -> str: the hypothesis class_id (label name, or the index as text).
    """
    stamp = struct.pack('<iI', header.sec, header.nanosec) + _string(header.frame_id)
    parts = [_ENCAPSULATION, stamp, _pad(len(stamp), 4), struct.pack('<I', len(det))]
    offset = sum(map(len, parts)) - len(_ENCAPSULATION)
    # Each detection starts 4-aligned; everything up to the label is the same per class.
    det_header = stamp + _pad(len(stamp), 4) + struct.pack('<I', 1)  # header; one result
    prefixes: dict[int, bytes] = {}  # class id -> detection header + result count + label
    boxes = det.boxes.astype(np.float64)  # the same arithmetic as detection_array
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sizes = boxes[:, 2:] - boxes[:, :2]
    for (cx, cy), (w, h), score, cid in zip(centres.tolist(), sizes.tolist(),
                                            det.scores.tolist(), det.class_ids.tolist(),
                                            strict=True):
        prefix = prefixes.get(cid)
        if prefix is None:
            prefix = prefixes[cid] = det_header + _string(class_id_of(cid))
        pad = _pad(offset + len(prefix), 8)  # the score is a float64: 8-aligned
        parts += (prefix, pad, _F64.pack(score), _POSE, _BBOX.pack(cx, cy, 0.0, w, h),
                  _EMPTY_ID, _ID_PAD)
        offset += len(prefix) + len(pad) + _DETECTION_TAIL
    if len(det):
        parts.pop()  # no padding after the message's last field
    return b''.join(parts)
