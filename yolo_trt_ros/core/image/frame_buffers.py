"""Host buffers that camera frames are taken into, each reused once nothing refers to it.

rclpy's raw take hands every frame over as a new bytes object: one more copy of the frame,
made with the GIL held, into memory that the GPU can only read through the driver's own
staging copy. The frame reader (ros/rcl_take.py) instead has rmw copy each serialized
frame straight into one of these buffers: pinned memory where preprocessing runs on the
GPU, so the upload is one asynchronous DMA from where the frame landed.

A buffer is free again when only this pool refers to it: the frame's views (the keep-newest
slot, the parsed image, a batch in flight, the Served result) all hold a reference to it,
so it cannot be refilled while any of them may still read it. That needs each buffer to be
the array numpy makes the base of its views (the first that owns the memory, or sits on a
non-array such as a ctypes buffer): a reshaped view on top would be skipped by its views'
references, and is refused. The GPU path reads a pinned
frame asynchronously: its batch holds the frame until after the one synchronisation per
frame, which is what makes that safe. Above `limit_bytes` a frame gets an ordinary buffer
of its own (never pinned, never kept), so a consumer that keeps frames cannot grow the
pinned memory without bound. Where the allocator refuses (pinned memory is a limited
resource), the frame gets an ordinary block, which the pool keeps and reuses like the
others until it closes (the node deactivates): slower to upload, but every frame is taken,
and the failing allocation is not tried again for every frame.
"""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

import numpy as np

from yolo_trt_ros.core.errors import YoloTrtError

# allocate(nbytes) -> a uint8 array of at least nbytes, and what frees it (None: Python does)
Allocate = Callable[[int], tuple[np.ndarray, Callable[[], None] | None]]


def ordinary(nbytes: int) -> tuple[np.ndarray, None]:
    return np.empty(nbytes, np.uint8), None


class FrameBuffers:
    """get(nbytes) -> a uint8 array of at least nbytes that nothing else uses. Thread-safe;
    close() frees every buffer not in use (one still in use is left to its owner)."""

    def __init__(self, allocate: Allocate = ordinary, limit_bytes: int = 1 << 30,
                 kind: str = 'pageable') -> None:
        self.allocate, self.limit_bytes, self.kind = allocate, limit_bytes, kind
        self._lock = threading.Lock()
        self._closed = False
        self.overflowed = 0  # frames given a buffer of their own above limit_bytes
        self.refused, self.refusal = 0, ''  # blocks the allocator refused, and its reason
        self._ordinary: set[int] = set()  # id() of the ordinary blocks kept in their stead
        self.allocations, self.longest_allocation_s = 0, 0.0  # (pinned allocation is slow)
        self.reserved = 0  # of the allocations, those made by reserve()
        self._kept: set[int] = set()  # id() of reserved blocks: freed only by close()
        # What a block's reference count reads when only the pool refers to it, measured
        # the way every later check reads it (the interpreter's own count varies by version).
        self._blocks: list[tuple[np.ndarray, Callable[[], None] | None]] = [
            (np.empty(1, np.uint8), None)]
        self._idle = 0
        self._idle = self._refs(0)
        self._blocks = []

    def _refs(self, i: int) -> int:
        return sys.getrefcount(self._blocks[i][0])

    def _in_use(self, i: int) -> bool:
        return self._refs(i) > self._idle

    @property
    def pooled_bytes(self) -> int:
        return sum(block.nbytes for block, _ in self._blocks)

    @property
    def ordinary_blocks(self) -> tuple[int, int]:
        """(count, bytes) of the pool's blocks that are ordinary memory where the
        allocator refused."""
        sizes = [block.nbytes for block, _ in self._blocks if id(block) in self._ordinary]
        return len(sizes), sum(sizes)

    def __len__(self) -> int:
        return len(self._blocks)

    def get(self, nbytes: int, replace: bool = True) -> np.ndarray:
        """replace: free the idle blocks smaller than nbytes (a camera's frames grew); not
        from inside a take, where rmw may hold a lock while it waits for this."""
        with self._lock:
            # the smallest idle block that fits: a small frame leaves the large blocks to
            # the cameras that need them
            fits = [i for i in range(len(self._blocks))
                    if self._blocks[i][0].nbytes >= nbytes and not self._in_use(i)]
            if fits:
                return self._blocks[min(fits, key=lambda i: self._blocks[i][0].nbytes)][0]
            if replace:  # reserved blocks stay: another camera's frames may still fit them
                self._release(lambda i: self._blocks[i][0].nbytes < nbytes
                              and id(self._blocks[i][0]) not in self._kept)
            if self._closed or self.pooled_bytes + nbytes > self.limit_bytes:
                self.overflowed += 1
                return ordinary(nbytes)[0]
            try:
                return self._add(nbytes)
            except (YoloTrtError, MemoryError) as exc:
                refusal = str(exc)
            block = self._add(nbytes, ordinary)
            self._ordinary.add(id(block))
            self.refused, self.refusal = self.refused + 1, refusal
            return block

    def reserve(self, nbytes: int, count: int) -> int:
        """Allocate up to count idle blocks of nbytes now, within limit_bytes, so that
        frames up to that size are taken without an allocation while they are served
        (pinned allocations took up to 10 ms on the H100 host, and synchronise the GPU).
        They are kept until close(), even when larger frames come. Best effort: where the
        memory is refused, fewer are made. Returns how many were made."""
        made = 0
        with self._lock:
            while (made < count and not self._closed
                   and self.pooled_bytes + nbytes <= self.limit_bytes):
                try:
                    self._kept.add(id(self._add(nbytes)))
                except (YoloTrtError, MemoryError):  # pinned memory refused: serve without
                    break
                made += 1
            self.reserved += made
        return made

    def _add(self, nbytes: int, allocate: Allocate | None = None) -> np.ndarray:
        """A new block in the pool (the lock held), from the pool's allocator by default."""
        if allocate is None:
            began = time.perf_counter()
            self._blocks.append(self.allocate(nbytes))
            self.allocations += 1
            self.longest_allocation_s = max(self.longest_allocation_s,
                                            time.perf_counter() - began)
        else:
            self._blocks.append(allocate(nbytes))
        if self._blocks[-1][0][:0].base is not self._blocks[-1][0]:
            self._drop(len(self._blocks) - 1)
            raise ValueError('a frame buffer must be the array its views refer to (numpy '
                             'makes the first array that owns the memory their base)')
        return self._blocks[-1][0]

    def _drop(self, i: int) -> None:
        block, free = self._blocks.pop(i)
        self._kept.discard(id(block))
        self._ordinary.discard(id(block))
        if free is not None:
            free()

    def _release(self, which: Callable[[int], bool]) -> None:
        """Drop (and free) the blocks not in use for which which(index) holds."""
        for i in reversed(range(len(self._blocks))):
            if which(i) and not self._in_use(i):
                self._drop(i)

    def close(self) -> None:
        """Free every block not in use; the pool forgets the others (their owners'
        references keep them; pinned ones are then never freed: a bounded leak). Frames
        asked for after this get ordinary memory."""
        with self._lock:
            self._closed = True
            self._release(lambda i: True)
            self._blocks, self._kept, self._ordinary = [], set(), set()
