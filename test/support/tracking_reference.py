"""A reference ByteTrack / BoT-SORT for the tests, written from the papers' pseudo-code in
the plainest way: one object per track, one Kalman filter per track with its matrices
spelled out, loops instead of arrays. Slow, and meant to be read: the tracker of
yolo_trt_ros (arrays, batched Kalman filter) must give exactly the same ids.

ByteTrack (Zhang et al. 2022, Algorithm 1), with the policies the paper's text adds:
    predict every track with its Kalman filter (BoT-SORT: then move it with the camera)
    D_high, D_low = detections split at the high threshold (D_low above the low one)
    first: match every confirmed track (tracked or lost) to D_high by IoU (x score)
    second: match the remaining tracked tracks to D_low by IoU; still unmatched -> lost
    tentative tracks (seen once) match what is left of D_high, or are dropped
    lost tracks older than the buffer are deleted
    remaining D_high above the new-track threshold start tentative tracks
      (confirmed at once on the first frame; ids given at confirmation)
    a lost and a tracked track overlapping by IoU > 0.85 are one: the younger goes
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

W_POS, W_VEL = 1 / 20, 1 / 160


class KF:
    """One track's filter; xywh=True for BoT-SORT's state."""

    def __init__(self, z: np.ndarray, xywh: bool) -> None:
        self.xywh = xywh
        self.F = np.eye(8)
        for i in range(4):
            self.F[i, i + 4] = 1.0
        self.H = np.eye(4, 8)
        self.x = np.concatenate([z, np.zeros(4)])
        self.P = np.diag(np.square(self.std(z, 2 * W_POS, 1e-2) + self.std(z, 10 * W_VEL, 1e-5)))

    def std(self, z, weight, aspect):
        w, h = z[2], z[3]
        if self.xywh:
            return [weight * w, weight * h, weight * w, weight * h]
        return [weight * h, weight * h, aspect, weight * h]

    def predict(self) -> None:
        q = np.diag(np.square(self.std(self.x, W_POS, 1e-2) + self.std(self.x, W_VEL, 1e-5)))
        self.x = self.F @ self.x
        self.P = self.F @ self.P @ self.F.T + q

    def warp(self, affine: np.ndarray) -> None:
        m = np.zeros((8, 8))
        for i in range(4):
            m[2 * i:2 * i + 2, 2 * i:2 * i + 2] = affine[:, :2]
        self.x = m @ self.x
        self.x[:2] += affine[:, 2]
        self.P = m @ self.P @ m.T

    def update(self, z: np.ndarray) -> None:
        r = np.diag(np.square(self.std(self.x, W_POS, 1e-1)))
        s = self.H @ self.P @ self.H.T + r
        k = self.P @ self.H.T @ np.linalg.inv(s)
        self.x = self.x + k @ (z - self.H @ self.x)
        self.P = self.P - k @ s @ k.T


def measure(box, xywh: bool) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, w if xywh else w / h, h])


def box_of(x, xywh: bool) -> np.ndarray:
    w = x[2] if xywh else x[2] * x[3]
    return np.array([x[0] - w / 2, x[1] - x[3] / 2, x[0] + w / 2, x[1] + x[3] / 2])


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / max(union, 1e-9)


def match(tracks, dets, boxes, scores, fuse: bool, threshold: float):
    """Hungarian matching on 1 - IoU (x score); pairs above threshold refused."""
    if not tracks or not dets:
        return [], list(tracks), list(dets)
    cost = np.ones((len(tracks), len(dets)))
    for i, t in enumerate(tracks):
        for j, d in enumerate(dets):
            overlap = iou(box_of(t.kf.x, t.kf.xywh), boxes[d])
            cost[i, j] = 1 - overlap * (scores[d] if fuse else 1.0)
    rows, cols = linear_sum_assignment(cost)
    pairs = [(tracks[r], dets[c]) for r, c in zip(rows, cols, strict=True) if cost[r, c] <= threshold]
    return (pairs, [t for t in tracks if all(t is not p[0] for p in pairs)],
            [d for d in dets if all(d != p[1] for p in pairs)])


class Track:
    def __init__(self, z, xywh: bool, frame: int) -> None:
        self.kf = KF(z, xywh)
        self.id = 0
        self.lost = False
        self.last = self.start = frame
        self.det = -1


class ReferenceTracker:
    def __init__(self, high=0.25, low=0.1, new=0.25, buffer=30, match_thresh=0.8,
                 fuse=True, botsort=False) -> None:
        self.high, self.low, self.new, self.buffer = high, low, new, buffer
        self.match_thresh, self.fuse, self.xywh = match_thresh, fuse, botsort
        self.tracks: list[Track] = []
        self.frame = 0
        self.next_id = 1

    def hit(self, t: Track, d: int, boxes) -> None:
        t.kf.update(measure(boxes[d], self.xywh))
        t.lost, t.last, t.det = False, self.frame, d
        if t.id == 0:
            t.id, self.next_id = self.next_id, self.next_id + 1

    def update(self, boxes, scores, affine=None) -> dict[int, int]:
        """Returns {detection index: track id} for the detections on confirmed tracks."""
        self.frame += 1
        for t in self.tracks:
            t.det = -1
            if t.lost:  # a lost track's size stops changing
                t.kf.x[6 if self.xywh else 7] = 0
                t.kf.x[7] = 0
            t.kf.predict()
            if affine is not None:
                t.kf.warp(affine)
        d_high = [i for i, s in enumerate(scores) if s >= self.high]
        d_low = [i for i, s in enumerate(scores) if self.low < s < self.high]
        confirmed = [t for t in self.tracks if t.id > 0]
        pairs, t_remain, d_remain = match(confirmed, d_high, boxes, scores, self.fuse,
                                          self.match_thresh)
        for t, d in pairs:
            self.hit(t, d, boxes)
        t_tracked = [t for t in t_remain if not t.lost]
        pairs, t_re_remain, _ = match(t_tracked, d_low, boxes, scores, False, 0.5)
        for t, d in pairs:
            self.hit(t, d, boxes)
        for t in t_re_remain:
            t.lost = True
        tentative = [t for t in self.tracks if t.id == 0]
        pairs, dropped, d_remain = match(tentative, d_remain, boxes, scores, self.fuse, 0.7)
        for t, d in pairs:
            self.hit(t, d, boxes)
        self.tracks = [t for t in self.tracks if all(t is not x for x in dropped)
                       and self.frame - t.last <= self.buffer]
        for d in d_remain:
            if scores[d] >= self.new:
                t = Track(measure(boxes[d], self.xywh), self.xywh, self.frame)
                t.det = d
                if self.frame == 1:
                    t.id, self.next_id = self.next_id, self.next_id + 1
                self.tracks.append(t)
        gone = []
        for a in self.tracks:
            for b in self.tracks:
                if not a.lost and b.lost and iou(box_of(a.kf.x, self.xywh),
                                                 box_of(b.kf.x, self.xywh)) > 0.85:
                    gone.append(b if self.frame - a.start >= self.frame - b.start else a)
        self.tracks = [t for t in self.tracks if all(t is not g for g in gone)]
        return {t.det: t.id for t in self.tracks if t.det >= 0 and t.id > 0}
