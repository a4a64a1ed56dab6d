"""Where a detector process's worker loses time, for the one line the node logs when it
stops: how long each batch step took (the longest ones are what drop frames: a camera's
next frame replaces the one waiting while the step runs), and how long Python's garbage
collector stopped every thread.

The collector is the suspect worth naming: a full collection walks every object the
process holds (rclpy, numpy, OpenCV, the backend: hundreds of thousands), with the GIL
held, at a moment nothing here chooses. `freeze_heap()` moves everything that exists once
the node is warmed up into the permanent generation (gc.freeze), so later collections walk
only what serving allocates; `thaw_heap()` undoes it when the node stops serving, so that
what it frees can be collected again. YOLO_TRT_ROS_GC=default keeps the collector as Python
sets it (A/B runs of bench/capacity.py).
"""
from __future__ import annotations

import gc
import os
import threading
import time
from collections import deque

import numpy as np

GC_ENV = 'YOLO_TRT_ROS_GC'  # 'default': no freeze (A/B runs); anything else: freeze
STEPS_KEPT = 20000  # the last batch steps' durations, for the percentiles
FRAME_PERIOD_S = 1 / 30  # steps longer than a 30 fps camera's period are counted


def freeze_heap() -> bool:
    """Collect once, then move every tracked object to the permanent generation; False
    (and nothing done) where YOLO_TRT_ROS_GC=default asks for Python's own collector."""
    if os.environ.get(GC_ENV, '') == 'default':
        return False
    gc.collect()
    gc.freeze()
    return True


def thaw_heap() -> None:
    """Undo freeze_heap(), and collect now what became garbage while frozen: while the
    detector's CUDA stream and decoders still exist (a cycle holding device images, freed
    after them, is the crash core/gpu/jpeg.py guards against)."""
    gc.unfreeze()
    gc.collect()


class Pauses:
    """Batch step durations (step()) and the garbage collector's pauses (from gc.callbacks
    while started). Thread-safe: the worker adds steps, the collector runs on any thread."""

    def __init__(self) -> None:
        self._steps: deque[float] = deque(maxlen=STEPS_KEPT)
        self.steps = 0
        self.longest = (0.0, 0)  # the longest step's seconds, and which step it was (from 1)
        self._lock = threading.RLock()  # a collection may run the callback on its own thread
        self._gc_started: dict[int, float] = {}  # thread id -> when its collection began
        self.gc_count = [0, 0, 0]  # collections per generation
        self.gc_max = [0.0, 0.0, 0.0]  # longest pause per generation, seconds
        self.gc_total = 0.0

    def start(self) -> None:
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def step(self, seconds: float) -> None:
        """The worker's thread only."""
        self.steps += 1
        if seconds > self.longest[0]:
            self.longest = (seconds, self.steps)
        self._steps.append(seconds)

    def _on_gc(self, phase: str, info: dict) -> None:
        now, me = time.perf_counter(), threading.get_ident()
        if phase == 'start':
            self._gc_started[me] = now
            return
        began = self._gc_started.pop(me, None)
        if began is None:  # started before the callback was added
            return
        gen, took = info.get('generation', 2), now - began
        with self._lock:
            self.gc_count[gen] += 1
            self.gc_max[gen] = max(self.gc_max[gen], took)
            self.gc_total += took

    def summary(self) -> str:
        """One line: steps' p50/p99/max (and which step was the longest: the first is a
        cold start) and how many of the last STEPS_KEPT outlasted a 30 fps frame period, then
        the collector's pauses per generation."""
        steps = np.array(self._steps) * 1e3
        if steps.size:
            p50, p99 = np.percentile(steps, (50, 99))
            text = (f'{self.steps} batch steps: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max '
                    f'{self.longest[0] * 1e3:.1f} ms (step {self.longest[1]}), '
                    f'{int((steps > FRAME_PERIOD_S * 1e3).sum())} over '
                    f'{FRAME_PERIOD_S * 1e3:.0f} ms')
        else:
            text = 'no batch steps'
        with self._lock:  # copied, then formatted outside it
            count, longest, total = list(self.gc_count), list(self.gc_max), self.gc_total
        gcs = ', '.join(f'gen{g} {count[g]} (max {longest[g] * 1e3:.1f} ms)' for g in range(3))
        return f'{text}; garbage collector: {gcs}, {total * 1e3:.0f} ms in all'
