"""The engine cache: one engine per key, a JSON sidecar, atomic writes, a build lock.

An engine is only ever loaded when its sidecar exists, parses, repeats the key exactly
and records the engine's size and SHA-256, and when both files belong to this user and
are not writable by others. Anything else is a miss (rebuilt), never a load.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import EngineError
from .files import atomic_write, sha256_file

SIDECAR_VERSION = 1


def default_cache_dir() -> Path:
    """$YOLO_TRT_ROS_CACHE, else the XDG cache dir."""
    env = os.environ.get('YOLO_TRT_ROS_CACHE')
    if env:
        return Path(env)
    xdg = os.environ.get('XDG_CACHE_HOME') or str(Path.home() / '.cache')
    return Path(xdg) / 'yolo_trt_ros' / 'engines'


def key_of(fields: dict) -> str:
    """A short stable hash of everything that makes an engine invalid."""
    canonical = json.dumps(fields, sort_keys=True, separators=(',', ':'))
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def check_trusted(path: Path) -> None:
    """Refuse files another user owns or anyone else may write: TensorRT runs an engine
    as code with our rights."""
    st = path.stat()
    if st.st_uid != os.getuid():
        raise EngineError(f'refusing {path}: owned by uid {st.st_uid}, not by this user')
    if st.st_mode & (stat.S_IWOTH | stat.S_IWGRP):
        raise EngineError(f'refusing {path}: writable by group or others '
                          f'(mode {stat.filemode(st.st_mode)}); chmod go-w it or rebuild')


@dataclass(frozen=True)
class CachedEngine:
    path: Path
    sidecar: dict


class EngineCache:
    def __init__(self, directory: Path | None = None) -> None:
        self.dir = Path(directory) if directory else default_cache_dir()

    def ensure_dir(self) -> None:
        """Create the cache directory private to this user (0700), and check it."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        check_trusted(self.dir)

    def engine_path(self, key: str) -> Path:
        return self.dir / f'{key}.engine'

    def sidecar_path(self, key: str) -> Path:
        return self.dir / f'{key}.json'

    def lookup(self, key: str, fields: dict) -> tuple[CachedEngine | None, str]:
        """The cached engine for key, or (None, why it cannot be used)."""
        engine, sidecar = self.engine_path(key), self.sidecar_path(key)
        if not engine.exists():
            return None, 'no cached engine'
        if not sidecar.exists():
            return None, f'sidecar {sidecar.name} is missing'
        try:
            check_trusted(engine)
            check_trusted(sidecar)
        except EngineError as exc:
            return None, str(exc)
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError) as exc:
            return None, f'sidecar {sidecar.name} is unreadable: {exc}'
        if not isinstance(meta, dict) or meta.get('key') != fields:
            return None, f'sidecar {sidecar.name} does not match the requested build'
        size = engine.stat().st_size
        if size != meta.get('engine_size'):
            return None, (f'engine is {size} bytes, the sidecar says '
                          f'{meta.get("engine_size")} (truncated?)')
        if sha256_file(engine) != meta.get('engine_sha256'):
            return None, 'engine content does not match the sidecar hash (corrupt)'
        return CachedEngine(engine, meta), 'cache hit'

    def store(self, key: str, plan: bytes, sidecar: dict) -> Path:
        """Write engine then sidecar, each through a temporary file and os.replace. The
        sidecar (which makes the engine loadable) lands last, so a crash in between leaves
        an engine that lookup() refuses."""
        self.ensure_dir()
        engine = self.engine_path(key)
        meta = dict(sidecar, engine_size=len(plan),
                    engine_sha256=hashlib.sha256(plan).hexdigest(),
                    sidecar_version=SIDECAR_VERSION)
        self.sidecar_path(key).unlink(missing_ok=True)
        atomic_write(engine, plan, 0o600)
        atomic_write(self.sidecar_path(key), json.dumps(meta, indent=2).encode(), 0o600)
        return engine

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Exclusive per-key lock: a second builder waits here, then finds the engine."""
        self.ensure_dir()
        fd = os.open(self.dir / f'{key}.lock', os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
