"""SIGINT and SIGTERM during an engine build: they set an event that the build checks at
TensorRT's next progress step (it stops within a second or two and writes nothing), instead
of interrupting TensorRT in the middle. One way for `yolo-trt build` and the builder node."""
from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Within `with StopSignals() as stops:` SIGINT and SIGTERM set `stops.cancel` (hand it
    to build_engine) and are remembered; the previous handlers come back on exit."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.caught: list[int] = []

    def _on_signal(self, signum, _frame) -> None:
        self.caught.append(signum)
        self.cancel.set()

    def __enter__(self) -> StopSignals:
        self._previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    @property
    def name(self) -> str:
        """The first signal's name, for the one line that says why the build stopped."""
        return signal.Signals(self.caught[0]).name if self.caught else 'a signal'

    def exit_code(self, otherwise: int) -> int:
        """128 + the first signal's number, as a shell reports it; otherwise without one."""
        return 128 + self.caught[0] if self.caught else otherwise
