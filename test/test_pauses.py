"""The worker's account of where time went (core/serving/pauses.py): batch steps and the
garbage collector's pauses, measured on the real collector, and the heap frozen once warm."""
import gc
import re
import weakref

import pytest

from yolo_trt_ros.core.serving.pauses import GC_ENV, Pauses, freeze_heap, thaw_heap


@pytest.fixture
def pauses():
    p = Pauses()
    p.start()
    yield p
    p.stop()


def test_collections_are_counted_by_generation_with_their_pauses(pauses):
    gc.collect(0)
    gc.collect(2)
    assert pauses.gc_count[0] >= 1 and pauses.gc_count[2] >= 1
    assert 0 < pauses.gc_max[2] <= pauses.gc_total
    pauses.stop()
    counted = list(pauses.gc_count)
    gc.collect()
    assert pauses.gc_count == counted  # stopped: no longer listening
    assert gc.callbacks.count(pauses._on_gc) == 0


def test_the_summary_names_the_steps_percentiles_and_those_over_a_frame_period(pauses):
    for ms in [5.0] * 97 + [120.0, 40.0, 5.0]:
        pauses.step(ms / 1e3)
    gc.collect(2)
    line = pauses.summary()
    assert line.startswith('100 batch steps: p50 5.0 ms, p99 40.8 ms, max 120.0 ms (step 98), '
                           '2 over 33 ms'), line
    gen2 = re.search(r'gen2 (\d+) \(max ([\d.]+) ms\)', line)
    assert gen2 is not None and int(gen2[1]) >= 1, line
    assert Pauses().summary().startswith('no batch steps; garbage collector: gen0 0')


def test_the_warm_heap_is_frozen_unless_python_s_own_collector_is_asked_for(monkeypatch):
    thaw_heap()
    monkeypatch.setenv(GC_ENV, 'default')
    assert freeze_heap() is False and gc.get_freeze_count() == 0
    monkeypatch.delenv(GC_ENV)
    try:
        assert freeze_heap() is True
        frozen = gc.get_freeze_count()
        assert frozen > 1000  # all that pytest and numpy hold
        cycle = Cycle()  # made after the freeze: a cycle of it is still collected
        cycle.me, gone = cycle, weakref.ref(cycle)
        del cycle
        gc.collect()
        assert gone() is None and gc.get_freeze_count() == frozen
    finally:
        thaw_heap()
    assert gc.get_freeze_count() == 0


class Cycle:
    me: object = None


def test_a_cycle_frozen_with_the_heap_is_collected_when_thawed(monkeypatch):
    """What the heap held when frozen is not collected while frozen; thaw_heap() collects
    it at once (the node thaws before it releases the detector's CUDA resources)."""
    monkeypatch.delenv(GC_ENV, raising=False)
    try:
        cycle = Cycle()
        cycle.me, gone = cycle, weakref.ref(cycle)
        assert freeze_heap() is True  # the cycle, still referred to, among the frozen
        del cycle
        gc.collect()
        assert gone() is not None  # frozen: not walked
    finally:
        thaw_heap()
    assert gone() is None
