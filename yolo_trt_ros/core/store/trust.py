"""One trust policy for every file we load as code or as a compiled artefact.

TensorRT runs an engine with our rights, the CUDA driver loads a cubin, and an fp16 ONNX
or a calibration table decides what the engine computes: each of them is only read from
a directory private to this user, through no symlink, from a file this user owns and
nobody else may write. The engine cache, the kernel cache, the fp16 ONNX cache, the
calibration and timing caches and an explicitly named engine all go through here, so
lookup applies exactly the rules that writing guarantees.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from yolo_trt_ros.core.errors import Cancelled, EngineError
from yolo_trt_ros.core.files import atomic_write

# A temporary file untouched this long belongs to a writer that died: atomic_write writes
# and renames in one go, so a live one is seconds old even for a large engine.
STALE_TMP_S = 15 * 60.0


class UntrustedFile(EngineError):
    """A file or directory fails the trust policy; the message says why and how to fix."""


def _check_owner_and_mode(path: Path, st: os.stat_result, what: str) -> None:
    if st.st_uid != os.getuid():
        raise UntrustedFile(f'refusing {what} {path}: owned by uid {st.st_uid}, not by this '
                            f'user (uid {os.getuid()})')
    if st.st_mode & (stat.S_IWOTH | stat.S_IWGRP):
        raise UntrustedFile(f'refusing {what} {path}: writable by group or others (mode '
                            f'{stat.filemode(st.st_mode)}); chmod go-w it, or rebuild')


def _check_kind(path: Path, st: os.stat_result, what: str, is_kind) -> None:
    if not is_kind(st.st_mode):
        raise UntrustedFile(f'refusing {path}: not a {what}')
    _check_owner_and_mode(path, st, what)


def _open_checked(path: Path, what: str, is_kind, flags: int, dir_fd: int | None = None) -> int:
    """Open path without following a symlink and check the object opened (fstat): what is
    checked is what is used, so a swap between a check and a use cannot fool it."""
    try:
        fd = os.open(path.name if dir_fd is not None else path,
                     flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError as exc:
        raise UntrustedFile(f'{what} {path} does not exist') from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UntrustedFile(f'refusing {what} {path}: it is a symlink') from exc
        if exc.errno == errno.ENOTDIR:
            raise UntrustedFile(f'refusing {path}: not a {what}') from exc
        raise UntrustedFile(f'cannot open {what} {path}: {exc.strerror}') from exc
    try:
        _check_kind(path, os.fstat(fd), what, is_kind)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_dir(path: Path) -> int:
    """A descriptor of the directory, once it passed the policy (ours, no symlink, only we
    may write into it); files are then opened relative to it."""
    return _open_checked(Path(path), 'directory', stat.S_ISDIR, os.O_RDONLY | os.O_DIRECTORY)


def check_dir(path: Path) -> None:
    """The directory is ours, not a symlink, and only we may write into it."""
    os.close(open_dir(path))


def read_trusted(path: Path) -> bytes:
    """The bytes of a file that passes the policy, in a directory that passes it: both are
    opened once, without following symlinks, and checked on their descriptors; the file is
    opened relative to the directory's descriptor (openat), so neither can be swapped for a
    symlink or another object between the check and the read."""
    path = Path(path)
    dfd = open_dir(path.parent)
    try:
        fd = _open_checked(path, 'regular file', stat.S_ISREG, os.O_RDONLY, dir_fd=dfd)
    finally:
        os.close(dfd)
    with os.fdopen(fd, 'rb') as f:
        return f.read()


def _cause(exc: OSError) -> str:
    """The words for a filesystem error, the usual suspects named."""
    hints = {errno.EROFS: 'read-only filesystem', errno.ENOSPC: 'no space left on the device',
             errno.EFBIG: 'file too large (a file size limit, ulimit -f?)',
             errno.ENOTDIR: 'a file stands where a directory should be',
             errno.EEXIST: 'a file stands where the directory should be'}
    return hints.get(exc.errno, exc.strerror or str(exc))


class TrustedDir:
    """A cache directory under the policy: created 0700, checked before every use."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)

    def ensure(self) -> None:
        """Create the directory (0700) if needed, and check it. EngineError naming the
        directory and the cause where the filesystem does not let us (a file where a
        directory should be, read-only, full)."""
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise EngineError(f'cannot create the directory {self.dir}: {_cause(exc)}') from None
        check_dir(self.dir)

    def read(self, name: str) -> tuple[bytes | None, str]:
        """(contents, 'hit') or (None, why not): a missing or untrusted entry is a miss."""
        path = self.dir / name
        if not os.path.lexists(path):
            return None, f'{name} is not cached'
        try:
            return read_trusted(path), 'hit'
        except UntrustedFile as exc:
            return None, str(exc)

    def write(self, name: str, data: bytes) -> Path:
        """Atomic, private (0600) write into the checked directory; EngineError naming the
        file and the cause when it fails, and nothing half-written left behind."""
        self.ensure()
        path = self.dir / name
        try:
            atomic_write(path, data, 0o600)
        except OSError as exc:
            raise EngineError(f'cannot write {path}: {_cause(exc)}') from None
        return path

    def remove_stale_temporaries(self, older_than_s: float = STALE_TMP_S) -> list[Path]:
        """Delete temporaries of writers that died (atomic_write's `.NAME.PID.tmp`), under
        the directory's lock. Age decides, not the PID: a live writer in another PID
        namespace (a container sharing the cache) has a PID we cannot see. A writer may
        finish (and its temporary vanish) while we look: that is not an error."""
        removed = []
        now = time.time()
        for tmp in self.dir.glob('.*.tmp'):
            try:
                if now - tmp.lstat().st_mtime < older_than_s:
                    continue
                tmp.unlink()
            except FileNotFoundError:
                continue
            removed.append(tmp)
        return removed

    @contextmanager
    def lock(self, name: str, cancel: threading.Event | None = None) -> Iterator[None]:
        """Exclusive lock on `name.lock`: a second writer waits, then finds the result.
        Setting cancel ends the wait (Cancelled)."""
        self.ensure()
        try:
            fd = os.open(self.dir / f'{name}.lock', os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW,
                         0o600)
        except OSError as exc:
            raise EngineError(f'cannot lock {self.dir / name}: {_cause(exc)}') from None
        try:
            while True:  # a blocking flock would not see cancel
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if cancel is not None and cancel.wait(0.1):
                        raise Cancelled('stopped while waiting for another build') from None
                    if cancel is None:
                        time.sleep(0.1)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
