"""`yolo-trt bag`: the detector node's batch step over a recorded bag, as fast as it runs.

The bag holds serialized (CDR) messages, which is what the node's BatchStep consumes: each
camera frame goes through exactly the node's parse -> decode -> detect -> serialize, and the
CDR bytes the step returns are written as the detections message, with no Python message
built. Unlike the node, which keeps only each camera's newest frame, every frame is served:
up to BATCH_FRAMES consecutive frames (of any cameras, in recorded order) go to the step
together, so a model or engine with a batch dimension infers them in one call (the default
model has none: it runs them one by one).

The new bag holds every message of the input (same topics, types, definitions and log
times) and, right after each camera frame, its detections on `<camera>/detections`
(the frame's log time; the header is the frame's, as the node publishes it), and with depth
its Detection3DArray on `<camera>/detections_3d` (a segment model: `<camera>/masks`, a
pose model: `<camera>/keypoints`, as the node publishes them). Tracking and 3D are the
node's own, per camera (core/serving/cameras.py CameraState): the step tracks each
camera's frames in recorded order, and pairs each frame with the depth frame of its stamp,
which the run hands the camera's state as the bag is read (a frame waits until the bag has been read
DEPTH_LOOKAHEAD_NS past it, since depth is often recorded a little after its image).
"""
from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from yolo_trt_ros.bags.progress import Progress
from yolo_trt_ros.bags.source import IMAGE, BagError, Camera, messages, storage_of
from yolo_trt_ros.bags.vision_types import (
    DETECTION_3D_ARRAY,
    DETECTION_ARRAY,
    definition,
    typestore,
)
from yolo_trt_ros.core.errors import ImageError
from yolo_trt_ros.core.files import folder_write_problem
from yolo_trt_ros.core.pipeline.tracking import TrackerConfig
from yolo_trt_ros.core.runtime.detector import Detector
from yolo_trt_ros.core.serving.batch import BatchStep, Served
from yolo_trt_ros.core.serving.cameras import CameraState, Tracking, nanoseconds
from yolo_trt_ros.core.serving.cdr import parse_compressed, parse_image
from yolo_trt_ros.core.serving.config import DETECTOR_PARAMETERS, DepthConfig
from yolo_trt_ros.core.serving.frames import Frame

log = logging.getLogger(__name__)

# rosbag2 format 8: what Jazzy writes and reads; Kilted reads it too.
BAG_VERSION = 8
# Frames inferred together (the TensorRT engine's profile may cap it lower: the detector
# then runs chunks). A batch also closes after this long in bag time or this many queued
# messages, so a camera that stops never makes the run hoard the bag.
BATCH_FRAMES = 4
_BATCH_WINDOW_NS = 500_000_000
_MAX_QUEUED = 2000
DEPTH_LOOKAHEAD_NS = 300_000_000
_DEPTH_KEPT = 100  # depth frames per camera kept for pairing: 1.6 s at 60 fps
# The node's defaults for what the bag command has no option for.
_NODE = {name: DETECTOR_PARAMETERS[name].default
         for name in ('track_reset_gap_s', 'depth_slop', 'depth_min_m', 'depth_max_m')}


@dataclass
class Summary:
    frames: Counter = field(default_factory=Counter)  # image topic -> frames served
    detections: int = 0
    refused: Counter = field(default_factory=Counter)  # cause -> frames
    with_3d: int = 0  # frames with a Detection3DArray
    placed: int = 0  # of their detections, those with a position
    in_3d: int = 0  # their detections
    no_3d: Counter = field(default_factory=Counter)  # cause -> frames without (depth)
    copied: int = 0  # input messages written
    read: Counter = field(default_factory=Counter)  # topic -> messages read from the input
    seconds: float = 0.0
    stopped: bool = False  # by a signal: the bag holds what was done until then

    @property
    def served(self) -> int:
        return sum(self.frames.values())


def check_output(out: Path) -> None:
    """Never overwrite: an output that exists (file or directory) is refused before work;
    so is one whose nearest existing folder takes no file (read-only), found now, not
    after the model loaded (a TensorRT build: minutes)."""
    if out.exists() or out.is_symlink():
        raise BagError(f'--out {out}: exists; choose another path or remove it')
    folder = out.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if problem := folder_write_problem(folder):
        raise BagError(f'--out {out}: cannot write the bag: {problem}')


def default_output(src: Path) -> Path:
    """IN_detections beside the input (a directory bag, as rosbag2 writes)."""
    if src.name in ('', '.', '..'):  # `yolo-trt bag .` inside the bag: beside it, not in it
        src = src.resolve()
    name = src.name[:-len(src.suffix)] if src.is_file() and src.suffix else src.name
    return src.parent / f'{name}_detections'


def outputs(camera: Camera, served: Served) -> list[tuple[str, bytes]]:
    """What a served frame adds to the bag, as (topic, serialized message), as the node
    publishes it: the detections (with track ids when tracking), the 3D detections when the
    camera has depth, a segment model's masks and a pose model's keypoints."""
    out = [(camera.detections, served.message)]
    if served.message_3d is not None:
        out.append((camera.detections_3d, served.message_3d))
    if served.masks is not None:
        out.append((camera.masks, served.masks))
    if served.keypoints is not None:
        out.append((camera.keypoints, served.keypoints))
    return out


class _Out:
    """The output bag: the input's connections copied, one detections topic per camera."""

    def __init__(self, writer, reader, cameras: list[Camera], task: str = 'detect') -> None:
        self.writer = writer
        self.by_id: dict[int, object] = {}
        for conn in reader.connections:
            conn_out = self._copy(conn)
            if conn_out is not None:
                self.by_id[conn.id] = conn_out
        self.detections = {}  # topic -> connection
        for msgtype, topics in ((DETECTION_ARRAY, [c.detections for c in cameras]),
                                (DETECTION_3D_ARRAY, [c.detections_3d for c in cameras
                                                      if c.depth]),
                                (IMAGE, [c.masks for c in cameras if task == 'segment']),
                                (DETECTION_ARRAY, [c.keypoints for c in cameras
                                                   if task == 'pose'])):
            if not topics:
                continue
            msgdef, digest = definition(msgtype)
            self.detections.update((t, writer.add_connection(t, msgtype, msgdef=msgdef,
                                                             rihs01=digest)) for t in topics)

    def _copy(self, conn):
        msgdef, digest = conn.msgdef.data, conn.digest
        if not msgdef or not digest:  # an old bag without definitions: rosbags knows many
            try:
                msgdef, digest = definition(conn.msgtype)
            except Exception:
                log.warning(f'{conn.topic}: the bag has no definition of {conn.msgtype}; '
                            'topic not copied')
                return None
        ext = conn.ext
        return self.writer.add_connection(
            conn.topic, conn.msgtype, msgdef=msgdef, rihs01=digest,
            serialization_format=getattr(ext, 'serialization_format', 'cdr'),
            offered_qos_profiles=getattr(ext, 'offered_qos_profiles', ()))

    def copy(self, conn, stamp: int, data) -> bool:
        conn_out = self.by_id.get(conn.id)
        if conn_out is None:
            return False
        self.writer.write(conn_out, stamp, data)
        return True

    def add(self, topic: str, stamp: int, data: bytes) -> None:
        self.writer.write(self.detections[topic], stamp, data)


class BagRun:
    """The batch steps (one for raw Images, one for CompressedImages, as a node per
    `compressed` setting) over one input bag."""

    def __init__(self, detector: Detector, cameras: list[Camera], max_pixels: int,
                 label: Callable[[int], str], tracker: TrackerConfig | None = None) -> None:
        self.cameras, self.task = cameras, detector.task
        self.by_topic = {cam.topic: cam for cam in cameras}
        self.depth_of = {cam.depth: cam for cam in cameras if cam.depth}
        self.info_of = {cam.camera_info: cam for cam in cameras if cam.depth}
        depth = DepthConfig(tuple(c.depth for c in cameras), tuple(c.camera_info for c in cameras),
                            _NODE['depth_slop'], _NODE['depth_min_m'], _NODE['depth_max_m']) \
            if self.depth_of else None
        # Each camera its own state, shared by both steps: tracks and depth never mix.
        tracking = Tracking(tracker, _NODE['track_reset_gap_s'])
        self.states = [CameraState(tracking) for _ in cameras] \
            if tracker is not None or depth is not None else None
        self.steps = {c: BatchStep(detector, c, max_pixels, label, self.states, depth)
                      for c in {cam.compressed for cam in cameras}}
        self.lookahead = DEPTH_LOOKAHEAD_NS if depth is not None else 0
        self._depth = {cam.index: deque(maxlen=_DEPTH_KEPT) for cam in cameras if cam.depth}
        self._warned: set[tuple[str, str]] = set()

    def run(self, reader, src: Path, out: Path, progress: Progress | None = None,
            cancel: threading.Event | None = None) -> Summary:
        """Every frame into the bag at out; once cancel is set (core/stopping.py: Ctrl-C,
        SIGTERM), the run ends after the batch it is in and the bag is closed whole."""
        from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

        summary = Summary()
        start = time.monotonic()
        plugin = StoragePlugin.MCAP if storage_of(src) == 'mcap' else StoragePlugin.SQLITE3
        try:
            writer = Writer(out, version=BAG_VERSION, storage_plugin=plugin)
            writer.open()
        except WriterError:  # another run made it since check_output (the model loaded)
            check_output(out)
            raise
        except (OSError, sqlite3.Error) as exc:  # its mkdir, or its storage after mkdir
            raise _unwritable(out, exc) from exc  # the folder did not exist a moment ago
        # From here the output is this run's own, to remove where the run fails.
        try:
            with ExitStack() as opened:
                opened.push(writer)  # rosbags' exit: closed, or aborted on an error
                sink = _Out(writer, reader, self.cameras, self.task)
                self._run(reader, src, sink, summary, progress, cancel or threading.Event())
        except (OSError, sqlite3.Error) as exc:  # a full disk; sqlite3's writer has its own
            raise _unwritable(out, exc) from exc
        except BaseException:  # a corrupt input found part way: no half-written bag left
            _remove(out)
            raise
        summary.seconds = time.monotonic() - start
        return summary

    def _run(self, reader, src: Path, sink: _Out, summary: Summary,
             progress: Progress | None, cancel: threading.Event) -> None:
        queue: list[tuple[object, int, object, Frame | None]] = []  # in order, with frames
        for conn, stamp, data in messages(reader, src):
            if cancel.is_set():  # between messages, never inside the writer's
                summary.stopped = True
                return
            summary.read[conn.topic] += 1
            self._depth_input(conn.topic, stamp, data)
            cam = self.by_topic.get(conn.topic)
            frame = Frame(cam.index, data, 0.0) if cam is not None else None
            if frame is None and not queue:
                if sink.copy(conn, stamp, data):
                    summary.copied += 1
                continue
            queue.append((conn, stamp, data, frame))
            while queue and (cut := self._batch_end(queue, stamp)) is not None:
                self._flush(queue[:cut], sink, summary, progress)
                queue = queue[cut:]
                if queue and queue[0][3] is None:  # copy what precedes the next frame
                    cut = next((i for i, item in enumerate(queue) if item[3] is not None),
                               len(queue))
                    self._flush(queue[:cut], sink, summary, progress)
                    queue = queue[cut:]
        if queue:
            self._flush(queue, sink, summary, progress)

    def _batch_end(self, queue: list, now: int) -> int | None:
        """Where the queue's next batch ends (exclusive), or None while it should wait: a
        batch is the queue's first BATCH_FRAMES frames, each read at least `lookahead` ago
        (their depth frames are in), with the messages recorded among them; a batch also
        closes once its first frame is _BATCH_WINDOW_NS old or the queue is long."""
        first = queue[0][1]
        forced = len(queue) >= _MAX_QUEUED or now - first > _BATCH_WINDOW_NS + self.lookahead
        count = 0
        for i, (_, stamp, _, frame) in enumerate(queue):
            if frame is None:
                continue
            if now - stamp < self.lookahead:
                return i if forced and count else None
            count += 1
            if count == BATCH_FRAMES:
                return i + 1
        return len(queue) if forced and count else None

    def _flush(self, queue: list, sink: _Out, summary: Summary,
               progress: Progress | None) -> None:
        frames = [f for *_, f in queue if f is not None]
        served: dict[int, Served] = {}  # id(frame) -> its result
        for compressed, step in self.steps.items():
            batch = [f for f in frames if self.cameras[f.camera].compressed == compressed]
            if not batch:
                continue
            self._pair_depth(batch)
            result = step(batch)
            served.update((id(s.frame), s) for s in result.served)
            for refused in result.refused:
                self._refused(self.cameras[refused.camera], refused.cause, refused.reason)
                summary.refused[refused.cause] += 1
        for conn, stamp, data, frame in queue:
            if sink.copy(conn, stamp, data):
                summary.copied += 1
            result = served.get(id(frame)) if frame is not None else None
            if result is None:
                continue
            cam = self.cameras[frame.camera]
            for topic, message in outputs(cam, result):
                sink.add(topic, stamp, message)
            summary.frames[cam.topic] += 1
            summary.detections += len(result.detections)
            if result.message_3d is not None:
                summary.with_3d += 1
                summary.in_3d += len(result.detections)
                summary.placed += len(result.detections) - result.left_out
            elif result.depth_problem is not None:
                problem = result.depth_problem
                summary.no_3d[problem.cause] += 1
                self._refused(cam, problem.cause, problem.reason, 'no 3D')
        if progress is not None and frames:
            progress.update(len(frames))

    def _depth_input(self, topic: str, stamp: int, data) -> None:
        """A depth frame (kept here until its image is served) or a camera_info (for the
        camera's state, as the node's callback does)."""
        cam = self.depth_of.get(topic)
        if cam is not None:
            self._depth[cam.index].append((_stamp_ns(data), bytes(data)))  # stamp read once
            return
        cam = self.info_of.get(topic)
        if cam is None:
            return
        try:
            info = typestore().deserialize_cdr(data, 'sensor_msgs/msg/CameraInfo')
        except Exception as exc:  # rosbags' errors vary: a bad message is one line
            self._refused(cam, 'camera_info', f'{topic}: not a CameraInfo: {exc}', 'skipped')
            return
        self.states[cam.index].set_camera_info(info.k, info.width, info.height)

    def _pair_depth(self, frames: list[Frame]) -> None:
        """Hand each camera's state the depth frame nearest each of its frames' stamps (the
        state keeps only a few, as the node's does; the bag may hold many more in the
        time a batch waits), in order; the state then pairs them as in the node."""
        for frame in frames:
            depth = self._depth.get(frame.camera)
            if not depth:
                continue
            try:
                header = (parse_compressed(frame.payload) if self.cameras[frame.camera]
                          .compressed else parse_image(frame.payload)).header
            except ImageError:
                continue  # refused by the step
            want = nanoseconds(header)
            nearest = min(depth, key=lambda kept: abs(kept[0] - want))
            self.states[frame.camera].put_depth(nearest[1])

    def _refused(self, cam: Camera, cause: str, reason: str, what: str = 'frame refused'
                 ) -> None:
        """One line per camera and cause, as the node logs bad frames."""
        if (cam.topic, cause) not in self._warned:
            self._warned.add((cam.topic, cause))
            log.warning(f'{cam.topic}: {what} ({cause}): {reason} (further {cause} frames '
                        'of this topic are counted, not shown)')


def _stamp_ns(data) -> int:
    """A serialized depth Image's header stamp (-1 when unreadable: never nearest)."""
    try:
        header = parse_image(data).header
    except ImageError:
        return -1
    return nanoseconds(header)


def _unwritable(out: Path, exc: BaseException) -> BagError:
    """The output removed, and the one line that says why it could not be written."""
    _remove(out)
    return BagError(f"--out {out}: cannot write the bag: {getattr(exc, 'strerror', None) or exc}")


def _remove(out: Path) -> None:
    """The output of a run that failed (check_output made sure it was not there before)."""
    shutil.rmtree(out, ignore_errors=True)


def frame_total(cameras: Iterable[Camera]) -> int:
    return sum(cam.frames for cam in cameras)
