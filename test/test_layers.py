"""The layers of the package hold (.importlinter, checked by import-linter), and the check
fails when one is broken: an upward import, a cycle, onnx in the runtime, a node that
imports the launch helpers."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name('lint-imports')


def lint(root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(root))  # the copy's package, not the installed one
    return subprocess.run([str(LINT_IMPORTS), '--config', str(root / '.importlinter'),
                           '--no-cache'], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)


def test_every_contract_is_kept():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'Contracts: 7 kept, 0 broken.' in result.stdout, result.stdout


@pytest.mark.parametrize('module,line,broken', [
    ('core/store/trust.py', 'from yolo_trt_ros.core.pipeline import preprocess',
     'The core by lifetime'),
    ('core/serving/frames.py', 'from yolo_trt_ros.core.serving import worker',
     'No import cycle'),
    ('core/runtime/detector.py', 'import onnx',
     'import no onnx and no build toolchain'),
    ('ros/detector_node.py', 'from yolo_trt_ros import launch_args',
     'One way down'),
    ('core/build/lookup.py', 'from yolo_trt_ros.core.backends import tensorrt',
     'shares only the TensorRT-module helper'),
    ('core/serving/batch.py', 'import rclpy',
     'The core never imports ROS'),
    ('ros/detector_node.py', 'import rosbags',
     'Only the bag command reads or writes bags'),
])
def test_a_broken_layer_is_reported(tmp_path, module, line, broken):
    shutil.copytree(ROOT / 'yolo_trt_ros', tmp_path / 'yolo_trt_ros',
                    ignore=shutil.ignore_patterns('__pycache__'))
    shutil.copy(ROOT / '.importlinter', tmp_path)
    path = tmp_path / 'yolo_trt_ros' / module
    path.write_text(path.read_text() + f'\n\ndef _late():\n    {line}\n')  # inside a function
    result = lint(tmp_path)
    assert result.returncode == 1, result.stdout
    assert 'Contracts: 6 kept, 1 broken.' in result.stdout, result.stdout
    report = ' '.join(result.stdout[result.stdout.index('Broken contracts'):].split())
    assert broken in report, report
