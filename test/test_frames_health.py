"""Diagnostics levels from one camera's last window (issue 11.7): no ROS needed."""
from __future__ import annotations

from yolo_trt_ros.core.serving.health import ERROR, OK, WARN, Window, health


def test_levels_and_reasons():
    assert health(Window(30, 30, 0, 0), 0) == (OK, 'ok')
    assert health(Window(0, 0, 0, 0), 0) == (OK, 'ok')  # an idle camera is no fault
    level, why = health(Window(100, 28, 72, 0), 0)  # 72 % dropped
    assert level == WARN and '72 of 100 frames dropped' in why
    assert health(Window(100, 50, 50, 0), 0)[0] == OK  # exactly half: not more than half
    level, why = health(Window(10, 10, 0, 3), 0)
    assert level == WARN and '3 frames lost in DDS' in why
    level, why = health(Window(5, 0, 4, 0), 0)
    assert level == ERROR and '5 frames in, none processed' in why
    assert health(Window(5, 5, 0, 0), 2) == (WARN, 'bad input seen')


def test_a_stalled_window_that_lost_frames_names_both():
    # Seen in CI under load: the window that lost frames in DDS also processed none, and
    # its ERROR message said nothing of the loss.
    level, why = health(Window(5, 0, 4, 2), 0)
    assert level == ERROR and why == '5 frames in, none processed; 2 frames lost in DDS'
