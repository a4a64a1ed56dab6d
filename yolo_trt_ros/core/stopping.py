"""SIGINT and SIGTERM during long work (an engine build, a bag run): they set an event that
the work checks between its steps, instead of raising in the middle of one. Raised in
the middle, a signal left a TensorRT build half done, and in a bag run it landed inside
rosbags' writer (a message stored but not counted in the bag's metadata) or while the bag
closed (the writer aborted, the output removed). One way for `yolo-trt build`, the
builder node and `yolo-trt bag`."""
from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stopped_by_signal(returncode: int) -> bool:
    """A child's exit status where one of STOP_SIGNALS stopped it: its own handler's
    128 + n (StopSignals.exit_code), or -n where the signal ended it. Not a failure."""
    return any(returncode in (-s, 128 + s) for s in STOP_SIGNALS)


class StopSignals:
    """Within `with StopSignals() as stops:` SIGINT and SIGTERM set `stops.cancel` (the
    work checks it between steps) and are remembered; the previous handlers come back on
    exit. A signal the process was started ignoring (a background job's SIGINT) stays
    ignored, and outside the main thread, where Python cannot set handlers, nothing
    changes."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.caught: list[int] = []
        self._previous: dict[int, object] = {}

    def _on_signal(self, signum, _frame) -> None:
        self.caught.append(signum)
        self.cancel.set()

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
            self._previous = {s: h for s, h in before.items() if h is not signal.SIG_IGN}
            for s in self._previous:
                signal.signal(s, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    @property
    def name(self) -> str:
        """The first signal's name, for the one line that says why the build stopped."""
        return signal.Signals(self.caught[0]).name if self.caught else 'a signal'

    @property
    def said(self) -> str:
        """As a user knows the first signal: Ctrl-C for SIGINT, else its name."""
        return 'Ctrl-C' if self.caught[:1] == [signal.SIGINT] else self.name

    def exit_code(self, otherwise: int) -> int:
        """128 + the first signal's number, as a shell reports it; otherwise without one."""
        return 128 + self.caught[0] if self.caught else otherwise
