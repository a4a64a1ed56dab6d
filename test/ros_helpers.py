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


class NodeProcess:
    """A node started as its own process (`python -m module --ros-args ...`), always
    reaped: stop() sends SIGINT, then kills after a deadline."""

    def __init__(self, module: str, params: dict[str, object] | None = None,
                 remaps: dict[str, str] | None = None, ros_args: list[str] | None = None,
                 env: dict[str, str] | None = None, command: list[str] | None = None):
        import subprocess
        import sys
        import tempfile

        from yolo_trt_ros.launcher import param_args
        # command: how to start it instead of `python -m module` (an installed executable)
        args = [*(command or [sys.executable, '-m', module]), '--ros-args',
                *param_args(params or {})]
        for src, dst in (remaps or {}).items():
            args += ['-r', f'{src}:={dst}']
        args += ros_args or []
        self.log_file = tempfile.NamedTemporaryFile('w+', suffix='.log', delete=False)
        self.proc = subprocess.Popen(args, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     text=True, env=env)

    def output(self) -> str:
        with open(self.log_file.name) as f:
            return f.read()

    def wait_for_output(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None:
                raise AssertionError(f'process exited ({self.proc.returncode}) before '
                                     f'printing {text!r}:\n{self.output()}')
            if time.monotonic() > deadline:
                raise AssertionError(f'no {text!r} within {timeout:.0f} s:\n{self.output()}')
            time.sleep(0.05)  # polling a log file: there is nothing to block on

    def rss_kib(self) -> int:
        with open(f'/proc/{self.proc.pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
        raise AssertionError('no VmRSS')

    def stop(self, timeout: float = 10.0) -> int:
        import signal
        import subprocess
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

