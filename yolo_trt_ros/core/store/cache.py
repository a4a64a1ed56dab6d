"""The engine cache: one engine per key, a JSON sidecar, atomic writes, a build lock.

An engine is only ever loaded when its sidecar exists, parses, repeats the key exactly,
carries a hash over its own content (so an edited `names`, `tensors` or `format` is a
miss: a guard against damage and hand edits, not against this same user, who could as well
rebuild the engine; other users are kept out by the trust policy) and records the engine's
size and SHA-256, and when the engine, the sidecar and the
directory pass the trust policy (core/trust.py: ours, no symlink, not writable by others).
Anything else is a miss (rebuilt), never a load. An engine named explicitly
(`engine_path`) goes through the same policy in `load_engine`.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from yolo_trt_ros.core.errors import EngineError
from yolo_trt_ros.core.store.trust import TrustedDir, UntrustedFile, read_trusted

SIDECAR_VERSION = 2


def default_cache_dir() -> Path:
    """$YOLO_TRT_ROS_CACHE, else the XDG cache dir."""
    env = os.environ.get('YOLO_TRT_ROS_CACHE')
    if env:
        return Path(env)
    xdg = os.environ.get('XDG_CACHE_HOME') or str(Path.home() / '.cache')
    return Path(xdg) / 'yolo_trt_ros' / 'engines'


def canonical_hash(fields: dict) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(',', ':'))
    return hashlib.sha256(canonical.encode()).hexdigest()


def key_of(fields: dict) -> str:
    """A short stable hash of everything that makes an engine invalid."""
    return canonical_hash(fields)[:24]


def sidecar_path_of(engine: Path) -> Path:
    return Path(engine).with_suffix('.json')


def seal(sidecar: dict, plan: bytes) -> dict:
    """The sidecar as written: engine size and hash, then a hash over all of it."""
    meta = dict(sidecar, engine_size=len(plan), engine_sha256=hashlib.sha256(plan).hexdigest(),
                sidecar_version=SIDECAR_VERSION)
    meta.pop('sidecar_sha256', None)
    return dict(meta, sidecar_sha256=canonical_hash(meta))


def verify(sidecar_bytes: bytes, plan: bytes, name: str) -> dict:
    """The parsed sidecar if it is intact and describes exactly `plan`; EngineError why not."""
    try:
        meta = json.loads(sidecar_bytes)
    except ValueError as exc:
        raise EngineError(f'sidecar {name} is unreadable: {exc}') from exc
    if not isinstance(meta, dict):
        raise EngineError(f'sidecar {name} is not a JSON object')
    body = {k: v for k, v in meta.items() if k != 'sidecar_sha256'}
    if meta.get('sidecar_sha256') != canonical_hash(body):
        raise EngineError(f'sidecar {name} was modified after the build (its hash does not '
                          f'match)')
    if len(plan) != meta.get('engine_size'):
        raise EngineError(f'engine is {len(plan)} bytes, the sidecar says '
                          f'{meta.get("engine_size")} (truncated?)')
    if hashlib.sha256(plan).hexdigest() != meta.get('engine_sha256'):
        raise EngineError('engine content does not match the sidecar hash (corrupt)')
    return meta


@dataclass(frozen=True)
class CachedEngine:
    path: Path
    sidecar: dict


@dataclass(frozen=True)
class LoadedEngine:
    """An engine's bytes, read once under the trust policy, and its verified sidecar."""

    path: Path
    plan: bytes
    sidecar: dict | None  # None: an explicit engine without a sidecar


def load_engine(engine: Path) -> LoadedEngine:
    """Read an engine for loading: the trust policy for the file, its directory and its
    sidecar; a sidecar present must be intact and match. EngineError says why not."""
    engine = Path(engine)
    if not os.path.lexists(engine):
        raise EngineError(f'engine {engine} does not exist')
    try:
        plan = read_trusted(engine)
        side = sidecar_path_of(engine)
        if not os.path.lexists(side):
            return LoadedEngine(engine, plan, None)
        meta = verify(read_trusted(side), plan, side.name)
    except IsADirectoryError as exc:
        raise EngineError(f'engine {engine} is a directory, not a file') from exc
    return LoadedEngine(engine, plan, meta)


class EngineCache:
    def __init__(self, directory: Path | None = None) -> None:
        self.store_dir = TrustedDir(Path(directory) if directory else default_cache_dir())
        self.dir = self.store_dir.dir

    def ensure_dir(self) -> None:
        """Create the cache directory private to this user (0700), and check it."""
        self.store_dir.ensure()

    def engine_path(self, key: str) -> Path:
        return self.dir / f'{key}.engine'

    def sidecar_path(self, key: str) -> Path:
        return self.dir / f'{key}.json'

    def lookup(self, key: str, fields: dict) -> tuple[CachedEngine | None, str]:
        """The cached engine for key, or (None, why it cannot be used)."""
        engine, sidecar = self.engine_path(key), self.sidecar_path(key)
        if not os.path.lexists(engine):
            return None, 'no cached engine'
        if not os.path.lexists(sidecar):
            return None, f'sidecar {sidecar.name} is missing'
        try:
            meta = verify(read_trusted(sidecar), read_trusted(engine), sidecar.name)
        except (UntrustedFile, EngineError) as exc:
            return None, str(exc)
        if meta.get('key') != fields:
            return None, f'sidecar {sidecar.name} does not match the requested build'
        return CachedEngine(engine, meta), 'cache hit'

    def store(self, key: str, plan: bytes, sidecar: dict) -> Path:
        """Write engine then sidecar, each through a temporary file and os.replace. The
        sidecar (which makes the engine loadable) lands last, so a crash in between leaves
        an engine that lookup() refuses. EngineError naming the file and the cause when the
        filesystem refuses (and no engine left without its sidecar)."""
        self.ensure_dir()
        engine = self.engine_path(key)
        self.sidecar_path(key).unlink(missing_ok=True)
        self.store_dir.write(engine.name, plan)
        try:
            self.store_dir.write(self.sidecar_path(key).name,
                                 json.dumps(seal(sidecar, plan), indent=2).encode())
        except EngineError:
            engine.unlink(missing_ok=True)
            raise
        return engine

    @contextmanager
    def lock(self, key: str, cancel: threading.Event | None = None) -> Iterator[None]:
        """Exclusive per-key lock: a second builder waits here, then finds the engine.
        Temporaries left by builders that were killed are removed under it."""
        with self.store_dir.lock(key, cancel):
            self.store_dir.remove_stale_temporaries()
            yield
