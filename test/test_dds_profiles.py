"""The shipped Fast DDS profiles (config/fastdds_*.xml) as Fast DDS reads them: well-formed
XML (an XML comment may not hold '--'), and the shared-memory port queue of the default
profile large enough for cameras on one trigger.

The loss this guards against was measured, not reproducible here: 8 synchronized
1080p bgr8 cameras into one detector on an H100 host lost 2182 of 2880 frames with
Fast DDS's 512-entry port queue and none with 8192, in the same run
(bench/capacity.py --phase synced; bench/results/capacity8_raw_w1_h100_host*.json). On
this 2-core machine the 8 publishers cannot send at once fast enough to fill 512.
Fast DDS applies the queue: a listening process's port file grows from 0.05 MB to 0.2 MB
(/dev/shm/fastdds_port*, seen by hand)."""
from __future__ import annotations

import json
import math
import os
import select
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib import metadata

import pytest

from yolo_trt_ros import launch_args
from yolo_trt_ros.core import defaults
from yolo_trt_ros.core.dds import (
    FAST_DDS_2_VARIABLE,
    FAST_DDS_3_VARIABLE,
    PROFILE_VARIABLES,
    profile_variable,
)
from yolo_trt_ros.launch_args import SHM_PORT_QUEUE_DEFAULT, fastdds_profile, shm_port_queue

FRAGMENT = 65500 - 500  # bytes of a frame per fragment: UDP's message, less RTPS headers
CDR_HEADER = 4 + 8 + 4 + 16 + 4 + 4 + 16 + 1 + 4 + 4  # Image: header, sizes, encoding, data


def fragments(height: int, width: int, channels: int = 3) -> int:
    """Entries one raw Image of this size takes in a receiving port's queue."""
    return math.ceil((height * width * channels + CDR_HEADER) / FRAGMENT)


@pytest.mark.parametrize('name', sorted(defaults.DDS_PROFILES))
def test_every_profile_is_well_formed(name):
    ET.parse(fastdds_profile(name))


def test_the_default_profiles_port_queue_holds_a_burst_of_16_synchronized_1080p_frames():
    assert fragments(1080, 1920) == 96
    # Fast DDS's own 512 is less than 8 such cameras' burst (768): the loss measured
    assert shm_port_queue(defaults.DDS_PROFILE) >= 16 * fragments(1080, 1920)


def test_the_port_queue_is_read_as_fast_dds_reads_it(tmp_path, monkeypatch):
    """Unset is Fast DDS's 512; a profile without shared memory has none."""
    assert shm_port_queue('stock_cameras') is None
    shipped = fastdds_profile(defaults.DDS_PROFILE).read_text()
    unset = tmp_path / defaults.DDS_PROFILES[defaults.DDS_PROFILE]
    unset.write_text(shipped.replace('<port_queue_capacity>8192</port_queue_capacity>', ''))
    monkeypatch.setattr(launch_args, 'config_file', lambda name: tmp_path / name)
    assert shm_port_queue(defaults.DDS_PROFILE) == SHM_PORT_QUEUE_DEFAULT == 512


PROBE = """
import json, os, re, sys
import rclpy
rclpy.init()
node = rclpy.create_node('profile_probe')
# this process's own shared-memory segments (other processes' appear in /dev/shm too)
paths = {line.split()[-1] for line in open('/proc/self/maps')
         if re.search(r'/dev/shm/fast(dds|rtps)_[0-9a-f]{16}$', line)}
print(json.dumps(sorted(os.stat(p).st_size for p in paths)), flush=True)
sys.stdin.read()  # until the test closes it
"""


def segment_sizes_of_a_node(env: dict[str, str]) -> list[int]:
    """The shared-memory segments (bytes) a real rclpy node maps in a process with env,
    as its Fast DDS made them from the profile it read, or from its defaults (0.5 MB)."""
    with subprocess.Popen([sys.executable, '-c', PROBE], env=env, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as proc:
        try:
            ready = select.select([proc.stdout], [], [], 60)[0]
            assert ready, 'the probe node did not start in 60 s'
            return json.loads(proc.stdout.readline())
        finally:
            proc.stdin.close()
            if proc.wait(timeout=30) != 0:
                raise AssertionError(f'the probe node exited {proc.returncode}')


def test_the_launchers_nodes_read_the_profile_on_this_fast_dds(monkeypatch):
    """Fast DDS 2 (Humble, Jazzy) reads FASTRTPS_DEFAULT_PROFILES_FILE, Fast DDS 3 (Kilted)
    FASTDDS_DEFAULT_PROFILES_FILE: with only the second set, a Jazzy node ran on Fast
    DDS's defaults (a 0.5 MB segment, a 512-entry port queue) whatever dds_profile said.
    The launcher's nodes must get the shipped profile's 64 MB segment; Fast DDS reads the
    whole file or none of it, so the port queue beside it is taken too (Fast DDS refuses a
    profile with an element it does not know). Without ROS_AUTOMATIC_DISCOVERY_RANGE=
    LOCALHOST, under which rmw sets the transports itself; in this run's own domain."""
    from yolo_trt_ros.launcher import Launcher, parse_assignments

    for name in (*PROFILE_VARIABLES, 'ROS_AUTOMATIC_DISCOVERY_RANGE'):
        monkeypatch.delenv(name, raising=False)
    stock = segment_sizes_of_a_node(dict(os.environ))
    assert stock and max(stock) < 2**20, stock  # Fast DDS's own: 0.5 MB
    ours = segment_sizes_of_a_node(Launcher(parse_assignments([])).env)
    assert ours and min(ours) >= 64 * 2**20, ours


def test_the_pip_routes_rclpy_decides_over_a_stale_ros_distro(monkeypatch):
    """In a pip-route venv ROS_DISTRO comes from the user's shell and may name another
    install: the venv's own rclpy wheel says which Fast DDS its nodes load."""
    try:
        major = int(metadata.version('ros-rclpy').split('.')[0])
    except metadata.PackageNotFoundError:
        pytest.skip('a sourced ROS install: ROS_DISTRO is its own')
    monkeypatch.setenv('ROS_DISTRO', 'jazzy' if major >= 9 else 'kilted')
    assert profile_variable() == (FAST_DDS_3_VARIABLE if major >= 9 else FAST_DDS_2_VARIABLE)


@pytest.mark.parametrize('fast_dds_3', [False, True])
def test_a_profile_set_in_the_variable_this_fast_dds_does_not_read_is_said(
        fast_dds_3, monkeypatch, tmp_path):
    """On Humble and Jazzy a profile a user set only in FASTDDS_DEFAULT_PROFILES_FILE (Fast
    DDS 3's name, which their Fast DDS 2 never reads) was replaced by the shipped one
    without a word. Both launchers now say so, naming the variable to use; Fast DDS 3
    reads both names (rmw reads the old one with a deprecation warning), so nothing is
    said there."""
    from yolo_trt_ros.core import dds
    from yolo_trt_ros.launcher import Launcher, parse_assignments

    mine = tmp_path / 'mine.xml'
    monkeypatch.setattr(dds, 'fast_dds_3', lambda: fast_dds_3)
    for name in PROFILE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(FAST_DDS_3_VARIABLE, str(mine))
    note = dds.unread_profile_note(os.environ)
    if fast_dds_3:
        assert note is None
        assert dds.own_profile(os.environ) == str(mine)
        return
    assert note == (f'{FAST_DDS_3_VARIABLE}={mine} is not read by the Fast DDS of this ROS '
                    f'(Humble, Jazzy): set {FAST_DDS_2_VARIABLE}={mine} to use it; the nodes '
                    'get the dds_profile instead')
    said: list[str] = []
    launcher = Launcher(parse_assignments([]), log=said.append)
    assert launcher.env[FAST_DDS_2_VARIABLE] == str(fastdds_profile('large_frames'))
    assert said == [f'yolo-trt launch: {note}']
    monkeypatch.setenv(FAST_DDS_2_VARIABLE, str(mine))  # the user's, in the right variable
    assert dds.unread_profile_note(os.environ) is None
