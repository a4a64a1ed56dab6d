"""How a long-running node of this package runs: exit 0 on SIGINT/SIGTERM (any number of
them), 2 on a bad parameter, 1 when it cannot start (a model or engine that cannot be
opened), each with one line on the log."""
from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from yolo_trt_ros.core.errors import YoloTrtError


def run(make_node: Callable[[], Node], name: str, args=None) -> None:
    """Start make_node() and spin it until a signal; node.close() (if it has one) runs
    before the node is destroyed, so nothing publishes into a context that is gone."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
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
