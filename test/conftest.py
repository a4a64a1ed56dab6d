"""Shared fixtures. ROS tests get a ROS_DOMAIN_ID of their own for this test run."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.domain import claim_domain

from yolo_trt_ros.core.dds import with_profile

# One domain per test run, chosen before rclpy is imported anywhere, so two runs on one
# machine (or CI beside a developer) never see each other's nodes.
os.environ['ROS_DOMAIN_ID'] = os.environ.get('ROS_DOMAIN_ID') or claim_domain()
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
# The same transport profile the launch files select (large frames through shared memory).
# In the variable this ROS's Fast DDS reads (Humble and Jazzy read only the old name).
os.environ.update(with_profile(os.environ, str(
    Path(__file__).resolve().parents[1] / 'config' / 'fastdds_large_frames.xml')))

from yolo_trt_ros.core.models import paths


@pytest.fixture(scope='session')
def default_model() -> Path:
    path = paths.default_model_path()
    if not path.is_file():
        pytest.fail(f'default model {path} missing: run `bash pip_env/setup.sh` first')
    return path


def _sample(index: int) -> Path:
    path = paths.sample_image_paths()[index]
    if not path.is_file():
        pytest.fail(f'sample image {path} missing: run `bash pip_env/setup.sh` first')
    return path


@pytest.fixture(scope='session')
def bus_jpg() -> Path:
    return _sample(0)


@pytest.fixture(scope='session')
def zidane_jpg() -> Path:
    return _sample(1)


def pytest_runtest_setup(item):
    """Tests marked gpu run where a CUDA device answers, and are skipped (with the reason)
    elsewhere: CI has no GPU, the lent H100 has."""
    if item.get_closest_marker('gpu'):
        from yolo_trt_ros.core.gpu.cuda import probe_gpu
        gpu = probe_gpu()
        if gpu.count == 0:
            pytest.skip(f'needs a GPU: {gpu.reason}')
