"""Which ROS 2 this suite runs on, and what differs between the distros we support.

CI runs the whole suite twice: on Kilted (.venv) and on Jazzy (.venv-jazzy, `bash
pip_env/setup.sh --distro jazzy`). The rest of the suite is the same for both; this file
says where they differ and that the code's assumptions hold on each: type hashes (REP 2011,
since Iron: Jazzy and Kilted have them, Humble not), the QoS event module (rclpy.event_handler
since Iron, rclpy.qos_event on Humble), the message-lost event's counters, whether a
subscription's MessageInfo names the publisher (Kilted only), Fast DDS 2 or 3
(config/fastdds_large_frames.xml is read by both), and, on the pip route, that the venv holds
the wheel set pip_env pins for the distro.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
import rclpy
from packaging.requirements import Requirement
from support.ros import message_info_names_publishers

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Facts:
    rclpy_major: int
    type_hashes: bool
    event_module: str
    fast_dds: tuple[str, int] | None  # the pip route's Fast DDS wheel and its major version
    requirements: str | None  # the pip route's ROS wheel set
    publisher_gid: bool  # MessageInfo names the publisher (per-publisher frame accounting)


DISTROS = {
    'humble': Facts(3, False, 'rclpy.qos_event', None, None, False),
    'jazzy': Facts(7, True, 'rclpy.event_handler', ('ros-fastrtps', 2),
                   'requirements-ros-jazzy.txt', False),
    'kilted': Facts(9, True, 'rclpy.event_handler', ('ros-fastdds', 3),
                    'requirements-ros.txt', True),
}


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def pip_route() -> bool:
    return _installed('ros-rclpy')


def distro() -> str:
    """From the ros-rclpy wheel (pip route), else from the sourced install's ROS_DISTRO."""
    if pip_route():
        major = int(metadata.version('ros-rclpy').split('.')[0])
        return next(name for name, f in DISTROS.items() if f.rclpy_major == major)
    return os.environ['ROS_DISTRO']


FACTS = DISTROS[distro()]
needs_pip_route = pytest.mark.skipif(not pip_route(), reason='a sourced ROS install')


def test_the_distro_is_supported_and_its_rclpy():
    assert distro() in DISTROS
    if pip_route():
        assert int(metadata.version('ros-rclpy').split('.')[0]) == FACTS.rclpy_major, \
            rclpy.__file__


def test_type_hashes_exist_where_the_distro_has_them():
    from rclpy.topic_endpoint_info import TopicEndpointInfo

    assert hasattr(TopicEndpointInfo, 'topic_type_hash') == FACTS.type_hashes


def test_the_qos_event_module_and_message_lost_counters():
    module = importlib.import_module(FACTS.event_module)  # detector_node imports either
    assert hasattr(module, 'SubscriptionEventCallbacks')
    info = module.QoSMessageLostInfo  # what message_lost hands the detector's callback
    assert {'total_count', 'total_count_change'} <= set(dir(info))


@pytest.mark.ros
def test_message_info_names_the_publisher_where_the_distro_does():
    """The detector counts frames replaced in its queue or sent before its subscription
    matched from each publisher's sequence numbers (ros/cameras.py): Kilted's rclpy names
    the publisher; Jazzy's gives sequence numbers without it, so there they go uncounted
    (test_detector_lifecycle.py skips that accounting test, saying why)."""
    assert message_info_names_publishers() == FACTS.publisher_gid


@needs_pip_route
def test_fast_dds_is_the_distros():
    wheel, major = FACTS.fast_dds
    assert int(metadata.version(wheel).split('.')[0]) == major
    other = {'ros-fastdds', 'ros-fastrtps'} - {wheel}
    assert not any(_installed(name) for name in other)  # never two Fast DDS in one venv


@needs_pip_route
def test_the_venv_holds_the_pinned_ros_set():
    lines = (line.split('#')[0].strip()
             for line in (REPO / 'pip_env' / FACTS.requirements).read_text().splitlines())
    wanted = [Requirement(line) for line in lines if line]
    assert wanted
    for req in wanted:
        version = metadata.version(req.name)
        assert req.specifier.contains(version, prereleases=True), f'{req.name} {version}: {req}'
