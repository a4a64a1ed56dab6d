"""Keep-newest frame slots for the detector's worker (statistics: health.py).

Callbacks put the newest frame of each camera into its slot and return at once; the worker
takes every filled slot in one go. A frame replaced before the worker took it is counted
as dropped: under overload the detector works on the newest frames, never on a queue.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar('T')


@dataclass
class Frame(Generic[T]):
    camera: int
    payload: T  # the message as received
    received: float  # time.monotonic() at arrival


class LatestFrames(Generic[T]):
    """One slot per camera holding only the newest frame."""

    def __init__(self, cameras: int) -> None:
        self._slots: list[Frame[T] | None] = [None] * cameras
        self._notes: list[Frame[T]] = []  # reports that must not replace a frame (refusals)
        self._cond = threading.Condition()
        self._closed = False
        self.received = [0] * cameras
        self.dropped = [0] * cameras
        self._newest = [float('-inf')] * cameras  # arrival of the newest frame put

    def put(self, camera: int, payload: T, received: float | None = None) -> None:
        """Store the camera's newest frame; received: its arrival time, when it arrived
        earlier than now (a frame handed on from a previous step). A frame that arrived
        before one already put is dropped: handed on by a slower step (a camera that
        switched codec mid-stream), it would send the camera's stamps backwards."""
        at = time.monotonic() if received is None else received
        with self._cond:
            self.received[camera] += 1
            if self._closed or at < self._newest[camera]:  # closed: none will take it
                self.dropped[camera] += 1
                return
            self._newest[camera] = at
            if self._slots[camera] is not None:
                self.dropped[camera] += 1
            self._slots[camera] = Frame(camera, payload, at)
            self._cond.notify_all()  # the worker, or the one camera's decode thread

    def note(self, camera: int, payload: T, received: float) -> None:
        """Hand on a report that must reach the worker without taking the camera's slot (a
        frame refused on the way: the newest good frame waiting there is kept)."""
        with self._cond:
            if self._closed:  # none will take it
                self.dropped[camera] += 1
                return
            self._notes.append(Frame(camera, payload, received))
            self._cond.notify_all()

    def take(self, timeout: float | None = None) -> list[Frame[T]]:
        """Every waiting frame (one per camera) and report, oldest first; [] on timeout or
        close."""
        with self._cond:
            if not self._cond.wait_for(
                    lambda: self._closed or self._notes or any(self._slots), timeout):
                return []
            frames = [f for f in self._slots if f is not None] + self._notes
            self._slots, self._notes = [None] * len(self._slots), []
        return sorted(frames, key=lambda f: f.received)

    def take_one(self, camera: int, timeout: float | None = None) -> Frame[T] | None:
        """The camera's waiting frame; None on timeout or close."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or self._slots[camera] is not None,
                                       timeout):
                return None
            frame, self._slots[camera] = self._slots[camera], None
        return frame

    def close(self) -> None:
        """No frame is taken from now on: those waiting are dropped (counted so), and let
        go of, so the buffers they lie in can be freed (pinned memory is freed only while
        nothing refers to it)."""
        with self._cond:
            self._closed = True
            for frame in [f for f in self._slots if f is not None] + self._notes:
                self.dropped[frame.camera] += 1
            self._slots, self._notes = [None] * len(self._slots), []
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
