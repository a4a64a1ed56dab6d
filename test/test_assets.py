"""`yolo-trt fetch-assets` into a fresh data folder: the pinned downloads (from pip's cache
once setup has fetched them), where the temporary folder is on another filesystem, and a
default model that was damaged since."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from yolo_trt_ros.core.files import sha256_file


def fetch(home: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'yolo_trt_ros.cli', 'fetch-assets'],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, 'YOLO_TRT_ROS_HOME': str(home), **env})


def test_a_temporary_folder_on_another_filesystem_and_a_damaged_model(tmp_path):
    """A hostile user's review (helper): with $TMPDIR on another filesystem than the data
    folder (a tmpfs /tmp: Fedora, Arch, Debian 13), os.replace failed with EXDEV, a
    traceback, and setup never got the default model. A model damaged since it was made
    was reported fine by fetch-assets, and never made again."""
    other = Path('/dev/shm')
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip('no second filesystem here for the temporary folder')
    home = tmp_path / 'home'
    proc = fetch(home, TMPDIR=str(other))
    assert proc.returncode == 0 and 'Traceback' not in proc.stderr, proc.stderr
    model = Path(proc.stdout.split('default model: ')[1].split('\n')[0])
    assert model.is_file() and model.is_relative_to(home)
    made = sha256_file(model)
    with open(model, 'r+b') as f:  # damaged: truncated, as by a full disk or a copy cut short
        f.truncate(model.stat().st_size // 2)
    again = fetch(home)
    assert again.returncode == 0, again.stderr
    assert 'converting darknet weights to ONNX' in again.stderr
    assert sha256_file(model) == made
    assert 'fetching' not in again.stderr  # the weights were kept: nothing downloaded again


def test_a_data_folder_that_is_a_file_is_one_line(tmp_path):
    """YOLO_TRT_ROS_HOME naming a file was a NotADirectoryError traceback."""
    home = tmp_path / 'file'
    home.write_text('keep me')
    proc = fetch(home)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith('yolo-trt:')]
    assert len(errors) == 1 and str(home) in errors[0], proc.stderr
    assert home.read_text() == 'keep me'


def test_a_killed_fetchs_work_folder_and_a_garbled_stamp_are_mended(tmp_path):
    """A review (helper): fetch-assets killed by SIGTERM left its 80 MB work folder in the
    data folder for good (now named by its process, and removed once that is gone); a stamp
    that is not text was a UnicodeDecodeError traceback."""
    home = tmp_path / 'home'
    first = fetch(home)
    assert first.returncode == 0, first.stderr
    model = Path(first.stdout.split('default model: ')[1].split('\n')[0])
    darknet = next(home.rglob('coco.names')).parent
    abandoned = darknet / '.fetch-999999999-x1b2'  # no such process
    (abandoned / 'download').mkdir(parents=True)
    (abandoned / 'download' / 'part.tar.gz').write_bytes(b'x' * 1000)
    (darknet / 'coco.names').write_text('damaged')
    model.with_suffix('.source-sha256').write_bytes(b'\xff\xfe')
    again = fetch(home)
    assert again.returncode == 0 and 'Traceback' not in again.stderr, again.stderr
    assert 'fetching YOLOv3-tiny' in again.stderr and not abandoned.exists()
    assert not list(darknet.glob('.fetch-*'))
