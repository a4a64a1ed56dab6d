"""The detector's parameters as a user gets them wrong, through a real node process: one
line naming the parameter, the value and what is accepted, and exit 2 (issues 10.4 and
11.5-6). The full table of bad values is checked in-process in test_serving_config.py."""
from __future__ import annotations

import subprocess
import sys

import pytest
from rcl_interfaces.msg import ParameterType, ParameterValue
from sensor_msgs.msg import Image
from support.ros import double, frame, get_parameter, running, set_parameter
from support.truth import found
from vision_msgs.msg import Detection2DArray

pytestmark = pytest.mark.ros
DETECTOR = 'yolo_trt_ros.ros.detector_node'


def start(*params: str, timeout: float = 60) -> tuple[int, str]:
    args = [a for p in ('backend:=onnxruntime', *params) for a in ('-p', p)]
    proc = subprocess.run([sys.executable, '-m', DETECTOR, '--ros-args', *args],
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


# Each case below takes a path that only a real node has (every other bad value is checked
# in-process by test_serving_config.py): rclpy's typing of a read-only parameter, the
# core's check of a dynamically typed one, and `classes` checked once the model is open.
@pytest.mark.parametrize('param,expected', [
    ('conf_threshold:=abc', "parameter conf_threshold: 'abc' is a string, expected a double"),
    ('qos_depth:=abc', "parameter qos_depth: 'abc' is a string, expected an integer"),
    ('classes:=999', 'parameter classes: [999] not in 0..79 (the model has 80 classes)'),
    ('image_topics:=1bad topic!', "parameter image_topics: '1bad topic!' is not a valid topic"),
])
def test_bad_parameter_is_one_line_and_exit_2(param, expected):
    rc, out = start(param)
    assert rc == 2, out
    assert expected in out, out
    assert 'Traceback' not in out


def test_misspelled_parameter_is_reported(bus_jpg):
    with running(conf_treshold=0.5) as (proc, client):
        proc.wait_for_output("'conf_treshold' (did you mean 'conf_threshold'?)")


def test_classes_is_an_integer_array_set_at_run_time_and_names_work(bus_jpg):
    with running(classes='[5]') as (proc, client):  # -p classes:=[5]: bus only
        results = client.collect(Detection2DArray, 'detections')
        pub = client.publisher(Image, 'image')
        pub.publish(frame(bus_jpg, 'bgr8', 1, 'cam'))
        client.wait(lambda: results, 'the first result')
        ok, reason = set_parameter(client, 'classes', ParameterValue(
            type=ParameterType.PARAMETER_INTEGER_ARRAY, integer_array_value=[99]))
        assert not ok and 'parameter classes: [99] not in 0..79' in reason
        ok, reason = set_parameter(client, 'conf_threshold', ParameterValue(
            type=ParameterType.PARAMETER_STRING, string_value='abc'))
        assert not ok and reason == "parameter conf_threshold: 'abc' is a string, expected a double"
        ok, reason = set_parameter(client, 'classes', ParameterValue(  # one id, not an array
            type=ParameterType.PARAMETER_INTEGER, integer_value=0))
        assert ok, reason
        ok, reason = set_parameter(client, 'classes', ParameterValue(
            type=ParameterType.PARAMETER_INTEGER_ARRAY, integer_array_value=[]))
        assert ok, reason
        ok, reason = set_parameter(client, 'classes_by_name', ParameterValue(
            type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=['person']))
        assert ok, reason
        pub.publish(frame(bus_jpg, 'bgr8', 2, 'cam'))
        client.wait(lambda: len(results) > 1, 'the second result')
    assert {n for n, _ in found(results[0])} == {'bus'}
    assert {n for n, _ in found(results[1])} == {'person'}


def test_a_parameter_keeps_its_kind_and_cannot_be_deleted():
    """Issue 18.5: `ros2 param set /detector conf_threshold 1` made it an integer, and after
    `ros2 param delete /detector classes` every later change failed until restart."""
    with running() as (proc, client):
        ok, reason = set_parameter(client, 'conf_threshold', ParameterValue(
            type=ParameterType.PARAMETER_INTEGER, integer_value=1))
        assert ok, reason
        stored = get_parameter(client, 'conf_threshold')
        assert (stored.type, stored.double_value) == (ParameterType.PARAMETER_DOUBLE, 1.0)
        ok, reason = set_parameter(client, 'classes', ParameterValue(
            type=ParameterType.PARAMETER_INTEGER, integer_value=0))
        assert ok, reason
        stored = get_parameter(client, 'classes')
        assert stored.type == ParameterType.PARAMETER_INTEGER_ARRAY
        assert list(stored.integer_array_value) == [0]
        for name in ('classes', 'conf_threshold'):  # what `ros2 param delete` sends
            ok, reason = set_parameter(client, name, ParameterValue(
                type=ParameterType.PARAMETER_NOT_SET))
            assert not ok and reason.startswith(f'parameter {name} cannot be deleted'), reason
        ok, reason = set_parameter(client, 'conf_threshold', double(0.4))
        assert ok, reason
        ok, reason = set_parameter(client, 'classes', ParameterValue(
            type=ParameterType.PARAMETER_INTEGER_ARRAY, integer_array_value=[]))
        assert ok, reason
        assert get_parameter(client, 'conf_threshold').double_value == 0.4
        proc.wait_for_output('thresholds now conf 0.4')


def test_without_pre_set_callbacks_another_kind_is_refused():
    """Humble's rclpy has no pre-set callback to store 1 as 1.0: the change is refused,
    saying how to write it, rather than the parameter turning into an integer."""
    from rclpy.parameter import Parameter

    from yolo_trt_ros.core.serving.config import DETECTOR_PARAMETERS
    from yolo_trt_ros.ros.parameters import kind_refusal

    spec = DETECTOR_PARAMETERS['conf_threshold']
    assert kind_refusal(Parameter('conf_threshold', Parameter.Type.INTEGER, 1), spec) == \
        'parameter conf_threshold is a double: give 1 as one'
    assert kind_refusal(Parameter('conf_threshold', Parameter.Type.DOUBLE, 0.5), spec) is None
    classes = DETECTOR_PARAMETERS['classes']
    assert kind_refusal(Parameter('classes', Parameter.Type.INTEGER_ARRAY, []), classes) is None
    assert 'give 3 as one' in kind_refusal(Parameter('classes', Parameter.Type.INTEGER, 3),
                                           classes)
    with pytest.raises(ValueError, match="'x' is a string"):
        kind_refusal(Parameter('conf_threshold', Parameter.Type.STRING, 'x'), spec)
