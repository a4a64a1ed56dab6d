"""The tests' ROS helpers (test/support/ros.py) against a service that loses a reply, as
Fast DDS does when the server has not matched the client's response reader within its
100 ms wait (rmw_fastrtps#390, #467): CI's lifecycle test then waited 30 s for a GetState
reply that never came. Real rclpy, a server in the same process that drops its first
reply (support.ros.LosingServer)."""
from __future__ import annotations

import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from support import ros
from support.ros import Client, LosingServer, ReplyLost, change_state, lifecycle_state, ros_context

pytestmark = pytest.mark.ros


def losing_detector(context) -> LosingServer:
    """/detector's lifecycle services, each dropping its first reply; a transition is
    carried out before its reply is lost. change_state made first, as LifecycleNode does:
    a GetState asked after a ChangeState is then never answered before it."""
    state, calls = {'now': 'unconfigured'}, {'get': 0, 'change': 0}

    def get(request, response):
        calls['get'] += 1
        if calls['get'] == 1:
            raise ReplyLost
        response.current_state.label = state['now']
        return response

    def change(request, response):
        calls['change'] += 1
        if request.transition.id == Transition.TRANSITION_CONFIGURE:
            state['now'] = 'inactive'
        raise ReplyLost

    server = LosingServer(context, 'detector', {
        '/detector/change_state': (ChangeState, change), '/detector/get_state': (GetState, get)})
    server.calls = calls
    return server


def test_lost_replies_are_asked_again_or_read_from_the_settled_state(monkeypatch):
    monkeypatch.setattr(ros, 'RESEND_S', 0.5)
    with ros_context() as context:
        server, client = losing_detector(context), Client(context)
        try:
            assert lifecycle_state(client) == 'unconfigured'  # asked again after the loss
            assert change_state(client, Transition.TRANSITION_CONFIGURE)  # reached 'inactive'
            assert not change_state(client, Transition.TRANSITION_ACTIVATE)  # stayed there
        finally:
            client.executor.shutdown()
            server.close()
    assert server.calls['change'] == 2  # a transition is never asked twice


def test_another_test_run_is_given_another_domain():
    """conftest's domain is locked for this run (support/domain.py): another run, made
    while this one runs, claims every domain it can (for a moment) and never gets it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    claim_all = ('from support.domain import claim_domain\n'
                 'got = []\n'
                 'try:\n'
                 '    while True:\n'
                 '        got.append(claim_domain())\n'
                 'except RuntimeError:\n'
                 '    print(*got)\n')
    other = subprocess.run([sys.executable, '-c', claim_all], cwd=Path(__file__).parent,
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 0, other.stderr
    got = other.stdout.split()
    assert len(got) == len(set(got)) and 50 <= len(got) <= 99, got
    assert os.environ['ROS_DOMAIN_ID'] not in got
