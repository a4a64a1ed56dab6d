"""Lint: ruff over the Python, catkin_pkg's validating parser over package.xml. Each
check is also shown to fail on a real violation, so a broken linter cannot pass."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from catkin_pkg.package import InvalidPackage, parse_package

ROOT = Path(__file__).resolve().parents[1]
PYTHON_TREES = ['yolo_trt_ros', 'test', 'launch', 'bench', 'setup.py']


def tool(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True)


def ruff(*args: str) -> subprocess.CompletedProcess:
    return tool(sys.executable, '-m', 'ruff', 'check', '--no-cache', *args)


def vermin(*paths: str) -> subprocess.CompletedProcess:
    """vermin: the oldest Python each file needs. 3.10 is ROS 2 Humble's."""
    return tool(str(Path(sys.executable).parent / 'vermin'), '-t=3.10-', '--violations',
                '--no-tips', '--eval-annotations', *paths)


@pytest.mark.parametrize('check', [ruff, vermin], ids=['ruff', 'runs-on-python-3.10'])
def test_python_trees_are_clean(check):
    proc = check(*[t for t in PYTHON_TREES if (ROOT / t).exists()])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_catches_a_real_violation(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text('import os\n\n\ndef f(x):\n    return undefined_name + x\n')
    proc = ruff('--config', str(ROOT / 'ruff.toml'), str(bad))
    assert proc.returncode == 1
    assert 'F401' in proc.stdout and 'F821' in proc.stdout


def test_package_xml_is_valid_format_3():
    package = parse_package(str(ROOT / 'package.xml'))
    package.validate()
    assert package.package_format == 3 and package.name == 'yolo_trt_ros'
    depends = {d.name for d in package.exec_depends}
    assert {'rclpy', 'sensor_msgs', 'std_msgs', 'vision_msgs', 'diagnostic_msgs',
            'python3-numpy', 'python3-opencv'} <= depends
    assert package.get_build_type() == 'ament_python'


@pytest.mark.parametrize('old,new,message', [
    ('<name>yolo_trt_ros</name>', '<name>Yolo TRT</name>', 'name'),
    ('maintainers@yolo-trt-ros.dev', 'not-an-email', 'email'),
    ('<license file="LICENSE">Apache-2.0</license>', '', 'license'),
])
def test_package_xml_check_catches_violations(tmp_path, old, new, message):
    pkg = tmp_path / 'pkg'
    pkg.mkdir()
    text = (ROOT / 'package.xml').read_text()
    assert old in text
    (pkg / 'package.xml').write_text(text.replace(old, new))
    with pytest.raises(InvalidPackage, match=message):
        parse_package(str(pkg / 'package.xml')).validate()


def test_colcon_never_sees_the_pip_route_folder():
    assert (ROOT / 'pip_env' / 'COLCON_IGNORE').is_file()


def test_vermin_catches_code_that_needs_3_11(tmp_path):
    bad = tmp_path / 'new.py'
    bad.write_text('import tomllib\n')
    proc = vermin(str(bad))
    assert proc.returncode != 0 and 'tomllib' in proc.stdout, proc.stdout
