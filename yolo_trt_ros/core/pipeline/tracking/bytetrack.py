"""Multi-object tracking by detection: ByteTrack (Zhang et al., ECCV 2022), and BoT-SORT's
changes to it (Aharon et al., 2022), written from the papers.

ByteTrack's idea: keep the low-score detections. Every track is predicted one frame ahead
(Kalman filter); the high-score detections are associated first, with every track (lost
ones included, so an object that comes back gets its id back); the tracks left over are
then associated with the low-score detections, which are mostly occluded or blurred
objects a plain score threshold would have thrown away; tracks still unmatched become lost
and are kept for `track_buffer` frames; high-score detections matched by no track start
new tracks. BoT-SORT keeps that and changes two things we follow: the Kalman state holds
the box width and height (not aspect ratio and height), and before association the
predicted tracks are moved with the camera (an affine estimate of the frame-to-frame
motion, cmc.py). Its appearance (ReID) branch is not implemented.

The tracks are held as arrays (one row per track), so a frame costs the same few numpy
calls whether there are 5 tracks or 100. Parameter names and defaults are those of
Ultralytics' bytetrack.yaml / botsort.yaml, so a configuration written for it carries over.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from yolo_trt_ros.core.pipeline.tracking.kalman import (
    KalmanFilter,
    PairwiseKalmanFilter,
    measurement_to_xyxy,
    xyxy_to_measurement,
)
from yolo_trt_ros.core.pipeline.tracking.matching import assign, iou_cost, iou_matrix

TRACKERS = ('none', 'bytetrack', 'botsort')
GMC_METHODS = ('sparseOptFlow', 'none')
# Fixed thresholds of the later association stages (1 - IoU): low-score detections need a
# clear overlap, a track seen once needs a good one to be confirmed.
SECOND_MATCH = 0.5
UNCONFIRMED_MATCH = 0.7
# A tracked and a lost track overlapping this much are one object: the younger is dropped.
DUPLICATE_IOU = 0.85

TRACKED, LOST = 1, 2


@dataclass(frozen=True)
class TrackerConfig:
    """kind: 'bytetrack' or 'botsort'. Thresholds are detection scores, except
    match_thresh, the largest cost (1 - IoU, times the score with fuse_score) a first-stage
    match may have; track_buffer: frames a lost track is kept."""

    kind: str = 'bytetrack'
    track_high_thresh: float = 0.25
    track_low_thresh: float = 0.1
    new_track_thresh: float = 0.25
    track_buffer: int = 30
    match_thresh: float = 0.8
    fuse_score: bool = True
    gmc_method: str = 'sparseOptFlow'  # BoT-SORT only

    def __post_init__(self) -> None:
        if self.kind not in TRACKERS[1:]:
            raise ValueError(f"tracker: '{self.kind}' is not bytetrack or botsort")
        # The types first: a YAML's `track_buffer: abc` or `fuse_score: maybe` is named
        # (a comparison would fail without the key, or the string pass as true).
        for name, kinds, said in (('track_high_thresh', (int, float), 'a number'),
                                  ('track_low_thresh', (int, float), 'a number'),
                                  ('new_track_thresh', (int, float), 'a number'),
                                  ('match_thresh', (int, float), 'a number'),
                                  ('track_buffer', (int,), 'a whole number'),
                                  ('fuse_score', (bool,), 'true or false')):
            value = getattr(self, name)
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise ValueError(f'{name}: {value!r} is not {said}')
        for name in ('track_high_thresh', 'track_low_thresh', 'new_track_thresh',
                     'match_thresh'):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f'{name}: {value} is outside [0, 1]')
        if self.track_low_thresh > self.track_high_thresh:
            raise ValueError(f'track_low_thresh: {self.track_low_thresh} is above '
                             f'track_high_thresh {self.track_high_thresh}')
        if self.track_buffer < 1:
            raise ValueError(f'track_buffer: {self.track_buffer} must be at least 1 (frames)')
        if self.gmc_method not in GMC_METHODS:
            raise ValueError(f"gmc_method: '{self.gmc_method}' is not sparseOptFlow or none")


@dataclass(frozen=True)
class TrackOutput:
    """The detections on a confirmed track this frame: index (K,) into the frame's
    detections, ids (K,) int64, in detection order."""

    index: np.ndarray
    ids: np.ndarray


class Tracker:
    """One camera's tracks. ids: where new ids come from; it outlives reset(), so an id is
    never given twice by one id source (one per camera for the node's lifetime)."""

    def __init__(self, config: TrackerConfig, ids: Iterator[int] | None = None) -> None:
        self.config = config
        self.kf = KalmanFilter('xywh') if config.kind == 'botsort' else PairwiseKalmanFilter()
        # The rates of the box size in the state: h's (xyah), or w's and h's (xywh).
        self._size_rates = slice(7, 8) if self.kf.kind == 'xyah' else slice(6, 8)
        self.ids = ids if ids is not None else itertools.count(1)
        self.reset()

    def reset(self) -> None:
        """Forget every track (a bag looping, a long pause); ids are not reused."""
        self.frame = 0
        self.mean, self.cov = self.kf.initiate(np.zeros((0, 4)))
        self.track_id = np.zeros(0, np.int64)  # 0: not confirmed yet
        self.state = np.zeros(0, np.int8)
        self.last = np.zeros(0, np.int64)  # the frame of the last match
        self.start = np.zeros(0, np.int64)
        self.det = np.zeros(0, np.int64)  # the detection matched this frame, or -1

    def __len__(self) -> int:
        """Live tracks (tracked or lost, confirmed or not)."""
        return len(self.state)

    @property
    def boxes(self) -> np.ndarray:
        """(N, 4) xyxy of every track's state (after the last update)."""
        return measurement_to_xyxy(self.mean, self.kf.kind)

    def update(self, boxes: np.ndarray, scores: np.ndarray,
               affine: np.ndarray | None = None) -> TrackOutput:
        """One frame: boxes (M, 4) xyxy and scores (M,) of every detection down to
        track_low_thresh; affine (2, 3): the camera's motion since the last frame
        (BoT-SORT), or None. Returns the detections on confirmed tracks, with their ids."""
        c = self.config
        self.frame += 1
        self.det[:] = -1
        scores = np.asarray(scores, np.float64)
        z = xyxy_to_measurement(boxes, self.kf.kind)
        high = np.flatnonzero(scores >= c.track_high_thresh)
        low = np.flatnonzero((scores > c.track_low_thresh) & (scores < c.track_high_thresh))
        if len(self):
            # A lost track's size stops changing: its last size rate would otherwise grow
            # or shrink the box for as long as it is lost.
            lost = self.state == LOST
            if lost.any():
                self.mean[lost, self._size_rates] = 0
            self.mean, self.cov = self.kf.predict(self.mean, self.cov)
            if affine is not None:
                self.mean, self.cov = self.kf.warp(self.mean, self.cov, affine)
        predicted = self.boxes
        fuse = scores if c.fuse_score else None

        # 1. Confirmed tracks, tracked or lost, with the high-score detections.
        confirmed = np.flatnonzero(self.track_id > 0)
        rest_t, high = self._stage(confirmed, high, boxes, predicted, fuse, c.match_thresh, z)

        # 2. Tracks still tracked (not lost) with the low-score detections: the occluded.
        tracked = rest_t[self.state[rest_t] == TRACKED]
        unmatched, _ = self._stage(tracked, low, boxes, predicted, None, SECOND_MATCH, z)
        self.state[unmatched] = LOST

        # 3. Tracks seen once (not confirmed) with the high-score detections left.
        tentative = np.flatnonzero(self.track_id == 0)
        unseen, high = self._stage(tentative, high, boxes, predicted, fuse, UNCONFIRMED_MATCH,
                                   z)
        keep = np.ones(len(self), bool)
        keep[unseen] = False  # seen once and not again: a false positive

        # 4. Lost for longer than the buffer: gone.
        keep &= self.frame - self.last <= c.track_buffer
        self._keep(keep)

        # 5. New tracks from confident detections nobody took; on the first frame they are
        # confirmed at once (there was no earlier frame to confirm them).
        fresh = high[scores[high] >= c.new_track_thresh]
        if len(fresh):
            self._start(fresh, z)
        self._drop_duplicates()
        on = np.flatnonzero((self.det >= 0) & (self.track_id > 0))
        order = np.argsort(self.det[on], kind='stable')
        return TrackOutput(self.det[on][order], self.track_id[on][order])

    def _stage(self, tracks: np.ndarray, dets: np.ndarray, boxes: np.ndarray,
               predicted: np.ndarray, fuse: np.ndarray | None, threshold: float,
               z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Associate tracks with dets (indices) and update the matched tracks; returns the
        tracks and the detections left unmatched."""
        if not len(tracks) or not len(dets):
            return tracks, dets
        pairs, rest_t, rest_d = assign(
            iou_cost(predicted[tracks], boxes[dets], None if fuse is None else fuse[dets]),
            threshold)
        self._match(tracks[pairs[:, 0]], dets[pairs[:, 1]], z)
        return tracks[rest_t], dets[rest_d]

    def _match(self, tracks: np.ndarray, dets: np.ndarray, z: np.ndarray) -> None:
        if not len(tracks):
            return
        self.mean[tracks], self.cov[tracks] = self.kf.update(self.mean[tracks],
                                                             self.cov[tracks], z[dets])
        self.state[tracks] = TRACKED
        self.last[tracks] = self.frame
        self.det[tracks] = dets
        new = tracks[self.track_id[tracks] == 0]
        self.track_id[new] = [next(self.ids) for _ in range(len(new))]

    def _start(self, dets: np.ndarray, z: np.ndarray) -> None:
        mean, cov = self.kf.initiate(z[dets])
        n = len(dets)
        ids = np.zeros(n, np.int64)
        if self.frame == 1:
            ids[:] = [next(self.ids) for _ in range(n)]
        self.mean = np.concatenate([self.mean, mean])
        self.cov = np.concatenate([self.cov, cov])
        self.track_id = np.concatenate([self.track_id, ids])
        self.state = np.concatenate([self.state, np.full(n, TRACKED, np.int8)])
        self.last = np.concatenate([self.last, np.full(n, self.frame)])
        self.start = np.concatenate([self.start, np.full(n, self.frame)])
        self.det = np.concatenate([self.det, dets])

    def _keep(self, keep: np.ndarray) -> None:
        if keep.all():
            return
        self.mean, self.cov = self.mean[keep], self.cov[keep]
        self.track_id, self.state = self.track_id[keep], self.state[keep]
        self.last, self.start, self.det = self.last[keep], self.start[keep], self.det[keep]

    def _drop_duplicates(self) -> None:
        """A lost track and a tracked one on the same object: keep the older."""
        tracked = np.flatnonzero(self.state == TRACKED)
        lost = np.flatnonzero(self.state == LOST)
        if not len(tracked) or not len(lost):
            return
        boxes = self.boxes
        t, lo = np.nonzero(iou_matrix(boxes[tracked], boxes[lost]) > DUPLICATE_IOU)
        if not len(t):
            return
        keep = np.ones(len(self), bool)
        age = self.frame - self.start
        older_tracked = age[tracked[t]] >= age[lost[lo]]
        keep[lost[lo][older_tracked]] = False
        keep[tracked[t][~older_tracked]] = False
        self._keep(keep)
