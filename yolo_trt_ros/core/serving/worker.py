"""The detector node's worker thread, without ROS: it takes the newest frame of every
camera from the keep-newest slots, runs the batch step and hands the result on. Callbacks
never wait for it; a slow model drops stale frames instead of queueing them."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from yolo_trt_ros.core.serving.batch import BatchResult, BatchStep, Refused
from yolo_trt_ros.core.serving.frames import LatestFrames


class Worker:
    """deliver(result) publishes a batch's results; it runs on the worker thread. An
    exception in the step or in deliver (a bug, never bad input: the step refuses that
    itself) refuses the batch's frames as 'internal', and the worker goes on."""

    def __init__(self, slots: LatestFrames, step: BatchStep,
                 deliver: Callable[[BatchResult], None],
                 timed: Callable[[float], None] = lambda seconds: None) -> None:
        """timed(seconds): each batch's step and delivery took that long."""
        self.slots, self.step, self.deliver, self.timed = slots, step, deliver, timed
        self._thread = threading.Thread(target=self._run, name='detector-worker', daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop taking frames and wait for the batch in flight to be delivered."""
        self.slots.close()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self.slots.closed:
            frames = self.slots.take(timeout=0.5)
            if not frames:
                continue
            began = time.perf_counter()
            try:
                self.deliver(self.step(frames))
            except Exception as exc:  # the worker boundary: a bug must not stop detection
                if self.slots.closed:
                    return  # shutting down: the frame in flight is dropped, not an error
                self.deliver(BatchResult([], [Refused(f.camera, 'internal',
                                                      f'{type(exc).__name__}: {exc} (please '
                                                      f'report this)') for f in frames], 0.0))
            else:
                self.timed(time.perf_counter() - began)
