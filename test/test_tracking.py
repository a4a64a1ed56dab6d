"""ByteTrack and BoT-SORT (core/pipeline/tracking) on synthetic trajectories: ids that
survive occlusion, crossing paths and a panning camera, and exactly the ids of the plain
reference written from the papers' pseudo-code (support/tracking_reference.py)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from support.tracking_reference import ReferenceTracker

from yolo_trt_ros.core.pipeline.results import Detections
from yolo_trt_ros.core.pipeline.tracking import DetectionTracker, TrackerConfig, detection_floor
from yolo_trt_ros.core.pipeline.tracking.cmc import SparseFlowCMC, grey_for_cmc
from yolo_trt_ros.core.pipeline.tracking.kalman import (
    KalmanFilter,
    PairwiseKalmanFilter,
    xyxy_to_measurement,
)
from yolo_trt_ros.core.pipeline.tracking.matching import assign, iou_matrix


def dets(boxes, scores, classes=None) -> Detections:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32)
    classes = np.zeros(len(scores), np.int32) if classes is None else np.asarray(classes,
                                                                                 np.int32)
    return Detections(boxes, scores, classes)


def box(cx: float, cy: float, w: float = 40, h: float = 80) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def ids_by_object(tracker: DetectionTracker, frames) -> list[dict[int, int]]:
    """frames: per frame a list of (object, box, score); returns per frame {object: id}."""
    out = []
    for frame in frames:
        objs = [o for o, _, _ in frame]
        tracked = tracker.update(dets([b for _, b, _ in frame], [s for _, _, s in frame]))
        found = {}
        for b, tid in zip(tracked.boxes, tracked.track_ids, strict=True):
            k = next(i for i, (_, fb, _) in enumerate(frame) if np.allclose(fb, b, atol=1e-3))
            found[objs[k]] = int(tid)
        out.append(found)
    return out


@pytest.mark.parametrize('kind', ['bytetrack', 'botsort'])
def test_an_occluded_object_keeps_its_id(kind):
    """Object B walks behind an obstacle for 12 frames (no detection) and comes out where
    its motion said it would: same id. A keeps its id throughout."""
    frames = []
    for f in range(60):
        frame = [('A', box(100 + 3 * f, 300), 0.9)]
        if not 20 <= f < 32:
            frame.append(('B', box(400 + 4 * f, 200), 0.8))
        frames.append(frame)
    seen = ids_by_object(DetectionTracker(TrackerConfig(kind=kind)), frames)
    assert {s['A'] for s in seen} == {1}
    b_ids = {s['B'] for s in seen if 'B' in s}
    assert b_ids == {2}, b_ids
    assert all('B' not in s for s in seen[20:32])


def test_the_low_score_stage_keeps_a_partly_hidden_object_tracked():
    """ByteTrack's point: while half hidden the detection scores 0.15 (below the high
    threshold): it is still associated, the id stays and the detection is reported."""
    frames = [[('A', box(100 + 2 * f, 200), 0.15 if 10 <= f < 20 else 0.85)]
              for f in range(30)]
    seen = ids_by_object(DetectionTracker(TrackerConfig()), frames)
    assert [s.get('A') for s in seen] == [1] * 30


@pytest.mark.parametrize('kind', ['bytetrack', 'botsort'])
def test_crossing_paths_keep_their_ids(kind):
    """Two people cross; at the crossing the one behind is hidden (no detection for 6
    frames, then a low score); each keeps its id after the crossing."""
    frames = []
    for f in range(60):
        left, right = box(100 + 5 * f, 240), box(400 - 5 * f, 260)
        frame = [('L', left, 0.9)]
        if not 27 <= f < 33:
            frame.append(('R', right, 0.3 if 24 <= f < 36 else 0.85))
        frames.append(frame)
    seen = ids_by_object(DetectionTracker(TrackerConfig(kind=kind)), frames)
    assert seen[0] == {'L': 1, 'R': 2}
    assert seen[-1] == {'L': 1, 'R': 2}
    assert {s['L'] for s in seen} == {1}


def test_a_new_object_needs_two_frames_and_ids_are_never_reused():
    tracker = DetectionTracker(TrackerConfig(track_buffer=3))
    assert tracker.update(dets([box(100, 100)], [0.9])).track_ids.tolist() == [1]  # frame 1
    # A new object from frame 2 on is confirmed by its second detection.
    assert tracker.update(dets([box(100, 100), box(300, 300)], [0.9, 0.9])).track_ids.tolist() == [1]
    assert tracker.update(dets([box(100, 100), box(300, 300)], [0.9, 0.9])).track_ids.tolist() == [1, 2]
    for _ in range(5):  # both gone for longer than the buffer
        assert len(tracker.update(dets([], []))) == 0
    tracker.update(dets([box(100, 100)], [0.9]))
    assert tracker.update(dets([box(100, 100)], [0.9])).track_ids.tolist() == [3]
    tracker.reset()  # a reset forgets the tracks, not the ids given
    assert tracker.update(dets([box(100, 100)], [0.9])).track_ids.tolist() == [4]


def test_a_lone_low_score_or_unconfident_detection_starts_no_track():
    tracker = DetectionTracker(TrackerConfig(new_track_thresh=0.6))
    for _ in range(3):
        assert len(tracker.update(dets([box(100, 100), box(300, 300)], [0.2, 0.5]))) == 0


def random_scene(seed: int, frames: int = 150, objects: int = 12):
    """Objects on straight lines with noisy boxes, random misses, low scores, false
    positives and objects entering and leaving."""
    rng = np.random.default_rng(seed)
    start = rng.uniform([50, 50], [1200, 650], (objects, 2))
    speed = rng.uniform(-6, 6, (objects, 2))
    size = rng.uniform([20, 40], [90, 180], (objects, 2))
    born, dies = rng.integers(0, frames // 2, objects), rng.integers(frames // 2, frames, objects)
    out = []
    for f in range(frames):
        boxes, scores = [], []
        for i in range(objects):
            if not born[i] <= f < dies[i] or rng.random() < 0.08:
                continue
            c = start[i] + speed[i] * f + rng.normal(0, 1.0, 2)
            wh = size[i] * rng.uniform(0.95, 1.05, 2)
            boxes.append([*(c - wh / 2), *(c + wh / 2)])
            scores.append(rng.uniform(0.12, 0.25) if rng.random() < 0.15 else rng.uniform(0.3, 0.95))
        for _ in range(rng.poisson(0.5)):
            c = rng.uniform([0, 0], [1280, 720])
            boxes.append([*(c - 15), *(c + 15)])
            scores.append(rng.uniform(0.1, 0.5))
        order = np.argsort(scores)[::-1]
        out.append((np.asarray(boxes, np.float64).reshape(-1, 4)[order],
                    np.asarray(scores, np.float64)[order]))
    return out


@pytest.mark.parametrize('seed', range(6))
@pytest.mark.parametrize('kind', ['bytetrack', 'botsort'])
def test_same_ids_as_the_reference_written_from_the_paper(seed, kind):
    rng = np.random.default_rng(100 + seed)
    config = TrackerConfig(kind=kind, gmc_method='none', fuse_score=bool(seed % 2),
                           track_buffer=int(rng.integers(5, 40)))
    ours = DetectionTracker(config).tracker
    reference = ReferenceTracker(config.track_high_thresh, config.track_low_thresh,
                                 config.new_track_thresh, config.track_buffer,
                                 config.match_thresh, config.fuse_score, kind == 'botsort')
    confirmed = 0
    for f, (boxes, scores) in enumerate(random_scene(seed)):
        # BoT-SORT: the same camera motion given to both (a slow pan and a slight zoom).
        affine = np.array([[1.001, 0.002, 1.5], [-0.002, 1.001, -0.5]]) \
            if kind == 'botsort' else None
        out = ours.update(boxes, scores, affine)
        expected = reference.update(boxes, scores, affine)
        got = dict(zip(out.index.tolist(), out.ids.tolist(), strict=True))
        assert got == expected, f'frame {f + 1}'
        confirmed += len(got)
    assert confirmed > 300  # the scene really tracks something


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (h // 8, w // 8), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC), (5, 5), 0)


def shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, m, (image.shape[1], image.shape[0]),
                          borderMode=cv2.BORDER_REFLECT)


def test_camera_motion_is_measured_from_sparse_flow():
    world = textured(1080, 1920)
    cmc = SparseFlowCMC()
    first = grey_for_cmc(world[:, :, None], 'gray')
    assert np.allclose(cmc.estimate(*first), np.eye(2, 3))  # nothing to compare with yet
    moved = shifted(world, 24.0, -10.0)
    affine = cmc.estimate(*grey_for_cmc(cv2.cvtColor(moved, cv2.COLOR_GRAY2BGR), 'bgr'))
    assert np.allclose(affine[:, :2], np.eye(2), atol=0.01)
    assert np.allclose(affine[:, 2], [24.0, -10.0], atol=1.0), affine


def test_botsort_follows_objects_through_a_fast_camera_pan():
    """The camera pans 60 px in one frame: small objects' predicted boxes no longer
    overlap their detections, so ByteTrack gives new ids; BoT-SORT, moving its tracks with
    the measured camera motion, keeps them."""
    world = textured(720, 1280, seed=3)
    objects = [(300.0, 300.0), (700.0, 400.0), (900.0, 200.0)]
    results = {}
    for kind in ('bytetrack', 'botsort'):
        tracker = DetectionTracker(TrackerConfig(kind=kind))
        pan, history = 0.0, []
        for f in range(20):
            pan += 60.0 if f == 10 else 0.0
            frame = shifted(world, pan, 0.0)
            boxes = [box(x + pan + f, y, 24, 48) for x, y in objects]
            tracked = tracker.update(dets(boxes, [0.9] * 3),
                                     tracker.grey(frame[:, :, None], 'gray'))
            history.append(sorted(tracked.track_ids.tolist()))
        results[kind] = history
    assert results['botsort'][-1] == [1, 2, 3]
    assert results['bytetrack'][-1] != [1, 2, 3]  # without compensation the ids are lost


def test_kalman_learns_a_constant_velocity_and_warps_with_the_camera():
    for kind in ('xyah', 'xywh'):
        kf = KalmanFilter(kind)
        mean, cov = kf.initiate(xyxy_to_measurement(np.array([box(100, 100)]), kind))
        for f in range(1, 30):
            mean, cov = kf.predict(mean, cov)
            mean, cov = kf.update(mean, cov,
                                  xyxy_to_measurement(np.array([box(100 + 4 * f, 100 - 2 * f)]),
                                                      kind))
        assert np.allclose(mean[0, 4:6], [4, -2], atol=0.05)
        assert np.all(np.linalg.eigvalsh(cov[0]) > 0)  # stays a covariance
    kf = KalmanFilter('xywh')
    mean, cov = kf.initiate(np.array([[10.0, 20.0, 4.0, 8.0]]))
    shift = np.array([[1.0, 0.0, 5.0], [0.0, 1.0, -3.0]])
    moved, moved_cov = kf.warp(mean, cov, shift)
    assert np.allclose(moved[0, :4], [15, 17, 4, 8]) and np.allclose(moved_cov, cov)
    scale = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    assert np.allclose(kf.warp(mean, cov, scale)[0][0, :4], [20, 40, 8, 16])


def test_the_pairwise_filter_is_the_xyah_filter():
    """ByteTrack's filter stored as four (value, rate) pairs gives the 8x8 filter's numbers."""
    rng = np.random.default_rng(5)
    full, pairs = KalmanFilter('xyah'), PairwiseKalmanFilter()
    z = xyxy_to_measurement(np.array([box(100, 100), box(400, 300, 60, 120)]), 'xyah')
    (m1, c1), (m2, c2) = full.initiate(z), pairs.initiate(z)
    for _ in range(20):
        (m1, c1), (m2, c2) = full.predict(m1, c1), pairs.predict(m2, c2)
        z = z + rng.normal(0, [2, 2, 0.01, 2], z.shape)
        (m1, c1), (m2, c2) = full.update(m1, c1, z), pairs.update(m2, c2, z)
    assert np.allclose(m1, m2, rtol=1e-12, atol=1e-9)
    i = np.arange(4)
    assert np.allclose(c1[:, i, i], c2[:, :, 0]) and np.allclose(c1[:, i, i + 4], c2[:, :, 1])
    assert np.allclose(c1[:, i + 4, i + 4], c2[:, :, 2])
    c1[:, i, i] = c1[:, i, i + 4] = c1[:, i + 4, i] = c1[:, i + 4, i + 4] = 0
    assert np.abs(c1).max() < 1e-12  # nothing else: the coordinates never couple


def test_assignment_refuses_pairs_above_the_threshold():
    a = np.array([box(100, 100), box(300, 300)])
    b = np.array([box(302, 300), box(600, 600)])
    iou = iou_matrix(a, b)
    assert iou[1, 0] > 0.9 and iou[0, 1] == 0
    pairs, rows, cols = assign(1 - iou, 0.8)
    assert pairs.tolist() == [[1, 0]] and rows.tolist() == [0] and cols.tolist() == [1]
    assert assign(np.zeros((0, 3)), 0.5)[2].tolist() == [0, 1, 2]


def test_config_checks_and_the_detection_floor():
    with pytest.raises(ValueError, match='track_low_thresh: 0.5 is above track_high_thresh'):
        TrackerConfig(track_low_thresh=0.5, track_high_thresh=0.3)
    with pytest.raises(ValueError, match='track_buffer: 0 must be at least 1'):
        TrackerConfig(track_buffer=0)
    with pytest.raises(ValueError, match="tracker: 'sort' is not bytetrack or botsort"):
        TrackerConfig(kind='sort')
    with pytest.raises(ValueError, match='match_thresh: 1.5 is outside'):
        TrackerConfig(match_thresh=1.5)
    assert detection_floor(0.25, None) == 0.25
    assert detection_floor(0.25, TrackerConfig()) == 0.1
    assert detection_floor(0.05, TrackerConfig()) == 0.05
