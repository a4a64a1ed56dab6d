"""A detector process keeps its frame memory for the next frames (core/serving/memory.py):
a batch of 1080p frames freed together must not go back to the kernel, to be faulted in
again, page by page, while the next frames are copied. Each case runs in a fresh
interpreter: malloc's settings are the process's."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from yolo_trt_ros.core.serving.memory import USER_SETTINGS

# What the executor thread does with 8 cameras' frames: a new bytes object per frame, the
# frame copied in (as rclpy's raw take does), then the batch freed together by the worker.
BATCHES = """
import ctypes, json, resource, sys
from yolo_trt_ros.core.serving.memory import keep_frame_memory
# Transparent huge pages off for this process (PR_SET_THP_DISABLE): where the kernel backs
# the heap with 2 MB pages ("always", the default of some distributions), a frame costs a
# few faults either way and there would be nothing to see.
ctypes.CDLL(None, use_errno=True).prctl(41, 1, 0, 0, 0)
said = keep_frame_memory() if sys.argv[1] == 'keep' else ''
frame = bytes(1920 * 1080 * 3)
for batch in range(6):
    if batch == 2:  # after the first batches: what every later batch costs
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    frames = [bytes(memoryview(frame)) for _ in range(8)]
    del frames
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
print(json.dumps({'said': said, 'faults_per_frame': faults / 32}))
"""


def run_batches(keep: bool, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in USER_SETTINGS}
    out = subprocess.run([sys.executable, '-c', BATCHES, 'keep' if keep else 'leave'],
                         env={**clean, **env}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope='module')
def glibc():
    if platform.libc_ver()[0] != 'glibc':
        pytest.skip('not glibc: its malloc thresholds are what this is about')


def test_freed_frames_are_reused_not_faulted_in_again(glibc):
    kept = run_batches(keep=True)
    assert kept['said'].startswith('frame memory: kept for reuse')
    # A 6.2 MB frame is 1519 pages; kept, a later batch faults none of them in again.
    assert kept['faults_per_frame'] < 50, kept


def test_left_to_itself_malloc_gives_the_frames_back(glibc):
    """The measurement sees the cost the setting takes away (glibc's defaults)."""
    assert run_batches(keep=False)['faults_per_frame'] > 1000


def test_the_users_own_malloc_settings_win(glibc):
    said = run_batches(keep=True, GLIBC_TUNABLES='glibc.malloc.tcache_count=7')
    assert said['said'] == "frame memory: left to the user's malloc tunables"
    assert said['faults_per_frame'] > 1000  # nothing was changed behind the user's back
    said = run_batches(keep=True, MALLOC_TOP_PAD_='0')
    assert said['said'] == "frame memory: left to the user's MALLOC_TOP_PAD_"


def test_tunables_of_other_parts_of_glibc_change_nothing(glibc):
    kept = run_batches(keep=True, GLIBC_TUNABLES='glibc.pthread.rseq=0')
    assert kept['said'].startswith('frame memory: kept for reuse')
    assert kept['faults_per_frame'] < 50
