"""One trust policy for every file we load as code or as a compiled artefact.

TensorRT runs an engine with our rights, the CUDA driver loads a cubin, and an fp16 ONNX
or a calibration table decides what the engine computes: each of them is only read from
a directory private to this user, through no symlink, from a file this user owns and
nobody else may write. The engine cache, the kernel cache, the fp16 ONNX cache, the
calibration and timing caches and an explicitly named engine all go through here, so
lookup applies exactly the rules that writing guarantees.
"""
from __future__ import annotations

import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from yolo_trt_ros.core.errors import EngineError
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


def _check(path: Path, what: str, is_kind) -> os.stat_result:
    """lstat path: it exists, is no symlink, is of the kind wanted, ours, not writable by
    others."""
    try:
        st = os.lstat(path)
    except FileNotFoundError as exc:
        raise UntrustedFile(f'{what} {path} does not exist') from exc
    if stat.S_ISLNK(st.st_mode):
        raise UntrustedFile(f'refusing {what} {path}: it is a symlink')
    if not is_kind(st.st_mode):
        raise UntrustedFile(f'refusing {path}: not a {what}')
    _check_owner_and_mode(path, st, what)
    return st


def check_dir(path: Path) -> None:
    """The directory is ours, not a symlink, and only we may write into it."""
    _check(path, 'directory', stat.S_ISDIR)


def check_file(path: Path) -> os.stat_result:
    """The file is a regular file (no symlink), ours, writable only by us, in a directory
    that passes check_dir. Returns its stat."""
    check_dir(path.parent)
    return _check(path, 'regular file', stat.S_ISREG)


def read_trusted(path: Path) -> bytes:
    """The bytes of a file that passes the policy, checked on the open descriptor too
    (O_NOFOLLOW, fstat), so a swap between check and read is caught."""
    path = Path(path)
    check_file(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise UntrustedFile(f'cannot open {path}: {exc.strerror}') from exc
    with os.fdopen(fd, 'rb') as f:
        _check_owner_and_mode(path, os.fstat(fd), 'file')
        return f.read()


class TrustedDir:
    """A cache directory under the policy: created 0700, checked before every use."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)

    def ensure(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
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
        """Atomic, private (0600) write into the checked directory."""
        self.ensure()
        path = self.dir / name
        atomic_write(path, data, 0o600)
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
    def lock(self, name: str) -> Iterator[None]:
        """Exclusive lock on `name.lock`: a second writer waits, then finds the result."""
        self.ensure()
        fd = os.open(self.dir / f'{name}.lock', os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
