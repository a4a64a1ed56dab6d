"""`yolo-trt param` (issue 18, edge 6): the pip route has no `ros2 param`, so the README's
run-time changes are made with this, against a real detector."""
from __future__ import annotations

import subprocess
import sys

import pytest
from support.ros import running

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
