"""NMS on the OpenCV a ROS install brings: Debian's python3-opencv (4.6, no
NMSBoxesBatched) with Debian's numpy 1.x, run by the system python3, outside the venv.
CI installs python3-opencv with apt (.ci/run); elsewhere the test says why it skips."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from support.nms import brute_force

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = '/usr/bin/python3'
# Runs under the system python3: only core/nms.py and core/defaults.py are imported.
SCRIPT = """
import json, sys
import cv2, numpy as np
from yolo_trt_ros.core.pipeline.nms import nms
cases = json.load(sys.stdin)
out = [nms(np.array(c['boxes'], np.float32).reshape(-1, 4), np.array(c['scores'], np.float32),
           None if c['classes'] is None else np.array(c['classes']), c['thr'], c['max_det']).tolist()
       for c in cases]
print(json.dumps({'opencv': cv2.__version__, 'numpy': np.__version__,
                  'batched': hasattr(cv2.dnn, 'NMSBoxesBatched'), 'kept': out}))
"""


def system_opencv() -> str | None:
    """Why the system python3 cannot run the test, or None when it can."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f'no {SYSTEM_PYTHON}'
    probe = subprocess.run([SYSTEM_PYTHON, '-c', 'import cv2, numpy'], capture_output=True)
    if probe.returncode != 0:
        return f'{SYSTEM_PYTHON} has no cv2 (apt install python3-opencv; .ci/run does)'
    return None


def cases() -> list[dict]:
    rng = np.random.default_rng(7)
    out = []
    for i in range(200):
        n = int(rng.integers(0, 80))
        xy = rng.uniform(0, 1920 if i % 2 else 300, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(1, 300, (n, 2))], 1).astype(np.float32)
        scores = rng.permutation(np.linspace(0.05, 1.0, max(n, 1)))[:n].astype(np.float32)
        classes = rng.integers(0, int(rng.integers(1, 81)), n)
        out.append({'boxes': boxes.tolist(), 'scores': scores.tolist(),
                    'classes': None if i % 5 == 0 else classes.tolist(),
                    'thr': float(rng.choice([0.0, 0.3, 0.45, 0.7, 1.0])),
                    'max_det': int(rng.choice([1, 5, 300]))})
    return out


def test_nms_on_the_system_opencv_equals_brute_force():
    why = system_opencv()
    if why is not None:
        if os.environ.get('CI'):
            pytest.fail(f'CI must run this test: {why}')
        pytest.skip(why)
    todo = cases()
    proc = subprocess.run([SYSTEM_PYTHON, '-c', SCRIPT], input=json.dumps(todo), text=True,
                          capture_output=True, cwd=ROOT,
                          env={'PATH': os.environ.get('PATH', ''), 'PYTHONPATH': str(ROOT)},
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result['opencv'].startswith('4.'), result['opencv']
    for case, kept in zip(todo, result['kept'], strict=True):
        boxes = np.array(case['boxes'], np.float32).reshape(-1, 4).tolist()
        scores = np.array(case['scores'], np.float32).tolist()
        assert kept == brute_force(boxes, scores, case['classes'], case['thr'], case['max_det'])
