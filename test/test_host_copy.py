"""HostCopier: a frame copied into another buffer by several threads, in bands of rows
(real threads, real numpy; the GPU preprocessor copies into pinned memory with it)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from yolo_trt_ros.core.gpu.host_copy import MIN_BAND_BYTES, HostCopier


def frame(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), np.uint8)


@pytest.mark.parametrize('threads', [1, 2, 3, 4, 7])
@pytest.mark.parametrize('h, w', [(1080, 1920), (481, 641), (3, 1920 * 100)])
def test_every_byte_arrives_whatever_the_bands(threads, h, w):
    src = frame(h, w)
    dst = np.zeros_like(src)
    copier = HostCopier(threads)
    try:
        for seed in range(3):  # the helpers serve frame after frame
            src = frame(h, w, seed=seed)
            copier.copy(dst, src)
            np.testing.assert_array_equal(dst, src)
    finally:
        copier.close()


def test_a_row_padded_source_is_copied_without_its_padding():
    padded = frame(720, 1280 * 3 + 7, 1)[:, :1280 * 3, 0].reshape(720, 1280, 3)
    assert not padded.flags.c_contiguous
    dst = np.zeros((720, 1280, 3), np.uint8)
    copier = HostCopier(4)
    try:
        copier.copy(dst, padded)
    finally:
        copier.close()
    np.testing.assert_array_equal(dst, padded)


def test_helpers_work_on_large_frames_and_sleep_through_small_ones():
    """Each helper copies a band of a 6 MB frame; a frame under two bands' worth is
    copied by the caller alone (waking a thread would cost more)."""
    copier = HostCopier(3)
    used: set[str] = set()
    real = copier._band

    def band(index: int) -> None:
        used.add(threading.current_thread().name)
        real(index)

    copier._band = band
    try:
        small = frame(100, MIN_BAND_BYTES // 300)  # under 2 x MIN_BAND_BYTES
        copier.copy(np.empty_like(small), small)
        assert used == set()  # no band split: np.copyto on the caller's thread
        big = frame(1080, 1920)
        copier.copy(np.empty_like(big), big)
        assert used == {threading.current_thread().name, 'frame-copy-1', 'frame-copy-2'}
    finally:
        copier.close()


def test_close_stops_every_helper_and_refuses_later_copies():
    before = threading.active_count()
    copier = HostCopier(4)
    assert threading.active_count() == before + 3
    copier.close()
    assert threading.active_count() == before
    with pytest.raises(RuntimeError, match='closed'):
        copier.copy(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8))


def test_wrong_arguments_are_refused():
    with pytest.raises(ValueError, match='at least 1'):
        HostCopier(0)
    copier = HostCopier(2)
    try:
        with pytest.raises(ValueError, match='cannot copy'):
            copier.copy(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))
    finally:
        copier.close()


def test_a_failed_band_leaves_no_helper_copying_into_the_next_frame():
    """Review finding: when the caller's own band raised (Ctrl-C), copy() returned without
    waiting for the helpers; their late 'done' then let the next copy return before its
    bands were copied."""
    copier = HostCopier(3)
    real = copier._band
    calls = []

    def band(index: int) -> None:
        calls.append(index)
        if index == 0 and len(calls) <= 3:
            raise KeyboardInterrupt
        if index > 0:  # helpers slower than the caller: the window the bug left open
            time.sleep(0.02)
        real(index)

    copier._band = band
    try:
        src = frame(1080, 1920)
        with pytest.raises(KeyboardInterrupt):
            copier.copy(np.zeros_like(src), src)
        for seed in range(3):
            src = frame(1080, 1920, seed=seed)
            dst = np.zeros_like(src)
            copier.copy(dst, src)
            np.testing.assert_array_equal(dst, src)
    finally:
        copier.close()
