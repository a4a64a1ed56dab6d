"""Helpers for tests that run real rclpy nodes: a context per test, waits with deadlines."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node


@contextmanager
def ros_context() -> Iterator[Context]:
    """A fresh rclpy context (own init/shutdown), so tests never share graph state."""
    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.shutdown(context=context)


def spin_until(executor: SingleThreadedExecutor, condition: Callable[[], bool],
               timeout: float = 20.0, what: str = 'condition') -> None:
    """Spin until condition() is true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout:.0f} s waiting for {what}')
        executor.spin_once(timeout_sec=0.05)


def make_node(context: Context, name: str, executor: SingleThreadedExecutor) -> Node:
    node = Node(name, context=context)
    executor.add_node(node)
    return node
