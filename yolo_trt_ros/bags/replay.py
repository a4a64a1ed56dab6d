"""A bag's camera frames with the times they were recorded at, for the ROS benchmarks'
replay (bench/capacity.py, bench/ros_roundtrip.py --bag): they publish each frame's bytes
as recorded, at the recorded rate, as ros2_benchmark plays a bag into the graph under test.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from yolo_trt_ros.bags.source import Camera, cameras, messages, open_bag
from yolo_trt_ros.core.errors import ImageError
from yolo_trt_ros.core.serving.cdr import parse_compressed, parse_image


@dataclass(frozen=True)
class Recording:
    cameras: list[Camera]
    frames: int
    seconds: float  # from the first frame's log time to the last one's
    size: str  # WxH of the first raw frame ('' for compressed frames)

    @property
    def fps(self) -> float:
        """Frames per second per camera, as recorded."""
        per_camera = self.frames / max(len(self.cameras), 1)
        return (per_camera - 1) / self.seconds if self.seconds > 0 and per_camera > 1 else 0.0


def survey(path: Path, topics: Sequence[str] = ()) -> Recording:
    """The cameras of the bag and its recorded rate (one pass over the bag)."""
    with open_bag(path) as reader:
        chosen = cameras(reader, path, topics)
        by_topic = {cam.topic for cam in chosen}
        first = last = None
        count, size = 0, ''
        for conn, stamp, data in messages(reader, path):
            if conn.topic not in by_topic:
                continue
            first = stamp if first is None else first
            last, count = stamp, count + 1
            if not size and conn.msgtype.endswith('/Image'):
                try:
                    raw = parse_image(data)
                    size = f'{raw.width}x{raw.height}'
                except ImageError:
                    pass
    seconds = (last - first) / 1e9 if first is not None else 0.0
    return Recording(chosen, count, seconds, size)


def frames(path: Path, topics: Sequence[str], loop_s: float = 0.0
           ) -> Iterator[tuple[Camera, float, bytes]]:
    """(camera, seconds after the start at which it is due, serialized frame) in recorded
    order; played again (shifted by the recording's length plus one frame period) until
    loop_s seconds are filled, when loop_s is given."""
    offset = 0.0
    while True:
        with open_bag(path) as reader:
            chosen = {cam.topic: cam for cam in cameras(reader, path, topics)}
            first = last = None
            for conn, stamp, data in messages(reader, path):
                cam = chosen.get(conn.topic)
                if cam is None:
                    continue
                first = stamp if first is None else first
                last = stamp
                due = offset + (stamp - first) / 1e9
                if loop_s and due >= loop_s:
                    return
                yield cam, due, data
        if not loop_s or first is None:
            return
        span = (last - first) / 1e9
        per_camera = sum(c.frames for c in chosen.values()) / len(chosen)
        offset += span + span / max(per_camera - 1, 1)  # plus one frame period


def header_stamp(cam: Camera, data) -> tuple[int, int]:
    """(sec, nanosec) of a serialized frame: how a replayed frame's answer is matched."""
    header = (parse_compressed(data) if cam.compressed else parse_image(data)).header
    return header.sec, header.nanosec
