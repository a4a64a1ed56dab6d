"""Frame memory kept by a detector process from one frame to the next.

A raw subscription hands each frame over as a new bytes object: rclpy allocates it and
copies the frame in, in the thread that takes the frames (ros/frame_reader.py). glibc's
malloc, left to itself, gives the freed memory of large blocks back to the kernel: above
128 KB at first, then whatever lies free at the top of its heap beyond twice the largest
block freed so far. A batch of
cameras' 1080p frames (6.2 MB each) freed together goes back that way, and the next
frames fault fresh pages in, one fault per 4 KB, while they are copied. On the dev machine
8 cameras x 1080p cost the node 449 page faults a frame this way, and 9 with the memory
kept (bench/node_memory.py; its CPU time per frame was 1.6-1.7 ms lower in two of three
runs and 0.5 ms higher in the third, within that 2-core machine's spread).

keep_frame_memory() raises glibc's thresholds for this process: blocks up to 32 MB (a 4K
bgr8 frame is 25 MB) come from the heap, and up to 256 MB of free heap stays with the
process to be reused. The process's resident memory then stays near its peak instead of
breathing with every batch. A user's own malloc settings (MALLOC_TRIM_THRESHOLD_,
MALLOC_MMAP_THRESHOLD_, MALLOC_TOP_PAD_, MALLOC_MMAP_MAX_, glibc.malloc tunables) or
another allocator preloaded (jemalloc, tcmalloc, mimalloc) win.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's largest on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 256 << 20
USER_SETTINGS = ('MALLOC_TRIM_THRESHOLD_', 'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TOP_PAD_',
                 'MALLOC_MMAP_MAX_', 'GLIBC_TUNABLES', 'LD_PRELOAD')
OTHER_ALLOCATORS = ('jemalloc', 'tcmalloc', 'mimalloc')


def _user_setting() -> str | None:
    """What the user set for malloc, if anything."""
    given = [name for name in USER_SETTINGS[:4] if os.environ.get(name)]
    if given:
        return ', '.join(given)
    if 'glibc.malloc.' in os.environ.get('GLIBC_TUNABLES', ''):
        return 'malloc tunables'
    preloaded = os.environ.get('LD_PRELOAD', '')
    return next((name for name in OTHER_ALLOCATORS if name in preloaded), None)


def keep_frame_memory() -> str:
    """Set the thresholds (once per process, before frames arrive); what was done, in one
    line, for the log."""
    given = _user_setting()
    if given:
        return f"frame memory: left to the user's {given}"
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library('c')).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (musl has no mallopt)
        return 'frame memory: left to the C library (no mallopt here)'
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success. Either setting turns glibc's own adjustment of both
    # thresholds off, so the mmap threshold goes first: refused (a 32-bit glibc takes at
    # most 512 KB), nothing has changed.
    if not mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        return 'frame memory: left to the C library (mallopt refused the thresholds)'
    if not mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD):  # accepts any value: never seen
        return 'frame memory: frames from the heap, which glibc trims as it likes'
    return (f'frame memory: kept for reuse (blocks up to {MMAP_THRESHOLD >> 20} MB from '
            f'the heap, up to {TRIM_THRESHOLD >> 20} MB of it kept free)')
