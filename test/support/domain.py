"""A ROS_DOMAIN_ID of a test run's own on this machine."""
from __future__ import annotations

import fcntl
import random
import tempfile
from pathlib import Path

_held = []  # the lock files, open for the whole run: the domain is this run's until it ends


def claim_domain() -> str:
    """A ROS_DOMAIN_ID no other test run on this machine holds: each run locks a file per
    domain (flock, released when the process ends, however it ends). A random pick alone
    let two runs (CI beside a developer) share one about once in 100."""
    for domain in random.SystemRandom().sample(range(1, 101), 100):
        path = Path(tempfile.gettempdir()) / f'yolo_trt_ros_domain_{domain}.lock'
        try:  # another user's lock file may not open for us: held, as far as we know
            lock = open(path, 'a')
        except OSError:
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        _held.append(lock)
        return str(domain)
    raise RuntimeError('every ROS_DOMAIN_ID from 1 to 100 is held by another test run here')
