"""How a long-running node of this package runs: exit 0 on SIGINT/SIGTERM (any number of
them), 2 on a bad parameter, 1 when it cannot start (a model or engine that cannot be
opened), each with one line on the log."""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from yolo_trt_ros.core.errors import YoloTrtError

_STARTED_BY = os.getppid()  # read at import: die_with_parent checks it did not change since
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def ros_log_dir() -> str | None:
    """rcl writes its log under $ROS_LOG_DIR, else $ROS_HOME/log, else ~/.ros/log, and
    rclpy.init fails when it cannot (HOME unset, as under some service managers, or HOME
    pointing at a file). Where it cannot, log to a directory of this user's in the temp
    directory instead: returns why, for a line once the node runs, or None."""
    if os.environ.get('ROS_LOG_DIR'):
        return None
    home = os.environ.get('ROS_HOME') or (os.path.join(os.environ['HOME'], '.ros')
                                          if os.environ.get('HOME') else None)
    if home is not None:
        try:
            os.makedirs(os.path.join(home, 'log'), exist_ok=True)
            return None
        except OSError as exc:
            why = f'cannot create {home}/log ({exc.strerror})'
    else:
        why = 'neither HOME nor ROS_HOME nor ROS_LOG_DIR is set'
    fallback = os.path.join(tempfile.gettempdir(), f'ros_log-{os.getuid()}')
    os.environ['ROS_LOG_DIR'] = fallback
    return f'{why}: logging to {fallback} (set ROS_LOG_DIR to choose)'


def die_with_parent() -> None:
    """SIGTERM to this node when the process that started it dies.

    `ros2 launch` killed by SIGKILL, or dying of SIGTERM (what `docker stop` and systemd
    send) before it signals its children, left the nodes running re-parented to PID 1,
    holding the GPU and the topics. Linux's parent-death signal ends them the normal way (the
    signal handler in run). Elsewhere, or where prctl is missing, nothing changes.
    """
    if not sys.platform.startswith('linux'):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    if os.getppid() != _STARTED_BY:  # the parent died before prctl: no signal will come
        os.kill(os.getpid(), signal.SIGTERM)


def init(args=None, **options) -> None:
    """rclpy.init, with a log directory that works (ros_log_dir); the node dies with the
    process that started it (die_with_parent)."""
    die_with_parent()
    why = ros_log_dir()
    rclpy.init(args=args, **options)
    if why:
        rclpy.logging.get_logger('yolo_trt_ros').warning(why)


def run(make_node: Callable[[], Node], name: str, args=None) -> None:
    """Start make_node() and spin it until a signal; node.close() (if it has one) runs
    before the node is destroyed, so nothing publishes into a context that is gone."""
    init(args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def on_signal(*_) -> None:
        # The first signal asks to stop; later ones (a terminal and launch both signal the
        # process group) are ignored, also while the interpreter finalizes, when Python
        # would otherwise die of them (exit -2 instead of 0).
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    logger = rclpy.logging.get_logger(name)
    try:
        node = make_node()
    except ValueError as exc:
        logger.error(f'bad parameter: {exc}')
        rclpy.try_shutdown()
        sys.exit(2)
    except YoloTrtError as exc:
        logger.error(f'cannot start: {exc}')
        rclpy.try_shutdown()
        sys.exit(1)
    try:  # a lifecycle node with autostart configures and activates itself here
        getattr(node, 'start', lambda: None)()
    except (ValueError, YoloTrtError) as exc:  # the node has logged why
        node.destroy_node()
        rclpy.try_shutdown()
        sys.exit(2 if isinstance(exc, ValueError) else 1)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    finally:
        close = getattr(node, 'close', None)
        if close is not None:
            close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
