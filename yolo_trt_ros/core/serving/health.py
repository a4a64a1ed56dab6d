"""Per-camera counters, latency windows and health for diagnostics, and the gate that keeps a
bad camera from flooding the log."""
from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import astuple, dataclass, field
from pathlib import Path

import numpy as np

from yolo_trt_ros.core import defaults
from yolo_trt_ros.core.dds import own_profile, profile_variable
from yolo_trt_ros.core.files import config_file
from yolo_trt_ros.core.serving.cameras import DepthProblem


@dataclass(frozen=True)
class Window:
    """One camera's counts over the last diagnostics window. Frames lost before the node,
    by cause: lost in DDS (the QoS event), missing between a publisher's numbered frames
    without that event (`replaced`: replaced in the subscription's queue before the node
    took them, or dropped on the way unreported; a deeper queue did not reduce them in
    bench/capacity.py, so not only the first), published before the subscription matched
    (a new publisher, a QoS switch; also where a reliable camera's shallow history dropped
    its first frames before sending any of them, which DDS does not report)."""

    frames_in: int
    processed: int
    dropped: int
    lost: int
    replaced: int = 0
    unmatched: int = 0


class PublisherSequences:
    """What a camera's publishers sent that never reached the node, from the publication
    sequence number rmw gives each sample (per publisher): a gap is frames lost on the way;
    a publisher's first frame numbered n means n - 1 went before the subscription matched,
    unless the publisher was there before the node (those were never meant for it)."""

    def __init__(self) -> None:
        self._last: dict[bytes, int] = {}
        self.preexisting: set[bytes] = set()
        self.gaps = 0
        self.before_match = 0

    def seen(self, gid: bytes, sequence: int | None) -> None:
        if sequence is None:  # rmw gives none (Humble's rclpy, another rmw)
            return
        last = self._last.get(gid)
        if last is None:
            if gid not in self.preexisting:
                self.before_match += max(sequence - 1, 0)
        elif sequence > last + 1:
            self.gaps += sequence - last - 1
        self._last[gid] = max(sequence, last or 0)


@dataclass
class CameraStats:
    """Counters and windows of recent latencies (seconds) for one camera: arrival to
    published, and the part of it spent waiting for the worker (the rest is the pipeline)."""

    processed: int = 0
    bad_input: dict[str, int] = field(default_factory=dict)
    latencies: deque = field(default_factory=lambda: deque(maxlen=1000))
    waits: deque = field(default_factory=lambda: deque(maxlen=1000))
    lost: int = 0  # samples DDS reported lost before they reached the node (QoS event)
    sequences: PublisherSequences = field(default_factory=PublisherSequences)
    last: Window | None = None  # counters at the previous diagnostics window
    # Tracking and 3D: 'depth.published', 'depth.unpaired' (no depth frame in time),
    # 'depth.left_out' (detections without valid depth), 'tracking.resets'.
    counts: dict[str, int] = field(default_factory=dict)
    # frames in and dropped by the intakes closed so far (each activation has its own)
    carried: tuple[int, int] = (0, 0)
    # bad frames by cause as the last window read them (the worker counts meanwhile: the
    # report gives these, so its counts and its message agree)
    bad_reported: dict[str, int] = field(default_factory=dict)

    def intake_closed(self, received: int, dropped: int) -> None:
        """The camera's intake ends (the node deactivates): its counts go on in the next
        one's, as processed does."""
        self.carried = (self.carried[0] + received, self.carried[1] + dropped)

    def tick(self, received: int, dropped: int) -> tuple[Window, tuple[int, str]]:
        """A diagnostics window ends: (the counters since start, the health of the window
        since the last tick). received, dropped: the camera's keep-newest slot counters
        of this activation."""
        received, dropped = received + self.carried[0], dropped + self.carried[1]
        seq = self.sequences
        # The QoS event does not say which frames it lost: each is taken off the gaps first
        # (what is left was replaced in the subscription's queue, or dropped on the way
        # unreported; see Window), then off the frames before a publisher's first one (a
        # reliable camera whose shallow history dropped them before the match was complete
        # would otherwise count them twice).
        beyond_gaps = max(self.lost - seq.gaps, 0)
        now = Window(received, self.processed, dropped, self.lost,
                     max(seq.gaps - self.lost, 0), max(seq.before_match - beyond_gaps, 0))
        last = self.last or Window(0, 0, 0, 0)
        # A loss DDS reports after its gap was seen moves frames between causes: a cause
        # that gave some up has nothing new to say in this window (not a negative count).
        window = Window(*(max(a - b, 0) for a, b in zip(astuple(now), astuple(last),
                                                          strict=True)))
        self.last = now
        before, self.bad_reported = self.bad_reported, dict(self.bad_input)
        bad = sum(self.bad_reported.values()) - sum(before.values())
        return now, health(window, bad)

    def add_latency(self, seconds: float, waited: float = 0.0) -> None:
        self.processed += 1
        self.latencies.append(seconds)
        self.waits.append(waited)

    def count(self, key: str, n: int = 1) -> None:
        if n:
            self.counts[key] = self.counts.get(key, 0) + n

    def count_3d(self, published: bool, left_out: int,
                 problem: DepthProblem | None) -> DepthProblem | None:
        """Count a frame's 3D result; returns the problem if it is bad input (the caller
        logs it and counts it with add_bad), None otherwise."""
        self.count('depth.published', int(published))
        self.count('depth.left_out', left_out)
        if problem is not None and not problem.bad:
            self.count(f'depth.{problem.cause}')
            return None
        return problem

    def add_bad(self, cause: str) -> int:
        """Count a bad frame by cause; returns how many of that cause so far."""
        self.bad_input[cause] = self.bad_input.get(cause, 0) + 1
        return self.bad_input[cause]

    def percentiles_ms(self, which: str = 'latencies') -> dict[str, float]:
        """p50/p90/p99 in ms of `latencies` (arrival to published) or `waits` (arrival to
        the worker taking the frame)."""
        values = getattr(self, which)
        if not values:
            return {}
        p50, p90, p99 = np.percentile(np.fromiter(values, float), [50, 90, 99]) * 1e3
        return {'p50': float(p50), 'p90': float(p90), 'p99': float(p99)}


class LogOncePerCause:
    """Decides when to log a recurring problem: the first time, then at most once per
    `interval` seconds per cause, so a bad camera cannot flood the log."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}

    def should_log(self, cause: str) -> bool:
        now = time.monotonic()
        last = self._last.get(cause)
        if last is None or now - last >= self.interval:
            self._last[cause] = now
            return True
        return False


OK, WARN, ERROR = 0, 1, 2  # the levels of diagnostic_msgs/DiagnosticStatus


RMEM_MAX = '/proc/sys/net/core/rmem_max'
RECEIVE_BUFFER = 33554432  # config/fastdds_stock_cameras.xml asks for this much


def rmem_max(path: str = RMEM_MAX) -> int | None:
    """The kernel's cap on a UDP receive buffer (bytes); None where it cannot be read."""
    try:
        return int(Path(path).read_text())
    except (OSError, ValueError):
        return None


def dds_loss_fix(env: dict[str, str] | None = None, rmem_max_path: str = RMEM_MAX,
                 reliable: bool = False) -> str:
    """The commands that stop frames being lost in DDS, for the warning (issue 18, edge 7).

    A best-effort camera with stock Fast DDS loses most large frames to a reader that has
    shared memory; the detector's side alone fixes that with dds_profile:=stock_cameras
    (UDP with a receive buffer larger than a frame), as far as net.core.rmem_max lets it
    (bench/dds_receive.py; on Jazzy too since the profile is given in the variable its
    Fast DDS 2 reads, core/dds.py).
    A reliable subscription loses a frame only where the camera's writer dropped it from its
    KEEP_LAST history before the detector acknowledged it (1080p frames back to back with
    depth 1 lost 13-19 of 20 on dev): the camera's history is the fix, not this side.
    """
    env = os.environ if env is None else env
    large = config_file(defaults.DDS_PROFILES['large_frames'])
    camera_side = (f'start the camera with {profile_variable()}={large} (shared '
                   f'memory), or subscribe to its compressed topic (compressed:=true)')
    if reliable:
        return ("give the camera's publisher a deeper history (KEEP_LAST depth): it is "
                'reliable, so it dropped these frames from its history before the detector '
                f'acknowledged them. Or {camera_side}')
    stock = config_file(defaults.DDS_PROFILES['stock_cameras'])
    using = own_profile(env) or ''
    fixes = [] if using.endswith(stock.name) else [
        'restart the detector with dds_profile:=stock_cameras (ros2 launch yolo_trt_ros '
        'detect.launch.py dds_profile:=stock_cameras, or yolo-trt launch '
        f'dds_profile:=stock_cameras; a node started alone: {profile_variable()}={stock})']
    if env.get('ROS_AUTOMATIC_DISCOVERY_RANGE', '').upper() == 'LOCALHOST':
        # rmw_fastrtps then sets the transports itself, over the profile's
        fixes.append('unset ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, which replaces the '
                     "profile's transports")
    limit = rmem_max(rmem_max_path)
    if limit is not None and limit < RECEIVE_BUFFER:
        fixes.append(f'let the receive buffer hold a frame: sudo sysctl -w '
                     f'net.core.rmem_max={RECEIVE_BUFFER} (now {limit})')
    return f"{'; '.join(fixes)}. Or {camera_side}" if fixes else camera_side


def health(window: Window, bad_input: int) -> tuple[int, str]:
    """(level, reasons) for one camera's last window: ERROR when frames came and none was
    processed; WARN when more than half were dropped, any were lost in DDS, or bad input
    was seen; OK otherwise. The message names every reason that applies."""
    problems = []
    stalled = window.frames_in > 0 and window.processed == 0
    if stalled:
        problems.append(f'{window.frames_in} frames in, none processed')
    elif window.dropped * 2 > window.frames_in > 0:
        problems.append(f'{window.dropped} of {window.frames_in} frames dropped (the model '
                        f'is slower than the camera)')
    if window.lost:
        problems.append(f'{window.lost} frames lost in DDS')
    if window.replaced:
        problems.append(f'{window.replaced} frames missing from a publisher\'s sequence, not '
                        f'reported lost by DDS (replaced in the subscription queue, or '
                        f'dropped on the way)')
    if window.unmatched:
        problems.append(f'{window.unmatched} frames published before the subscription matched')
    if bad_input:
        problems.append('bad input seen')
    # Every reason in the message: a stalled window that also lost frames says both.
    level = ERROR if stalled else WARN if problems else OK
    return level, '; '.join(problems) or 'ok'
