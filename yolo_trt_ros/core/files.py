"""File helpers: reading a file a user names (images, models, labels) without hanging on a
FIFO or reading /dev/zero forever, and writing atomically."""
from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

from yolo_trt_ros.core.errors import YoloTrtError

# Largest files read whole: an ONNX protobuf cannot exceed 2 GB; an image file of the
# largest frame (64 MP, 16-bit RGBA, uncompressed) is 512 MB; a labels file is text.
MODEL_FILE_LIMIT = 2 << 30
IMAGE_FILE_LIMIT = 512 << 20
TEXT_FILE_LIMIT = 1 << 20


class FileError(YoloTrtError):
    """A file a user named cannot be read: missing, not a regular file, too large."""


def read_regular(path: str | Path, limit: int, what: str = 'file') -> bytes:
    """The bytes of a regular file of at most limit bytes; FileError naming the path and
    the cause otherwise, at once: a FIFO is opened without blocking and refused, a device
    (/dev/zero) refused before it is read, the size checked before reading."""
    path = Path(os.fsdecode(path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise FileError(f'cannot read {what} {path}: {exc.strerror}') from None
    try:  # judged before a file object is made: os.fdopen refuses a directory itself
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise FileError(f'{what} {path} is a directory, not a file')
        if not stat.S_ISREG(st.st_mode):
            raise FileError(f'{what} {path} is not a regular file (a pipe or a device)')
        if st.st_size > limit:
            raise FileError(f'{what} {path} is {st.st_size} bytes, more than the {limit} '
                            f'a {what} may have')
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, 'rb') as f:
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise FileError(f'cannot read {what} {path}: {exc.strerror}') from None
    if len(data) > limit:  # it grew while we read
        raise FileError(f'{what} {path} is larger than the {limit} bytes a {what} may have')
    return data


def regular_file_problem(path: Path) -> str | None:
    """Why path is not a regular file one could read (None if it is), without opening it."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return 'does not exist' if isinstance(exc, FileNotFoundError) else exc.strerror
    if stat.S_ISDIR(st.st_mode):
        return 'is a directory, not a file'
    if not stat.S_ISREG(st.st_mode):
        return 'is not a regular file (a pipe or a device)'
    return None


def folder_write_problem(folder: Path) -> str | None:
    """Why no file can be made in folder (read-only, /proc, missing), or None: tried with
    a temporary file, which leaves nothing behind, so that an output is refused before
    the work rather than after it."""
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write through a temporary file in the same directory, fsync, then os.replace: a
    reader sees the old file or the whole new one, never a part."""
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def config_file(name: str) -> Path:
    """A file of the package's config/: from the ament index where installed with colcon,
    else from the source tree (the pip route installs this package editable)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        try:
            return Path(get_package_share_directory('yolo_trt_ros')) / 'config' / name
        except (PackageNotFoundError, OSError):  # OSError: no AMENT_PREFIX_PATH at all
            pass
    except ImportError:
        pass
    return Path(__file__).resolve().parents[2] / 'config' / name
