"""A progress bar on stderr, drawn only when stderr is a terminal (a log file or a pipe gets
nothing but the final summary the command prints)."""
from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 30
_EVERY_S = 0.1  # redraw at most ten times a second: drawing must not cost frames


class Progress:
    def __init__(self, total: int, what: str = 'frames', stream: TextIO | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.total, self.what, self.done = total, what, 0
        self.enabled = bool(getattr(self.stream, 'isatty', lambda: False)())
        self.start = self._drawn = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._drawn >= _EVERY_S:
            self._drawn = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self.start, 1e-9)
        if self.total > 0:
            part = min(self.done / self.total, 1.0)
            filled = int(part * _WIDTH)
            left = (self.total - self.done) / rate if rate > 0 else 0.0
            line = (f'|{"#" * filled}{"." * (_WIDTH - filled)}| {self.done}/{self.total} '
                    f'{self.what} {part:4.0%} {rate:6.1f}/s {left:5.0f} s left')
        else:  # the bag does not say how many
            line = f'{self.done} {self.what} {rate:6.1f}/s'
        self.stream.write('\r' + line)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write('\n')
            self.stream.flush()
