"""The Jetson plan, checked without a Jetson: every pip dependency a JetPack 6 user installs
(pip_env/requirements-jetson.txt) must have a wheel for manylinux aarch64 (Ubuntu 22.04's
glibc 2.35) and CPython 3.10. pip resolves each line for that platform from PyPI, reading
metadata only (--dry-run --no-deps: nothing is downloaded beyond the index and installed),
and a line without such a wheel fails the test with its name."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.tags import Tag
from packaging.utils import canonicalize_name, parse_wheel_filename

REPO = Path(__file__).resolve().parents[1]
JETSON = REPO / 'pip_env' / 'requirements-jetson.txt'
# JetPack 6: Ubuntu 22.04, whose glibc 2.35 runs every manylinux_2_x wheel up to 2_35 (pip
# takes the tags given literally, so each is named), and Python 3.10.
GLIBC = ['manylinux2014_aarch64', *(f'manylinux_2_{minor}_aarch64' for minor in range(17, 36))]
PLATFORM = [*(arg for tag in GLIBC for arg in ('--platform', tag)), '--python-version', '3.10',
            '--implementation', 'cp', '--abi', 'cp310']


def resolve(requirements: list[str], where: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """pip's choice of a wheel for each requirement on the Jetson platform, as its report."""
    req_file, report = where / 'requirements.txt', where / 'report.json'
    req_file.write_text('\n'.join(requirements) + '\n')
    proc = subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '--dry-run', '--no-deps', '--only-binary',
         ':all:', *PLATFORM, '--target', str(where / 'target'), '--report', str(report),
         '--quiet', '--disable-pip-version-check', '-r', str(req_file)],
        capture_output=True, text=True, timeout=600)
    return proc, (json.loads(report.read_text()) if report.is_file() else {})


def jetson_requirements() -> list[str]:
    lines = (line.split('#')[0].strip() for line in JETSON.read_text().splitlines())
    return [line for line in lines if line]


def fits_jetson(tag: Tag) -> bool:
    return (tag.interpreter in ('cp310', 'py3', 'py310', 'cp37', 'cp38', 'cp39')
            and tag.abi in ('cp310', 'abi3', 'none')
            and (tag.platform == 'any' or tag.platform.endswith('_aarch64')))


def test_every_jetson_dependency_has_an_aarch64_py310_wheel(tmp_path):
    wanted = jetson_requirements()
    proc, report = resolve(wanted, tmp_path)
    assert proc.returncode == 0, proc.stderr
    chosen = {canonicalize_name(item['metadata']['name']): item['download_info']['url']
              for item in report['install']}
    assert set(chosen) == {canonicalize_name(Requirement(r).name) for r in wanted}
    for name, url in chosen.items():
        filename = url.rsplit('/', 1)[-1]
        _, version, _, tags = parse_wheel_filename(filename)
        assert any(fits_jetson(tag) for tag in tags), f'{name}: {filename}'
        spec = next(Requirement(r) for r in wanted if canonicalize_name(Requirement(r).name)
                    == name)
        assert spec.specifier.contains(version, prereleases=True), f'{name} {version}'


@pytest.mark.parametrize('missing', [
    'numpy==2.3.0',  # numpy 2.3 needs Python 3.11: no cp310 wheel
    'ros-rclpy==7.1.6',  # the Jazzy wheels are cp311/cp312 only: ROS comes from apt there
])
def test_a_dependency_without_such_a_wheel_fails(tmp_path, missing):
    proc, _ = resolve(['pyyaml>=6', missing], tmp_path)
    assert proc.returncode != 0
    name = Requirement(missing).name
    assert name in proc.stderr and 'matching distribution' in proc.stderr, proc.stderr
