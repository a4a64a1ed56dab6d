"""A frame copied into pinned memory by several threads at once, in bands of rows.

A 1080p bgr8 frame is 6.2 MB. Uploaded from the message's own (pageable) memory, the CUDA
driver copies it through its own staging buffers on the calling thread, and the call
returns only once the host side is done; that copy cannot be captured in a CUDA graph
either. Copied into pinned memory first, the upload is one DMA that runs at the bus's
speed and that a graph captures with the kernels after it, but one thread's copy cost
more than the driver's (issue 21, item 6). Several threads, each copying a band of rows,
take that copy's time down to what the memory bandwidth allows: numpy releases the GIL
while it copies plain bytes, so the bands are copied truly in parallel.
"""
from __future__ import annotations

import threading

import numpy as np

MIN_BAND_BYTES = 256 << 10  # below this per thread, waking a thread costs more than it saves


class HostCopier:
    """copy(dst, src) with `threads` threads: the caller's and threads - 1 helpers, which
    sleep between frames. One caller at a time (the detector's worker thread)."""

    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError(f'copy threads must be at least 1, got {threads}')
        self.threads = threads
        self._job: tuple[np.ndarray, np.ndarray, int] | None = None
        self._errors: list[BaseException] = []
        self._go = [threading.Event() for _ in range(threads - 1)]
        self._done = [threading.Event() for _ in range(threads - 1)]
        self._closed = False
        self._helpers = [threading.Thread(target=self._serve, args=(i,), daemon=True,
                                          name=f'frame-copy-{i + 1}')
                         for i in range(threads - 1)]
        for helper in self._helpers:
            helper.start()

    def copy(self, dst: np.ndarray, src: np.ndarray) -> None:
        """dst[...] = src, both (rows, ...) of the same shape; src may be row-padded."""
        if dst.shape != src.shape:
            raise ValueError(f'cannot copy {src.shape} into {dst.shape}')
        if self._closed:
            raise RuntimeError('HostCopier is closed')
        bands = max(1, min(self.threads, src.nbytes // MIN_BAND_BYTES, src.shape[0]))
        if bands == 1:
            np.copyto(dst, src)
            return
        self._job = (dst, src, bands)
        for i in range(bands - 1):
            self._go[i].set()
        try:
            self._band(0)
        finally:  # even if the caller's band failed: no helper may still be copying after
            for i in range(bands - 1):
                self._done[i].wait()
                self._done[i].clear()
            self._job = None
        if self._errors:  # a helper's copy failed (it cannot for same-shape uint8)
            error, self._errors = self._errors[0], []
            raise error

    def _band(self, index: int) -> None:
        dst, src, bands = self._job
        rows = src.shape[0]
        start, stop = rows * index // bands, rows * (index + 1) // bands
        np.copyto(dst[start:stop], src[start:stop])

    def _serve(self, i: int) -> None:
        go, done = self._go[i], self._done[i]
        while True:
            go.wait()
            go.clear()
            try:
                if self._closed:
                    return
                self._band(i + 1)
            except BaseException as exc:  # handed to the caller, which raises it
                self._errors.append(exc)
            finally:  # a copy in progress when close() came still ends
                done.set()

    def close(self) -> None:
        """Stop the helpers (after the copy in progress, if any)."""
        self._closed = True
        for go in self._go:
            go.set()
        for helper in self._helpers:
            helper.join()
