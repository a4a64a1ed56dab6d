"""How a bag run stops. Ctrl-C (SIGINT) and SIGTERM (`timeout`, `docker stop`, systemd)
end the run where it is and the bag is closed whole, holding what was done: SIGTERM's
default action killed the process mid-write and left a bag without its metadata, which no
reader opens. While the bag closes (rosbags writes its index and metadata.yaml) further
signals are ignored: raised there, one aborted the writer and the output was removed,
what was done included. A run that ends while asked to stop is reported as it ended.

Handlers can only be set in the main thread; elsewhere (a caller's worker thread) the
signals keep the handlers they have."""
from __future__ import annotations

import signal
import threading
from types import TracebackType

NAMES = {signal.SIGINT: 'Ctrl-C', signal.SIGTERM: 'SIGTERM'}


class Stop(KeyboardInterrupt):
    """Raised where the run is when one of NAMES arrives; signum says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(NAMES[signum])
        self.signum = signum


class StopSignals:
    """`with StopSignals() as signals:` the first SIGINT or SIGTERM raises Stop; after it,
    or after signals.hold(), they are ignored; on exit the handlers that were there come
    back."""

    def __init__(self) -> None:
        self._before: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._before = {s: signal.getsignal(s) for s in NAMES}
            self._set(self._raise)
        return self

    def hold(self) -> None:
        self._set(signal.SIG_IGN)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for signum, handler in self._before.items():
            signal.signal(signum, handler)

    @staticmethod
    def stopped_by(exc: KeyboardInterrupt) -> int:
        """The signal behind an interrupt: a Stop's, else SIGINT (Python's own handler)."""
        return exc.signum if isinstance(exc, Stop) else signal.SIGINT

    def _set(self, handler) -> None:
        for signum in self._before:
            signal.signal(signum, handler)

    def _raise(self, signum: int, frame) -> None:
        self.hold()  # one stop is enough: a signal before the run reaches hold() waits too
        raise Stop(signum)
