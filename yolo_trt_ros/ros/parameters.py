"""Declaring the core's parameter tables (core/serving/params.py) on an rclpy node.

Only the ROS part lives here: descriptors, rclpy's types, reading values back. What a
value must be, and the one-line error when it is not, is the core's.
"""
from __future__ import annotations

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from yolo_trt_ros.core.serving.params import Param, Table, checked_value, unknown_names

# Announcements a late subscriber must still get (engine, label_info).
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _ros_type(spec: Param) -> Parameter.Type:
    return Parameter.Type[spec.kind.upper().replace(' ', '_')]


def declare(node: Node, table: Table) -> dict[str, object]:
    """Declare every parameter of table with its descriptor; return the values given.

    Parameters changeable at run time are declared dynamically typed and checked by the
    core at start-up and on every change, so that a wrong type gets the core's one-line
    message there too; the others are read-only and typed by rclpy, whose type error is
    turned into the same message. Without a default (an unset array), the parameter has no
    value until given one.
    """
    for name, spec in table.items():
        default = _ros_type(spec) if spec.default is None else spec.default
        if spec.runtime:
            node.declare_parameter(name, spec.default, ParameterDescriptor(
                description=spec.description, dynamic_typing=True))
            continue
        try:
            node.declare_parameter(name, default, ParameterDescriptor(
                description=spec.description, read_only=True))
        except InvalidParameterTypeException:
            checked_value(name, node._parameter_overrides[name].value, spec)  # raises
            raise  # not reached: the override had the wrong type
    return {name: value_of(node, name) for name in table}


def value_of(node: Node, name: str) -> object:
    """The parameter's value; None for a parameter that was never given one."""
    try:
        return node.get_parameter(name).value
    except ParameterUninitializedException:
        return None


def unknown_overrides(node: Node, others: set[str]) -> list[str]:
    """Parameters given to node that it does not declare (see unknown_names)."""
    return unknown_names(node._parameter_overrides, node._parameters, others)
