"""The tests' ROS helpers (test/support/ros.py) against a service that loses a reply, as
Fast DDS does when the server has not matched the client's response reader within its
100 ms wait (rmw_fastrtps#390, #467): CI's lifecycle test then waited 30 s for a GetState
reply that never came. Real rclpy, a server in the same process that drops its first
reply (raising in a service callback sends none)."""
from __future__ import annotations

import threading

import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.executors import SingleThreadedExecutor
from support import ros
from support.ros import Client, change_state, lifecycle_state, make_node, ros_context

pytestmark = pytest.mark.ros


class LosingServer:
    """/detector's lifecycle services, each dropping its first reply; a transition is
    carried out before its reply is lost."""

    def __init__(self, context) -> None:
        self.executor = SingleThreadedExecutor(context=context)
        node = make_node(context, 'detector', self.executor)
        self.state, self.calls = 'unconfigured', {'get': 0, 'change': 0}
        node.create_service(GetState, '/detector/get_state', self._get)
        node.create_service(ChangeState, '/detector/change_state', self._change)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except RuntimeError:  # the callback's deliberate failure: no reply sent
                pass

    def _get(self, request, response):
        self.calls['get'] += 1
        if self.calls['get'] == 1:
            raise RuntimeError('reply lost')
        response.current_state.label = self.state
        return response

    def _change(self, request, response):
        self.calls['change'] += 1
        if request.transition.id == Transition.TRANSITION_CONFIGURE:
            self.state = 'inactive'
        raise RuntimeError('reply lost')

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.executor.shutdown()


def test_lost_replies_are_asked_again_or_read_from_the_settled_state(monkeypatch):
    monkeypatch.setattr(ros, 'RESEND_S', 0.5)
    with ros_context() as context:
        server, client = LosingServer(context), Client(context)
        try:
            assert lifecycle_state(client) == 'unconfigured'  # asked again after the loss
            assert change_state(client, Transition.TRANSITION_CONFIGURE)  # reached 'inactive'
            assert not change_state(client, Transition.TRANSITION_ACTIVATE)  # stayed there
        finally:
            client.executor.shutdown()
            server.close()
    assert server.calls['change'] == 2  # a transition is never asked twice
