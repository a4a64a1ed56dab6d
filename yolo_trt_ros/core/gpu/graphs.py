"""A frame's GPU work as one CUDA graph: captured once per key, then replayed with one
cudaGraphLaunch, so the per-launch overheads of the preprocessing kernel, the engine's
enqueue and the decode kernel and copies stop adding up (issue 21, item 6).

The rules, and why:
- A key's first frame runs stream-ordered, never captured: TensorRT asks for one enqueue
  after a shape change before its work is captured (trtexec enqueues and synchronises once,
  then captures), and a key seen only once (a one-off frame size) is not worth a capture.
- Its second frame is captured and launched; from then on each frame of that key is one
  launch. What the captured work returned (the letterbox geometry) is kept with the graph:
  the key must determine it. Capture mode ThreadLocal: only this thread's unsafe calls
  (cudaMalloc, a synchronisation) are refused while it captures; no other thread queues
  work on this stream (the GPU JPEG decoder shares it, on the same worker thread, before
  the frame's work). Python's garbage collector is held off during a capture: a finalizer
  freeing CUDA memory there would fail (PyTorch's torch.cuda.graph does the same).
- A capture or instantiation that fails (a TensorRT layer or copy that cannot be captured,
  an engine that says it cannot be) ends the capture, clears CUDA's last error, is logged
  once with the reason, and from then on every frame runs stream-ordered: the frame itself
  is served all the same. Other errors of the work (a bug, Ctrl-C) end the capture and
  propagate, graphs staying on.
- Graphs that are captured but hardly replayed (input shapes that change nearly every
  frame, e.g. a batch of 1, 1, 2, 2 cameras) cost more than they save: after LIMIT
  captures with fewer than two launches each, graphs turn off, logged once.
- Graphs hold device pointers: `clear()` before any buffer they use is freed or moved
  (a graph still running is freed when it completes: cudaGraphExecDestroy).
"""
from __future__ import annotations

import gc
import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from yolo_trt_ros.core.errors import BackendError, CudaError
from yolo_trt_ros.core.gpu.cuda import CudaRuntime, check

_LOG = logging.getLogger(__name__)
T = TypeVar('T')
LIMIT = 16  # graphs kept (least recently used dropped first): frame sizes x batch sizes


class StreamGraphs(Generic[T]):
    """Replays `work` (which queues GPU work on `stream` and returns a host value) as a
    CUDA graph per key; `enabled` turns false for good after a failed capture.
    refusal: asked before each capture; a reason (the engine cannot be captured) turns
    graphs off."""

    def __init__(self, stream: int, cuda: CudaRuntime | None = None, limit: int = LIMIT,
                 refusal: Callable[[], str] = lambda: '') -> None:
        self.cuda = cuda or CudaRuntime()
        self.stream, self.limit, self.refusal = stream, limit, refusal
        self.enabled = True
        self.reason = ''  # why graphs were turned off
        self._graphs: OrderedDict[Hashable, tuple[object, T]] = OrderedDict()
        self._seen: OrderedDict[Hashable, None] = OrderedDict()  # keys run once, in order
        self.launches = self.captures = 0  # counters, for tests and benchmarks

    def run(self, key: Hashable, work: Callable[[], T]) -> T:
        """Queue the work of key on the stream (a graph launch where one is captured) and
        return its host value; never synchronises but before a capture."""
        if not self.enabled:
            return work()
        made = self._graphs.get(key)
        if made is None:
            if key not in self._seen:
                self._seen[key] = None
                if len(self._seen) > 4 * self.limit:
                    self._seen.popitem(last=False)
                return work()
            made = self._capture(key, work)
            if made is None:
                return work()
        self._graphs.move_to_end(key)
        try:
            check(self.cuda.rt.cudaGraphLaunch(made[0], self.stream), 'cudaGraphLaunch')
        except CudaError as exc:
            self._turn_off(f'launching a CUDA graph failed: {exc}')
            return work()
        self.launches += 1
        return made[1]

    def _capture(self, key: Hashable, work: Callable[[], T]) -> tuple | None:
        if self.captures >= self.limit and self.launches < 2 * self.captures:
            self._turn_off(f'{self.captures} graphs captured and only {self.launches} '
                           f'launches: the input shapes change too often for graphs to pay')
            return None
        refused = self.refusal()
        if refused:
            self._turn_off(refused)
            return None
        rt = self.cuda.rt
        self.cuda.stream_synchronize(self.stream)  # the key's first, in-order run is done
        gc.collect()  # no finalizer may free CUDA memory while this thread captures
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._captured(key, work, rt)
        finally:
            if collecting:
                gc.enable()

    def _captured(self, key: Hashable, work: Callable[[], T], rt) -> tuple | None:
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        try:
            check(rt.cudaStreamBeginCapture(self.stream, mode), 'cudaStreamBeginCapture')
        except CudaError as exc:
            self._turn_off(str(exc))
            return None
        try:
            value = work()
        except BackendError as exc:  # CUDA or the engine refused something while capturing
            self._end_capture()
            self._turn_off(f'the work could not be captured: {exc}')
            return None
        except BaseException:  # a bug or an interrupt: not the capture's fault
            self._end_capture()
            raise
        graph = None
        try:
            graph = check(rt.cudaStreamEndCapture(self.stream), 'cudaStreamEndCapture')
            executable = check(rt.cudaGraphInstantiate(graph, 0), 'cudaGraphInstantiate')
        except CudaError as exc:
            rt.cudaGetLastError()
            self._turn_off(str(exc))
            return None
        finally:
            if graph is not None:
                rt.cudaGraphDestroy(graph)  # the executable keeps what it needs
        self._graphs[key] = made = (executable, value)
        self.captures += 1
        while len(self._graphs) > self.limit:
            self._destroy(self._graphs.popitem(last=False)[1])
        return made

    def _end_capture(self) -> None:
        """Leave capture mode after a failure (the graph, if any, is thrown away) and clear
        the error a failed capture leaves behind, as trtexec does."""
        err, graph = self.cuda.rt.cudaStreamEndCapture(self.stream)
        if int(err) == 0 and graph:
            self.cuda.rt.cudaGraphDestroy(graph)
        self.cuda.rt.cudaGetLastError()

    def _turn_off(self, reason: str) -> None:
        self.enabled, self.reason = False, reason
        self.clear()
        _LOG.warning(f'CUDA graphs off ({reason}); each frame runs stream-ordered')

    def _destroy(self, made: tuple) -> None:
        try:
            check(self.cuda.rt.cudaGraphExecDestroy(made[0]), 'cudaGraphExecDestroy')
        except CudaError as exc:  # may report an earlier asynchronous failure: logged
            _LOG.warning(str(exc))

    def clear(self) -> None:
        """Destroy every graph (one still running is freed when it completes)."""
        while self._graphs:
            self._destroy(self._graphs.popitem()[1])
        self._seen.clear()
