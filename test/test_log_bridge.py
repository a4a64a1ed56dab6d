"""The core's Python log records reach a node's rclpy logger (ros/log_bridge.py), with a
real rclpy logger: rcutils prints them on stderr, which capfd reads at the descriptor."""
import logging
import re
import uuid

import pytest
import rclpy.logging

from yolo_trt_ros.ros.log_bridge import PACKAGE_LOGGER, route_to, unroute


@pytest.fixture
def routed():
    name = f'log_bridge_{uuid.uuid4().hex[:8]}'
    ros_logger = rclpy.logging.get_logger(name)
    ros_logger.set_level(rclpy.logging.LoggingSeverity.DEBUG)
    handler = route_to(ros_logger)
    yield name
    unroute(handler)


def test_records_of_every_level_reach_rcutils_one_after_another(routed, capfd):
    """rclpy keeps one context per call site and raises 'Logger severity cannot be
    changed between calls' when a site logs at a second severity: the bridge once logged
    every level from one line, so the first record of a new level after another raised
    into the core's caller (on the GPU host a JPEG frame was refused as an internal error,
    from nvImageCodec's log). Every level, twice, in an order that changes level each time."""
    core = logging.getLogger(f'{PACKAGE_LOGGER}.test')
    for round_ in range(2):
        core.warning('w%d', round_)
        core.info('i%d', round_)
        core.error('e%d', round_)
        core.debug('d%d', round_)
        core.critical('c%d', round_)
    err = capfd.readouterr().err
    for round_ in range(2):
        for severity, letter in (('WARN', 'w'), ('INFO', 'i'), ('ERROR', 'e'), ('DEBUG', 'd'),
                                 ('ERROR', 'c')):  # each record on its line, at its level
            assert re.search(rf'^\[{severity}\] \[[^]]*\] \[{routed}\]: {letter}{round_}$',
                             err, re.M), err


def test_a_failing_ros_logger_does_not_raise_into_the_core(capfd):
    """Logging must never break the work that logs: an rclpy logger that raises (as the
    call-site check above did) is reported by logging's own handleError, not raised."""
    class Raising:
        def __getattr__(self, name):
            def log(text):
                raise ValueError('broken logger')
            return log

    handler = route_to(Raising())
    try:
        logging.getLogger(f'{PACKAGE_LOGGER}.test').warning('still here')
    finally:
        unroute(handler)
    assert 'broken logger' in capfd.readouterr().err
