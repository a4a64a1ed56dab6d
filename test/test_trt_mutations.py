"""A mutation check of the TensorRT tests: each mistake of support/trt_mutations.py (the
eleven that passed every test before issue 16, and the eight the scan caught already) is
applied alone to a copy of the package, and the tests chosen for it must fail there; the
unchanged copy must pass them all. One worker process runs every copy in turn."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.needs import optional_module, reference_install
from support.trt_mutations import MUTATIONS, apply, copy_package

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / 'test' / 'support' / 'trt_mutations.py'


def test_every_tensorrt_mistake_fails_its_tests(tmp_path):
    optional_module('tensorrt_rtx', 'the builds the mutations are caught by')
    reference_install(Path(sys.prefix) / 'opt' / 'tensorrt-bindings' / '10.13.3.9',
                      'the TensorRT 10.13 bindings the scan reads')
    assert len({m.name for m in MUTATIONS}) == len(MUTATIONS) == 19
    baseline = copy_package(ROOT, tmp_path / 'baseline')
    everything = sorted({t for m in MUTATIONS for t in m.tests})
    plan = [{'name': 'baseline', 'root': str(baseline), 'tests': everything}]
    for i, mutation in enumerate(MUTATIONS):
        root = copy_package(ROOT, tmp_path / f'mutant{i}')
        apply(root, mutation)
        plan.append({'name': mutation.name, 'root': str(root), 'tests': list(mutation.tests)})
    (tmp_path / 'plan.json').write_text(json.dumps(plan))
    worker = subprocess.run([sys.executable, str(WORKER), str(tmp_path / 'plan.json'),
                             str(tmp_path / 'results.json')], capture_output=True, text=True,
                            timeout=600, cwd=tmp_path)
    assert worker.returncode == 0, worker.stdout[-5000:] + worker.stderr[-5000:]
    results = json.loads((tmp_path / 'results.json').read_text())
    base = results.pop('baseline')
    assert base['rc'] == 0 and len(base['passed']) == len(everything), worker.stdout[-5000:]
    survivors = {name: r for name, r in results.items() if r['rc'] != 1 or not r['failed']}
    assert not survivors, f'mutations no test caught: {survivors}\n{worker.stdout[-5000:]}'
