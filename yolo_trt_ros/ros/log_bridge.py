"""The core logs through Python `logging` (the `yolo_trt_ros` logger); a node routes those
records to its rclpy logger, so TensorRT's, NVRTC's and nvImageCodec's warnings reach
rosout with the node's name, like everything else the node says."""
from __future__ import annotations

import logging

PACKAGE_LOGGER = 'yolo_trt_ros'


class RosLogHandler(logging.Handler):
    """Each record to the rclpy logger at the matching severity (rcutils filters)."""

    def __init__(self, ros_logger) -> None:
        super().__init__(logging.DEBUG)
        self._ros = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        # One call site per severity: rclpy keeps a context per call site and raises
        # ValueError when a site logs at a second severity. Nothing raises into the caller:
        # a failure is logging's handleError (one report on stderr), as for any handler.
        try:
            text, level = self.format(record), record.levelno
            if level >= logging.ERROR:
                self._ros.error(text)
            elif level >= logging.WARNING:
                self._ros.warning(text)
            elif level >= logging.INFO:
                self._ros.info(text)
            else:
                self._ros.debug(text)
        except Exception:
            self.handleError(record)


def route_to(ros_logger) -> RosLogHandler:
    """Send the core's log records to ros_logger (instead of Python's last-resort stderr)."""
    handler = RosLogHandler(ros_logger)
    core = logging.getLogger(PACKAGE_LOGGER)
    core.addHandler(handler)
    core.setLevel(logging.DEBUG)  # the rclpy logger's own level decides what is shown
    core.propagate = False
    return handler


def unroute(handler: RosLogHandler) -> None:
    logging.getLogger(PACKAGE_LOGGER).removeHandler(handler)
