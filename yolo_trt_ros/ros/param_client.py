"""`yolo-trt param list|get|set`: a running node's parameters through its parameter
services, for the pip route, which has no `ros2 param`.

Values are written as for `ros2 param set` (YAML: 0.5, true, [0, 2], text); the node checks
them and its reason for a refusal is printed as it gave it.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable

import rclpy
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import GetParameters, ListParameters, SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import get_parameter_value, parameter_value_to_python

from yolo_trt_ros.core.serving.config import namespace_error
from yolo_trt_ros.ros.runner import init

NOT_SET = 0  # rcl_interfaces/ParameterType PARAMETER_NOT_SET
RESEND_S = 2.0  # a request without a reply is sent again after this long


class NoAnswer(Exception):
    """The node did not answer in time (absent, or on another ROS_DOMAIN_ID)."""


def _full_name(node: str) -> str:
    return node if node.startswith('/') else f'/{node}'


def call(node: str, srv_type, suffix: str, request, timeout: float):
    """node's reply on its service `<node>/<suffix>`; NoAnswer after timeout seconds.

    The request is sent again every RESEND_S without a reply: Fast DDS drops a response when
    the server has not matched the client's response reader within 100 ms (rmw_fastrtps
    #390), and this client is a new participant every time. Every request made here (list,
    get, set to a given value) leaves the same values done twice as once; a node that was
    only slow gets each copy, so its parameter callback may run more than once."""
    deadline = time.monotonic() + timeout
    init(args=[])
    helper = rclpy.create_node('yolo_trt_param')
    executor = SingleThreadedExecutor()
    executor.add_node(helper)
    try:
        client = helper.create_client(srv_type, f'{_full_name(node)}/{suffix}')
        if not client.wait_for_service(timeout_sec=timeout):
            raise NoAnswer(f'no node {_full_name(node)} answered within {timeout:g} s (is it '
                           f'running, on this ROS_DOMAIN_ID?)')
        while True:
            future = client.call_async(request)
            left = deadline - time.monotonic()
            executor.spin_until_future_complete(future, timeout_sec=max(0.0, min(RESEND_S, left)))
            if future.done():
                return future.result()
            client.remove_pending_request(future)
            if left <= RESEND_S:
                raise NoAnswer(f'{_full_name(node)} did not answer {suffix} within '
                               f'{timeout:g} s')
    finally:
        executor.shutdown()
        helper.destroy_node()
        rclpy.try_shutdown()


def list_names(node: str, timeout: float) -> list[str]:
    return sorted(call(node, ListParameters, 'list_parameters', ListParameters.Request(),
                       timeout).result.names)


def get(node: str, name: str, timeout: float) -> object:
    """The value, as Python; KeyError when the node has no such parameter."""
    values = call(node, GetParameters, 'get_parameters', GetParameters.Request(names=[name]),
                  timeout).values
    if not values or values[0].type == NOT_SET:  # rclpy answers no value for an unknown name
        raise KeyError(name)
    return parameter_value_to_python(values[0])


class BadValue(ValueError):
    """A value that no parameter can hold (a mapping, an integer beyond 64 bits)."""


def set_request(name: str, text: str):
    """The SetParameters request for name := text (YAML, as `ros2 param set`), serialized
    once here so that a value the message cannot hold is refused before any call (rclpy
    raised a TypeError or a SystemError from inside the publish)."""
    from rclpy.serialization import serialize_message

    try:
        request = SetParameters.Request(parameters=[ParameterMsg(
            name=name, value=get_parameter_value(text))])
        serialize_message(request)
    except Exception as exc:  # rclpy's and the bindings' errors vary: one line here
        raise BadValue(f"'{text}' is not a parameter value (a number within 64 bits, true "
                       'or false, text, or a list of one kind of those)') from exc
    return request


def set_value(node: str, name: str, text: str, timeout: float) -> tuple[bool, str]:
    """(successful, the node's reason) for name := text (YAML, as `ros2 param set`)."""
    request = set_request(name, text)
    (result,) = call(node, SetParameters, 'set_parameters', request, timeout).results
    return result.successful, result.reason


def _shown(value: object) -> str:
    if isinstance(value, (list, tuple)) or type(value).__name__ == 'array':
        return '[' + ', '.join(map(str, value)) + ']'
    return str(value).lower() if isinstance(value, bool) else str(value)


def run(action: str, node: str, name: str | None, value: str | None, timeout: float,
        out: Callable[[str], None] = print) -> int:
    """0 done, 1 the node refused or has no such parameter, 2 no answer or bad input."""
    why = namespace_error(_full_name(node)) if node else 'it is empty'
    if why:
        print(f"yolo-trt param: '{node}' is not a node name ({why})", file=sys.stderr)
        return 2
    try:
        if action == 'list':
            for n in list_names(node, timeout):
                out(n)
        elif action == 'get':
            out(_shown(get(node, name, timeout)))
        else:
            ok, reason = set_value(node, name, value, timeout)
            if not ok:
                print(f'yolo-trt param: {_full_name(node)} refused {name}: {reason}',
                      file=sys.stderr)
                return 1
        return 0
    except KeyError:
        print(f'yolo-trt param: {_full_name(node)} has no parameter {name}', file=sys.stderr)
        return 1
    except (NoAnswer, BadValue) as exc:
        print(f'yolo-trt param: {exc}', file=sys.stderr)
        return 2
