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
        self._by_level = ((logging.ERROR, ros_logger.error), (logging.WARNING, ros_logger.warning),
                          (logging.INFO, ros_logger.info), (logging.NOTSET, ros_logger.debug))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        for level, log in self._by_level:
            if record.levelno >= level:
                log(text)
                return


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
