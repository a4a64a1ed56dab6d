"""A frame's GPU work as one CUDA graph: captured once per key, then replayed with one
cudaGraphLaunch, so the per-launch overheads of the preprocessing kernel, the engine's
enqueue and the decode kernel and copies stop adding up (issue 21, item 6).

The rules, and why:
- A key's first frame runs stream-ordered, never captured: TensorRT asks for one enqueue
  after a shape change before its work is captured ("CUDA Graphs" in the TensorRT developer
  guide: the first enqueue may do deferred updates that cannot be captured), and a key seen
  only once (a one-off frame size) is not worth a capture.
- Its second frame is captured (cudaStreamCaptureModeThreadLocal: other threads, such as a
  JPEG decoder, may keep allocating), instantiated and launched; from then on each frame
  of that key is one launch. What the captured work returned (the letterbox geometry) is
  kept with the graph: the key must determine it.
- A capture or instantiation that fails (a TensorRT layer or copy that cannot be captured)
  ends the capture, is logged once with the reason, and from then on every frame runs
  stream-ordered: the frame itself is served all the same.
- Graphs hold device pointers: `clear()` before any buffer they use is freed or moved.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from yolo_trt_ros.core.errors import CudaError
from yolo_trt_ros.core.gpu.cuda import CudaRuntime, check

_LOG = logging.getLogger(__name__)
T = TypeVar('T')
LIMIT = 16  # graphs kept (least recently used dropped first): frame sizes x batch sizes


class StreamGraphs(Generic[T]):
    """Replays `work` (which queues GPU work on `stream` and returns a host value) as a
    CUDA graph per key; `enabled` turns false for good after a failed capture."""

    def __init__(self, stream: int, cuda: CudaRuntime | None = None, limit: int = LIMIT) -> None:
        self.cuda = cuda or CudaRuntime()
        self.stream, self.limit = stream, limit
        self.enabled = True
        self.reason = ''  # why graphs were turned off
        self._graphs: OrderedDict[Hashable, tuple[object, object, T]] = OrderedDict()
        self._seen: set[Hashable] = set()  # keys run once, stream-ordered
        self.launches = self.captures = 0  # counters, for tests and benchmarks

    def run(self, key: Hashable, work: Callable[[], T]) -> T:
        """Queue the work of key on the stream (a graph launch where one is captured) and
        return its host value; never synchronises."""
        if not self.enabled:
            return work()
        made = self._graphs.get(key)
        if made is None:
            if key not in self._seen:
                self._seen.add(key)
                return work()
            made = self._capture(key, work)
            if made is None:
                return work()
        self._graphs.move_to_end(key)
        try:
            check(self.cuda.rt.cudaGraphLaunch(made[1], self.stream), 'cudaGraphLaunch')
        except CudaError as exc:
            self._turn_off(f'launching a CUDA graph failed: {exc}')
            return work()
        self.launches += 1
        return made[2]

    def _capture(self, key: Hashable, work: Callable[[], T]) -> tuple | None:
        rt = self.cuda.rt
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        try:
            check(rt.cudaStreamBeginCapture(self.stream, mode), 'cudaStreamBeginCapture')
        except CudaError as exc:
            self._turn_off(str(exc))
            return None
        graph = None
        try:
            value = work()
        except Exception as exc:  # the capture is ended first, then the cause reported
            self._end_capture()
            self._turn_off(f'the work could not be captured: {exc}')
            return None
        try:
            graph = check(rt.cudaStreamEndCapture(self.stream), 'cudaStreamEndCapture')
            executable = check(rt.cudaGraphInstantiate(graph, 0), 'cudaGraphInstantiate')
        except CudaError as exc:
            if graph is not None:
                rt.cudaGraphDestroy(graph)
            self._turn_off(str(exc))
            return None
        self._graphs[key] = made = (graph, executable, value)
        self.captures += 1
        while len(self._graphs) > self.limit:
            self._destroy(self._graphs.popitem(last=False)[1])
        return made

    def _end_capture(self) -> None:
        """Leave capture mode after a failure (the graph, if any, is thrown away)."""
        err, graph = self.cuda.rt.cudaStreamEndCapture(self.stream)
        if int(err) == 0 and graph:
            self.cuda.rt.cudaGraphDestroy(graph)

    def _turn_off(self, reason: str) -> None:
        self.enabled, self.reason = False, reason
        self.clear()
        _LOG.warning(f'CUDA graphs off ({reason}); each frame runs stream-ordered')

    def _destroy(self, made: tuple) -> None:
        graph, executable, _ = made
        self.cuda.rt.cudaGraphExecDestroy(executable)
        self.cuda.rt.cudaGraphDestroy(graph)

    def clear(self) -> None:
        """Destroy every graph (after the stream's work is done: the caller synchronises)."""
        while self._graphs:
            self._destroy(self._graphs.popitem()[1])
        self._seen.clear()
