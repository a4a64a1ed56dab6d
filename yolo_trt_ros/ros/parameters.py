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

from yolo_trt_ros.core.serving.params import (
    Param,
    Table,
    checked_value,
    kind_of,
    unknown_names,
    words,
)

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


def keep_kinds(node: Node, table: Table) -> None:
    """A parameter changeable at run time keeps the kind it was declared with.

    Those parameters are dynamically typed (see declare), so rclpy alone would let
    `ros2 param set /detector conf_threshold 1` make conf_threshold an integer. Where rclpy
    has pre-set callbacks (Iron and later), a value the core accepts is stored as the
    declared kind (1 -> 1.0, 5 -> [5]); kind_refusal refuses the rest (and, on Humble,
    every other kind).
    """
    if hasattr(node, 'add_pre_set_parameters_callback'):
        node.add_pre_set_parameters_callback(
            lambda params: [_as_declared(p, table.get(p.name)) for p in params])


def _as_declared(p: Parameter, spec: Param | None) -> Parameter:
    if spec is None or p.type_ == Parameter.Type.NOT_SET:
        return p
    try:
        value = checked_value(p.name, p.value, spec)
    except ValueError:
        return p  # kind_refusal gives the core's one line
    return Parameter(p.name, _ros_type(spec), value)


def kind_refusal(p: Parameter, spec: Param) -> str | None:
    """Why p cannot be set, as far as its kind goes; None when it can.

    Deleting (`ros2 param delete`, a NOT_SET value) would undeclare a dynamically typed
    parameter, after which every later change fails until restart: refused.
    """
    if p.type_ == Parameter.Type.NOT_SET:
        return (f'parameter {p.name} cannot be deleted: set it to a value instead'
                + (' ([] for none)' if spec.element else ''))
    checked_value(p.name, p.value, spec)  # raises the core's ValueError
    if p.value is not None and not (spec.element and not p.value) \
            and kind_of(p.value) != spec.kind:  # Humble: no pre-set callback converted it
        return f'parameter {p.name} is {words(spec.kind)}: give {p.value!r} as one'
    return None
