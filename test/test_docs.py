"""The tables of README.md and docs/PERFORMANCE.md are what bench/results says
(bench/report.py makes them), and a table edited by hand or a result changed is caught."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(root / 'bench' / 'report.py'), '--check'],
                          capture_output=True, text=True, timeout=60)


def test_the_tables_are_generated_from_the_results():
    result = check(ROOT)
    assert result.returncode == 0, result.stderr


def copy(tmp_path: Path) -> Path:
    for part in ('README.md', 'docs', 'bench'):
        src = ROOT / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / part)
    return tmp_path


def test_a_hand_edited_table_or_a_new_result_is_caught(tmp_path):
    root = copy(tmp_path)
    readme = root / 'README.md'
    text = readme.read_text()
    start = text.index('<!-- table: speed -->')
    figure = text.index('**', start)
    readme.write_text(text[:figure] + '**0.12 ms**' + text[text.index('**', figure + 2) + 2:])
    result = check(root)
    assert result.returncode == 1 and 'README.md' in result.stderr
    readme.write_text(text)
    assert check(root).returncode == 0
    path = root / 'bench' / 'results' / 'stages_dev.json'
    data = json.loads(path.read_text())
    data['results'][0]['median_ms'] += 1.0
    path.write_text(json.dumps(data))
    result = check(root)
    assert result.returncode == 1 and 'docs/PERFORMANCE.md' in result.stderr
