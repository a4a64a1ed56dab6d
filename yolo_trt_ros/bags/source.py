"""A recorded ROS 2 bag as input: open it (rosbag2 directory, or a lone .mcap / .db3 file),
choose its camera topics, and read its messages still serialized, in recorded order.

Everything a user can get wrong about a bag ends here as a BagError with one line: a path
that does not exist, a file that is no bag, a corrupt one, no image topics, a topic asked
for that the bag lacks or that holds no images.
"""
from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from yolo_trt_ros.core.errors import YoloTrtError, one_line

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
IMAGE_TYPES = (IMAGE, COMPRESSED)
log = logging.getLogger(__name__)


class BagError(YoloTrtError):
    """A bag cannot be read or written as asked."""


@dataclass(frozen=True)
class Camera:
    """One image topic of the bag and where its detections go."""

    index: int
    topic: str
    msgtype: str
    detections: str  # the detections topic
    frames: int  # messages on the topic (0 where the bag does not say)
    depth: str = ''  # its aligned depth image topic ('' without 3D)
    camera_info: str = ''  # the depth's camera_info topic

    @property
    def compressed(self) -> bool:
        return self.msgtype == COMPRESSED

    @property
    def detections_3d(self) -> str:
        return camera_topic(self.topic, 'detections_3d')

    @property
    def masks(self) -> str:
        return camera_topic(self.topic, 'masks')

    @property
    def keypoints(self) -> str:
        return camera_topic(self.topic, 'keypoints')


def camera_topic(topic: str, name: str) -> str:
    """The node's naming: the camera is the image topic's parent, so /cam/image_raw and
    /cam/image_raw/compressed both give /cam/<name> (and /image_raw gives /<name>)."""
    parts = [p for p in topic.split('/') if p]
    if parts and parts[-1] == 'compressed':
        parts.pop()
    return '/' + '/'.join([*parts[:-1], name])


def detections_topic(topic: str) -> str:
    return camera_topic(topic, 'detections')


def _absolute(topic: str) -> str:
    return topic if topic.startswith('/') else '/' + topic


def _reader(path: Path):
    from rosbags.rosbag2 import Reader

    if not path.exists():
        raise BagError(f'{path}: no such bag (a rosbag2 directory, or an .mcap or .db3 file)')
    if path.is_dir() and not (path / 'metadata.yaml').is_file():
        raise BagError(f'{path}: not a rosbag2 directory (it has no metadata.yaml)')
    try:
        return Reader(path)
    except Exception as exc:  # rosbags' own error types vary with the storage: one line
        raise BagError(f'{path}: not a bag rosbags can read: {one_line(exc)}') from exc


@contextmanager
def open_bag(path: Path) -> Iterator:
    """The open rosbags Reader of `path`; a bag that fails to open or read raises BagError
    (corrupt files fail in many layers of the library: each is one line here)."""
    reader = _reader(path)
    try:
        reader.open()
    except Exception as exc:
        raise BagError(f'{path}: cannot open the bag: {one_line(exc)}') from exc
    try:
        yield reader
    finally:
        try:
            reader.close()
        except Exception:  # closing a half-read corrupt file: nothing to add
            pass


def cameras(reader, path: Path, topics: Sequence[str] = ()) -> list[Camera]:
    """The image topics to run on: those named (each must be in the bag and hold Image or
    CompressedImage), else every such topic of the bag, in name order."""
    types: dict[str, str] = {}
    counts: dict[str, int] = {}
    for conn in reader.connections:
        types.setdefault(conn.topic, conn.msgtype)
        counts[conn.topic] = counts.get(conn.topic, 0) + (conn.msgcount or 0)
    if topics:
        chosen = []
        for topic in topics:
            name = _absolute(topic)
            if name not in types:
                raise BagError(f'{path}: topic {topic} is not in the bag (image topics there: '
                               f'{_listed(t for t, m in types.items() if m in IMAGE_TYPES)})')
            if types[name] not in IMAGE_TYPES:
                raise BagError(f'{path}: topic {topic} holds {types[name]}, not '
                               'sensor_msgs/Image or CompressedImage')
            if name not in chosen:
                chosen.append(name)
    else:
        chosen = sorted(t for t, m in types.items() if m in IMAGE_TYPES)
        if not chosen:
            raise BagError(f'{path}: no sensor_msgs/Image or CompressedImage topic in the bag '
                           f'(its topics: {_listed(types)})')
    result = [Camera(i, t, types[t], detections_topic(t), counts[t])
              for i, t in enumerate(chosen)]
    _check_outputs(result, types, path)
    return result


def with_depth(reader, path: Path, chosen: list[Camera], depth_topics: Sequence[str],
               info_topics: Sequence[str] = ()) -> list[Camera]:
    """The cameras with their aligned depth topics (one entry per camera, in order; '' for a
    camera without) and camera_info topics (default: the depth topic's sibling camera_info,
    as the node's default)."""
    if not depth_topics:
        if info_topics:
            raise BagError('--camera-info-topics without --depth-topics')
        return chosen
    for option, given in (('--depth-topics', depth_topics), ('--camera-info-topics',
                                                              info_topics)):
        if given and len(given) != len(chosen):
            raise BagError(f'{option}: {len(given)} topics for {len(chosen)} cameras ('
                           f"{', '.join(c.topic for c in chosen)}; '' for a camera without "
                           'depth; name the cameras with --topics to fix their order)')
    types = {}
    for conn in reader.connections:
        types.setdefault(conn.topic, conn.msgtype)
    result = []
    for cam, depth, info in zip(chosen, depth_topics, info_topics or [''] * len(chosen),
                                strict=True):
        if not depth:
            result.append(cam)
            continue
        depth = _absolute(depth)
        if depth == cam.topic:
            raise BagError(f'{path}: --depth-topics {depth} is the camera {cam.topic} itself, '
                           'not its aligned depth')
        info = _absolute(info) if info else depth.rsplit('/', 1)[0] + '/camera_info'
        if cam.detections_3d in types:
            raise BagError(f'{path}: {cam.topic} would write {cam.detections_3d}, which the '
                           f'bag already holds ({types[cam.detections_3d]})')
        for topic, want in ((depth, IMAGE), (info, CAMERA_INFO)):
            if topic not in types:
                raise BagError(f'{path}: {topic} (for {cam.topic}) is not in the bag')
            if types[topic] != want:
                raise BagError(f'{path}: {topic} holds {types[topic]}, not {want}')
        result.append(dataclasses.replace(cam, depth=depth, camera_info=info))
    return result


def _listed(names) -> str:
    names = sorted(names)
    return ', '.join(names) if names else 'none'


def _check_outputs(chosen: list[Camera], types: dict[str, str], path: Path) -> None:
    """Two cameras may not share a detections topic, nor may it be a topic already there."""
    seen: dict[str, str] = {}
    for cam in chosen:
        if cam.detections in seen:
            raise BagError(f'{path}: {seen[cam.detections]} and {cam.topic} would both write '
                           f'{cam.detections}: choose one with --topics')
        if cam.detections in types:
            raise BagError(f'{path}: {cam.topic} would write {cam.detections}, which the bag '
                           f'already holds ({types[cam.detections]})')
        seen[cam.detections] = cam.topic


def messages(reader, path: Path) -> Iterator[tuple[object, int, bytes]]:
    """Every message as (rosbags connection, log time in ns, serialized bytes), in recorded
    order; a bag whose data turns out corrupt part way raises BagError. A message whose
    data is not bytes (SQLite does not enforce its column's type) is skipped, said once per
    topic: `unread` then counts it."""
    it = iter(reader.messages())
    said: set[str] = set()
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except Exception as exc:
            raise BagError(f'{path}: the bag is corrupt: {one_line(exc)}') from exc
        data = item[2]
        if isinstance(data, (bytes, bytearray, memoryview)):
            yield item
        elif item[0].topic not in said:
            said.add(item[0].topic)
            log.warning(f'{item[0].topic}: a message whose data is not bytes '
                        f'({type(data).__name__}) skipped: the bag is corrupt')


def unread(reader, read: Counter) -> dict[str, tuple[int, int]]:
    """topic -> (messages not read, messages the bag lists) where the reader gave fewer
    than the bag's index lists: rosbags skips without a word a topic serialized other than
    in CDR, a message of a topic the bag does not declare, a topic whose declared type is
    not its data's."""
    listed: Counter = Counter()
    for conn in reader.connections:
        listed[conn.topic] += conn.msgcount or 0
    return {topic: (n - read[topic], n) for topic, n in sorted(listed.items())
            if read[topic] < n}


def storage_of(path: Path) -> str:
    """'mcap' or 'sqlite3': the storage of the bag (its copy keeps it), from its data
    files' names (a stray notes.mcap.txt beside a .db3 is neither)."""
    files = [p.name for p in path.iterdir()] if path.is_dir() else [path.name]
    return 'mcap' if any(name.endswith(('.mcap', '.mcap.zstd')) for name in files) \
        else 'sqlite3'
