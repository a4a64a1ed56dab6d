"""`yolo-trt param` (issue 18, edge 6): the pip route has no `ros2 param`, so the README's
run-time changes are made with this, against a real detector."""
from __future__ import annotations

import subprocess
import sys

import pytest
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters
from support.ros import LosingServer, ReplyLost, ros_context, running

pytestmark = pytest.mark.ros


def param(*args: str) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, '-m', 'yolo_trt_ros.cli', 'param', *args],
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def test_list_get_and_set_on_a_running_detector():
    with running() as (proc, client):
        rc, out, err = param('list', '/detector')
        assert rc == 0, err
        assert {'conf_threshold', 'classes', 'tracker'} <= set(out.split())
        assert param('set', 'detector', 'conf_threshold', '0.5')[0] == 0
        proc.wait_for_output('thresholds now conf 0.5')
        assert param('get', '/detector', 'conf_threshold')[1] == '0.5\n'
        assert param('set', '/detector', 'classes', '[0, 2]')[0] == 0
        assert param('get', '/detector', 'classes')[1] == '[0, 2]\n'
        rc, out, err = param('set', '/detector', 'conf_threshold', 'abc')
        assert (rc, out) == (1, '')
        assert err == ("yolo-trt param: /detector refused conf_threshold: parameter "
                       "conf_threshold: 'abc' is a string, expected a double\n")
        rc, _, err = param('get', '/detector', 'conf_treshold')
        assert rc == 1 and err == 'yolo-trt param: /detector has no parameter conf_treshold\n'


def test_a_node_that_is_not_there_is_one_line_and_exit_2():
    rc, out, err = param('get', '/nobody', 'conf_threshold', '--timeout', '1')
    assert (rc, out) == (2, '')
    assert err.startswith('yolo-trt param: no node /nobody answered within 1 s')
    assert len(err.splitlines()) == 1


def test_a_lost_reply_is_asked_again_within_the_timeout():
    """A node whose first reply is lost (Fast DDS drops a response when the server has not
    matched the client's response reader within 100 ms; `yolo-trt param` starts a new
    participant each time, so every call is a fresh match). It sent one request and
    reported no answer after the whole timeout; it asks again now."""
    asked = []

    def get(request, response):
        asked.append(list(request.names))
        if len(asked) == 1:
            raise ReplyLost
        response.values = [ParameterValue(type=ParameterType.PARAMETER_DOUBLE,
                                          double_value=0.25)]
        return response

    with ros_context() as context:
        server = LosingServer(context, 'camera_driver', {
            '/camera_driver/get_parameters': (GetParameters, get)})
        try:
            rc, out, err = param('get', '/camera_driver', 'exposure', '--timeout', '20')
        finally:
            server.close()
    assert (rc, out) == (0, '0.25\n'), (err, asked)
    assert asked[:2] == [['exposure'], ['exposure']]


@pytest.mark.parametrize('args,said', [
    (('get', '/bad node', 'x'), "'/bad node' is not a node name (' ' is not a letter"),
    (('get', '', 'x'), "'' is not a node name (it is empty)"),
    (('set', '/nobody', 'conf_threshold', '{a: 1}'), "'{a: 1}' is not a parameter value"),
    (('set', '/nobody', 'max_detections', '99999999999999999999999'),
     "'99999999999999999999999' is not a parameter value"),
    (('get', '/nobody', 'x', '--timeout', 'nan'), "expected seconds above 0, got 'nan'"),
])
def test_a_bad_node_name_value_or_timeout_is_one_line_before_any_call(args, said):
    """A hostile user's attack (helper): rclpy's InvalidServiceNameException, a TypeError
    and a SystemError (from inside the publish) were tracebacks; a NaN timeout was taken."""
    rc, out, err = param(*args)
    assert (rc, out) == (2, '') and 'Traceback' not in err, err
    assert said in err.splitlines()[-1], err
