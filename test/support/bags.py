"""Bags the tests write themselves, with the real rosbags library: camera frames as
sensor_msgs/Image (any encoding) and CompressedImage, serialized by rosbags' own CDR
serializer (not by the code under test)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from support.needs import optional_module

# A product dependency (yolo-trt bag), but the GPU machine runs the suite without it: the
# tests that write bags skip there (and fail in CI when it is missing).
optional_module('rosbags', 'yolo-trt bag reads and writes bags with it')
from rosbags.rosbag2 import Reader, StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

STORE = get_typestore(Stores.ROS2_KILTED)
IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
STRING = 'std_msgs/msg/String'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'


def _header(sec: int, nanosec: int, frame_id: str):
    Header = STORE.types['std_msgs/msg/Header']
    Time = STORE.types['builtin_interfaces/msg/Time']
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def image_cdr(pixels: np.ndarray, encoding: str, sec: int, nanosec: int,
              frame_id: str = 'camera') -> bytes:
    """pixels: (H, W) or (H, W, C) in the encoding's channel order (uint16 for 16UC1)."""
    Image = STORE.types[IMAGE]
    h, w = pixels.shape[:2]
    msg = Image(header=_header(sec, nanosec, frame_id), height=h, width=w, encoding=encoding,
                is_bigendian=0, step=pixels.strides[0],
                data=np.ascontiguousarray(pixels).view(np.uint8).reshape(-1))
    return bytes(STORE.serialize_cdr(msg, IMAGE))


def compressed_cdr(data: bytes, fmt: str, sec: int, nanosec: int,
                   frame_id: str = 'camera') -> bytes:
    Compressed = STORE.types[COMPRESSED]
    msg = Compressed(header=_header(sec, nanosec, frame_id), format=fmt,
                     data=np.frombuffer(data, dtype=np.uint8))
    return bytes(STORE.serialize_cdr(msg, COMPRESSED))


def camera_info_cdr(k: list[float], width: int, height: int, sec: int, nanosec: int,
                    frame_id: str = 'camera') -> bytes:
    """A sensor_msgs/CameraInfo with camera matrix k (9 values, row-major), no distortion."""
    info_type = 'sensor_msgs/msg/CameraInfo'
    roi = STORE.types['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0,
                                                          width=0, do_rectify=False)
    k9 = np.array(k, dtype=np.float64)
    p12 = np.array([k[0], k[1], k[2], 0.0, k[3], k[4], k[5], 0.0, k[6], k[7], k[8], 0.0])
    msg = STORE.types[info_type](
        header=_header(sec, nanosec, frame_id), height=height, width=width,
        distortion_model='plumb_bob', d=np.zeros(5), k=k9, r=np.eye(3).reshape(-1), p=p12,
        binning_x=0, binning_y=0, roi=roi)
    return bytes(STORE.serialize_cdr(msg, info_type))


def string_cdr(text: str) -> bytes:
    return bytes(STORE.serialize_cdr(STORE.types[STRING](data=text), STRING))


@dataclass(frozen=True)
class Message:
    topic: str
    msgtype: str
    log_time: int  # ns
    data: bytes


def write_bag(path: Path, storage: str, messages: Iterable[Message]) -> Path:
    """A rosbag2 directory (storage 'mcap' or 'sqlite3') holding the messages."""
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    conns: dict[str, object] = {}
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        for m in messages:
            if m.topic not in conns:
                conns[m.topic] = writer.add_connection(m.topic, m.msgtype, typestore=STORE)
            writer.write(conns[m.topic], m.log_time, m.data)
    return path


def read_bag(path: Path) -> Iterator[Message]:
    """Every message of a bag, in log-time order."""
    with Reader(path) as reader:
        for conn, stamp, data in reader.messages():
            yield Message(conn.topic, conn.msgtype, stamp, bytes(data))


def topic_types(path: Path) -> dict[str, tuple[str, str, str]]:
    """topic -> (type, RIHS01 hash, message definition) as the bag stores them."""
    with Reader(path) as reader:
        return {c.topic: (c.msgtype, c.digest, c.msgdef.data) for c in reader.connections}
