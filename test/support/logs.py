"""What the core logs (the `yolo_trt_ros` logger, its one channel), caught for a test."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


class _Lines(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def core_log(lines: list[str] | None = None) -> Iterator[list[str]]:
    """The messages the core logs while the block runs, in order (INFO and up)."""
    lines = [] if lines is None else lines
    logger = logging.getLogger('yolo_trt_ros')
    handler, level = _Lines(lines), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
