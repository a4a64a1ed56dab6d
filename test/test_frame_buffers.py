"""The buffers camera frames are taken into (core/image/frame_buffers.py): a buffer is
given out again only once nothing refers to it, whatever view of it was made."""
from __future__ import annotations

import ctypes
import threading

import numpy as np
import pytest

from yolo_trt_ros.core.image.frame_buffers import FrameBuffers


class Counted:
    """An allocator that records what it allocated and freed (pinned memory's stand-in:
    the pool's logic is the same for both kinds)."""

    def __init__(self) -> None:
        self.allocated: list[int] = []
        self.freed: list[int] = []

    def __call__(self, nbytes: int):
        self.allocated.append(nbytes)
        return np.empty(nbytes, np.uint8), lambda: self.freed.append(nbytes)


def test_a_buffer_is_given_again_only_once_every_view_of_it_is_gone():
    pool = FrameBuffers(Counted())
    first = pool.get(100)
    address = first.ctypes.data
    views = [first[:50], memoryview(first).cast('B')[10:], np.frombuffer(memoryview(first), np.uint8)]
    del first
    while views:  # each kind of view alone keeps it in use
        assert pool.get(100).ctypes.data != address
        views.pop(0)
    assert pool.get(100).ctypes.data == address  # all views gone: reused
    assert len(pool) == 2  # the one above, and one other made while it was held


def test_a_larger_frame_replaces_the_idle_smaller_buffers_and_frees_them():
    allocator = Counted()
    pool = FrameBuffers(allocator)
    held = pool.get(10)
    pool.get(10)  # idle again at once
    big = pool.get(30)
    assert allocator.freed == [10] and len(pool) == 2  # the held one stays, in use
    del held, big
    assert pool.get(20).nbytes == 30  # a smaller frame fits a larger buffer
    pool.close()
    assert sorted(allocator.freed) == [10, 10, 30]


def test_above_the_limit_a_frame_gets_memory_of_its_own_and_the_pool_does_not_grow():
    allocator = Counted()
    pool = FrameBuffers(allocator, limit_bytes=100)
    kept = [pool.get(40), pool.get(40)]  # a consumer that keeps frames
    extra = pool.get(40)
    assert pool.overflowed == 1 and len(pool) == 2 and allocator.allocated == [40, 40]
    assert not any(np.shares_memory(extra, k) for k in kept)
    del kept
    assert pool.get(40) is not None and pool.overflowed == 1


def test_close_frees_only_what_is_not_in_use():
    allocator = Counted()
    pool = FrameBuffers(allocator)
    held = pool.get(8)
    pool.get(16)
    pool.close()
    assert allocator.freed == [16] and len(pool) == 0
    held[:] = 1  # still the holder's: never freed under it


def test_threads_never_get_the_same_buffer_while_each_holds_one():
    pool = FrameBuffers()
    errors: list[str] = []

    def work(mark: int) -> None:
        for _ in range(300):
            block = pool.get(64)
            block[:] = mark
            if not (block == mark).all():
                errors.append(f'thread {mark} saw another write into its buffer')
            del block

    threads = [threading.Thread(target=work, args=(m,)) for m in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(pool) <= 4


def over_foreign_memory(nbytes: int, reshape: bool = False):
    """Memory numpy does not own, as pinned memory is (core/gpu/cuda.py pinned_allocator):
    numpy makes the frombuffer array the base of every view of it."""
    array = np.frombuffer((ctypes.c_byte * nbytes)(), np.uint8)
    return (array.reshape((nbytes,)) if reshape else array), None


def test_a_buffer_over_foreign_memory_is_in_use_while_a_view_of_it_lives():
    """Review of the change: the pinned allocator handed out a reshaped view of its
    frombuffer array; views of it refer past it, so the pool gave a frame's buffer out
    again while the frame was still in its slot (and could free it under the frame)."""
    pool = FrameBuffers(over_foreign_memory)
    frame = pool.get(64)[:32]  # what the taker hands on
    frame[:] = 7
    again = pool.get(64)
    again[:] = 9
    assert (frame == 7).all() and not np.shares_memory(frame, again)


def test_an_allocator_whose_views_refer_past_its_array_is_refused():
    pool = FrameBuffers(lambda n: over_foreign_memory(n, reshape=True))
    with pytest.raises(ValueError, match='views refer to'):
        pool.get(64)
    assert len(pool) == 0


def test_after_close_frames_get_memory_the_pool_does_not_keep():
    allocator = Counted()
    pool = FrameBuffers(allocator)
    pool.close()
    assert pool.get(8).nbytes == 8 and allocator.allocated == [] and len(pool) == 0


def test_reserved_blocks_serve_frames_up_to_their_size_without_an_allocation():
    """The node reserves blocks for the frames it warmed up for before it subscribes: a
    frame up to that size is taken into one of them, a larger one still gets its own."""
    alloc = Counted()
    pool = FrameBuffers(alloc, limit_bytes=1000)
    assert pool.reserve(300, 4) == 3  # the fourth would pass limit_bytes
    assert alloc.allocated == [300] * 3 and pool.allocations == 3
    held = [pool.get(250), pool.get(300, replace=False), pool.get(10, replace=False)]
    assert alloc.allocated == [300] * 3  # no allocation while serving
    assert len({b.ctypes.data for b in held}) == 3
    assert pool.get(200).nbytes == 200 and pool.overflowed == 1  # all in use, limit reached
    del held
    assert pool.get(300).nbytes == 300 and alloc.allocated == [300] * 3
    pool.close()
    assert pool.reserve(300, 2) == 0 and len(alloc.freed) == 3


def test_reserved_blocks_outlive_a_larger_frame_and_small_frames_take_the_smallest_fit():
    """Found in review: a frame larger than the reserved size freed the idle reserved
    blocks (a bgra8 camera among bgr8 ones), and a small frame could take a large block
    that a larger camera needed. Reserved blocks stay until close(); a frame takes the
    smallest idle block it fits."""
    alloc = Counted()
    pool = FrameBuffers(alloc)
    pool.reserve(300, 2)
    big = pool.get(500)  # no reserved block fits: one of its own, the reserved ones stay
    assert alloc.allocated == [300, 300, 500] and alloc.freed == [] and len(pool) == 3
    del big
    small = pool.get(100)
    assert small.nbytes == 300  # a reserved block, not the 500
    large = pool.get(400)
    assert large.nbytes == 500 and alloc.allocated == [300, 300, 500]
    del small, large
    pool.get(600)  # the idle unreserved 500 is replaced, the reserved ones are not
    assert alloc.freed == [500] and sorted(b.nbytes for b, _ in pool._blocks) == [300, 300, 600]
    pool.close()
    assert sorted(alloc.freed) == [300, 300, 500, 600]


def test_a_reservation_the_memory_refuses_is_cut_short_not_raised():
    from yolo_trt_ros.core.errors import CudaError

    alloc = Counted()

    def allocate(nbytes: int):
        if len(alloc.allocated) == 2:
            raise CudaError('cudaHostAlloc: out of memory')
        return alloc(nbytes)

    pool = FrameBuffers(allocate)
    assert pool.reserve(300, 5) == 2 and pool.reserved == 2 and len(pool) == 2


def test_a_frame_the_memory_refuses_gets_ordinary_memory_that_the_pool_reuses():
    """Pinned memory refused (cudaHostAlloc out of memory, a 4K camera after a 1080p
    warm-up): get() raised, and only the frame reader's take had a fallback of its own.
    The pool itself now gives ordinary memory, counts it and keeps it for the next frame
    of that size, so the failing allocation is not tried again for every frame."""
    from yolo_trt_ros.core.errors import CudaError

    tried: list[int] = []

    def refusing(nbytes: int):
        tried.append(nbytes)
        raise CudaError('cudaHostAlloc: out of memory')

    pool = FrameBuffers(refusing)
    first = pool.get(1000)
    assert first.nbytes >= 1000 and pool.refused == 1
    assert pool.refusal == 'cudaHostAlloc: out of memory'
    kept = id(first)
    del first
    assert id(pool.get(1000)) == kept  # reused: the allocator is not asked again
    assert tried == [1000] and pool.refused == 1 and pool.allocations == 0
    assert len(pool) == 1 and pool.ordinary_blocks == (1, 1000)
    assert pool.overflowed == 0  # not a frame above the limit
    pool.close()
    assert pool.ordinary_blocks == (0, 0) and len(pool) == 0


def test_frames_left_in_a_closed_intake_do_not_keep_their_buffers():
    """A deactivation under traffic: frames that came during the last batch were still in
    their keep-newest slots when the node closed its buffer pool, so the pool counted
    their blocks in use and forgot them (pinned memory never freed: a frame per camera per
    deactivation). A closed intake lets go of the frames it held."""
    from yolo_trt_ros.core.serving.decoding import Intake

    allocator = Counted()
    pool = FrameBuffers(allocator)
    assert pool.reserve(1000, 2) == 2
    intake = Intake(2, False, 10**8)
    for camera in (0, 1):
        intake.put(camera, pool.get(1000)[:1000])  # a frame's view, waiting for the worker
    intake.close()
    intake.put(0, pool.get(1000)[:1000])  # a frame that comes after: not kept either
    pool.close()
    assert allocator.freed == [1000, 1000]
    # every frame accounted for: received, and dropped where never taken
    assert [(intake.received(c), intake.dropped(c)) for c in (0, 1)] == [(2, 2), (1, 1)]


def test_reports_left_in_a_closed_slot_set_are_counted_dropped():
    """A refused frame's report waiting for the worker at close was counted in frames in
    and then nowhere (not processed, not dropped, not bad input)."""
    from yolo_trt_ros.core.serving.frames import LatestFrames

    slots = LatestFrames(2)
    slots.put(0, 'frame')
    slots.note(1, 'refused', 0.0)
    slots.close()
    slots.note(1, 'refused after close', 0.0)
    assert slots.dropped == [1, 2] and slots.take(timeout=0) == []
