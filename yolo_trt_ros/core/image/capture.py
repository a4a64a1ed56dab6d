"""Catch what the C image decoders print, so that it reaches the caller, not the terminal.

libjpeg and libpng (inside OpenCV) write their warnings and errors, such as 'Corrupt JPEG
data: 34 extraneous bytes before marker 0xd9', straight to file descriptor 2 with
fprintf: no Python logger, no OpenCV log level and no rate limit sees them. While a decode
runs, fd 2 therefore points at a private temporary file; afterwards the decoder's lines go
back to the caller, which turns them into an ImageError (counted and rate-limited like
any bad frame). A line that is not a decoder's (another thread wrote to stderr during the
decode) is passed on to the real stderr, late but not lost.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

# What libjpeg(-turbo) warns during a decode (its warning table), libpng's two prefixes,
# and OpenCV's own log lines.
_DECODER_LINE = re.compile(
    r'(Corrupt JPEG data|Premature end of JPEG file|Warning: unknown JFIF revision'
    r'|Invalid SOS parameters|Inconsistent progression sequence|Unknown Adobe color transform'
    r'|Application transferred too many scanlines|libpng (warning|error)'
    r'|\[ ?(WARN|ERROR|INFO|DEBUG):)')
_MAX_MESSAGES = 100  # decoder lines kept per decode (a corrupt image can print thousands)
_CHUNK = 1 << 16

_lock = threading.Lock()  # fd 2 is one per process: one capture at a time
_sink: tuple[int, IO[bytes]] | None = None  # (pid, file): a fork needs its own file


def _sink_file() -> IO[bytes]:
    global _sink
    if _sink is None or _sink[0] != os.getpid():
        _sink = (os.getpid(), tempfile.TemporaryFile())
    return _sink[1]


def _flush_python_stderr() -> None:
    # Text Python buffered for stderr must reach the real stderr before fd 2 moves.
    stream = sys.stderr
    if stream is not None:
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stderr: nothing to keep


@contextmanager
def decoder_messages() -> Iterator[list[str]]:
    """Run the body with fd 2 captured; the list it yields holds, after the block, the
    decoder lines printed meanwhile (stripped, in order). Thread-safe; not reentrant."""
    messages: list[str] = []
    with _lock:
        sink = _sink_file()
        fd = sink.fileno()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        _flush_python_stderr()
        try:
            saved: int | None = os.dup(2)
        except OSError:
            saved = None  # no stderr at all (a daemon): capture all the same, close after
        os.dup2(fd, 2)
        try:
            yield messages
        finally:
            if saved is None:
                os.close(2)
            else:
                os.dup2(saved, 2)
                os.close(saved)
            _sort_out(fd, messages)


def _lines(fd: int) -> Iterator[bytes]:
    """The lines of the capture file, read a chunk at a time (all of them: other threads'
    lines may follow megabytes of a decoder's)."""
    rest, offset = b'', 0
    while chunk := os.pread(fd, _CHUNK, offset):
        offset += len(chunk)
        *whole, rest = (rest + chunk).split(b'\n')
        yield from (line + b'\n' for line in whole)
    if rest:
        yield rest


def _sort_out(fd: int, messages: list[str]) -> None:
    """Decoder lines into messages (at most _MAX_MESSAGES); every other line on to the
    real stderr, late but whole."""
    others: list[bytes] = []
    for line in _lines(fd):
        text = line.decode('utf-8', 'replace').strip()
        if _DECODER_LINE.match(text):
            if len(messages) < _MAX_MESSAGES:
                messages.append(text)
        elif text:
            others.append(line)
            if len(others) >= 256:
                _forward(others)
    _forward(others)


def _forward(lines: list[bytes]) -> None:
    if lines:
        data = b''.join(lines)
        lines.clear()
        try:
            while data:
                data = data[os.write(2, data):]
        except OSError:
            pass  # stderr closed or gone: nowhere to put them


@contextmanager
def library_output() -> Iterator[list[str]]:
    """Capture what a native library prints on fd 1 and 2 while the body runs (its import,
    say); the lines are in the yielded list afterwards, for the caller to log or drop.
    stdout must stay clean: `yolo-trt detect --json` writes its document there."""
    lines: list[str] = []
    with _lock, tempfile.TemporaryFile() as sink:
        _flush_python_stderr()
        if sys.stdout is not None:
            sys.stdout.flush()
        saved = []
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
            except OSError:
                continue  # closed: nothing to restore
            os.dup2(sink.fileno(), fd)
        try:
            yield lines
        finally:
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            text = sink.read(_MAX_MESSAGES * 1024).decode('utf-8', 'replace')
            lines.extend(line.strip() for line in text.splitlines() if line.strip())
