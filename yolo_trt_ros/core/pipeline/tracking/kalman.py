"""A constant-velocity Kalman filter over boxes, for many tracks at once.

The state is a box and its velocity, 8 values: (cx, cy, a, h) and their rates for ByteTrack
(the SORT/DeepSORT parameterisation the ByteTrack paper builds on: centre, aspect ratio
w/h, height), (cx, cy, w, h) and their rates for BoT-SORT, whose paper estimates width and
height directly because the aspect ratio estimate fits boxes badly. Process and
measurement noise scale with the box size (its height, or width and height), so a near,
large object may move more pixels per frame than a far one.

Every function works on a stack of tracks, (N, 8) means and (N, 8, 8) covariances, with
one numpy call per step instead of one per track: 50 tracks cost what one does.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

# Noise as a fraction of the box size per frame: position, velocity (DeepSORT's values).
STD_POSITION = 1.0 / 20
STD_VELOCITY = 1.0 / 160

# xyxy <-> (cx, cy, w, h) are linear maps: one matrix product each, not four columns.
_TO_CXCYWH = np.array([[0.5, 0, -1, 0], [0, 0.5, 0, -1], [0.5, 0, 1, 0], [0, 0.5, 0, 1]])
_TO_XYXY = np.linalg.inv(_TO_CXCYWH)
# The 2x2 blocks' adjugate signs, and the partner of each index within its pair.
_SIGNS = np.kron(np.eye(2), [[1.0, -1.0], [-1.0, 1.0]])
_PAIR = [1, 0, 3, 2]
_DIAG8 = slice(None, None, 9)  # the diagonal of a flattened 8x8 matrix
_DIAG4 = slice(None, None, 5)


def _inverse_2x2_blocks(s: np.ndarray) -> np.ndarray:
    """Inverse of (N, 4, 4) matrices made of two 2x2 diagonal blocks, exactly.

    The innovation covariance always has that shape: the state splits into two groups that
    no step ever mixes, the centre with its velocity (cx, cy, vx, vy) and the size with its
    rate (a or w, h, and their rates): the motion model pairs each value with its own rate,
    the camera warp turns (x, y) pairs within a group, and the noise is diagonal. The
    measured part of the covariance is therefore block diagonal, and closed-form 2x2
    inverses (adjugate / determinant) replace a batched LAPACK solve, which cost a third of
    a tracker frame at 50 tracks."""
    diag = s.reshape(len(s), 16)[:, _DIAG4]  # a, d of each block: (N, 4)
    det = diag * diag[:, _PAIR] - s[:, _PAIR, range(4)] * s[:, range(4), _PAIR]
    adj = s[:, _PAIR][:, :, _PAIR].swapaxes(1, 2) * _SIGNS  # [[d, -b], [-c, a]] per block
    return adj / det[:, :, None]


def xyxy_to_measurement(boxes: np.ndarray, kind: str) -> np.ndarray:
    """boxes: (N, 4) xyxy -> (N, 4) float64 measurements, (cx, cy, a, h) for 'xyah' or
    (cx, cy, w, h) for 'xywh'."""
    z = np.asarray(boxes, np.float64) @ _TO_CXCYWH
    if kind == 'xyah':
        z[:, 2] /= np.maximum(z[:, 3], 1e-6)
    return z


def measurement_to_xyxy(z: np.ndarray, kind: str) -> np.ndarray:
    """(N, >=4) states or measurements -> (N, 4) float64 xyxy."""
    box = z[:, :4]
    if kind == 'xyah':
        box = box.copy()
        box[:, 2] *= box[:, 3]
    return box @ _TO_XYXY


@functools.cache
def _noise_weights(kind: str, position: float, velocity: float,
                   aspect: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(8,) weights of the sizes and (8,) constants of a noise vector (made once)."""
    weights = np.array([position] * 4 + [velocity] * 4)
    constants = np.zeros(8)
    if kind == 'xyah':
        weights[[2, 6]] = 0.0
        constants[[2, 6]] = aspect
    return weights, constants


@dataclass(frozen=True)
class KalmanFilter:
    """kind: 'xyah' (ByteTrack) or 'xywh' (BoT-SORT).

    Noise standard deviations are size x weight (+ a constant for the aspect ratio, whose
    noise does not scale): position and velocity weights per state index, and the index of
    the size each scales with (h for all but the aspect ratio in xyah; w, h, w, h in xywh).
    """

    kind: str = 'xyah'

    def _std(self, mean: np.ndarray, position: float, velocity: float, aspect: tuple
             ) -> np.ndarray:
        """(N, 8) standard deviations: the weights times the sizes, plus the constants."""
        weights, constants = _noise_weights(self.kind, position, velocity, aspect)
        if self.kind == 'xyah':
            return mean[:, 3:4] * weights + constants
        return mean[:, [2, 3, 2, 3, 2, 3, 2, 3]] * weights

    def initiate(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Measurements (N, 4) -> new tracks: means (N, 8) at rest, covariances (N, 8, 8)
        with the velocity unknown (wide)."""
        n = len(z)
        mean = np.concatenate([z, np.zeros((n, 4))], axis=1)
        cov = np.zeros((n, 8, 8))
        cov.reshape(n, 64)[:, _DIAG8] = self._std(mean if self.kind == 'xywh' else z,
                                                  2 * STD_POSITION, 10 * STD_VELOCITY,
                                                  (1e-2, 1e-5)) ** 2
        return mean, cov

    def predict(self, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame ahead for every track (new arrays): x += v; P = F P F^T + Q, where
        F P F^T adds the velocity rows and columns onto the position ones."""
        q = self._std(mean, STD_POSITION, STD_VELOCITY, (1e-2, 1e-5)) ** 2
        mean = mean.copy()
        mean[:, :4] += mean[:, 4:]
        cov = cov.copy()
        cov[:, :4] += cov[:, 4:]
        cov[:, :, :4] += cov[:, :, 4:]
        cov.reshape(len(cov), 64)[:, _DIAG8] += q
        return mean, cov

    def update(self, mean: np.ndarray, cov: np.ndarray,
               z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Correct tracks (N, 8), (N, 8, 8) with their measurements z (N, 4)."""
        r = self._std(mean, STD_POSITION, 0.0, (1e-1, 0.0))[:, :4] ** 2
        s = cov[:, :4, :4].copy()  # innovation covariance H P H^T + R (H picks the box)
        s.reshape(len(s), 16)[:, _DIAG4] += r
        gain = cov[:, :, :4] @ _inverse_2x2_blocks(s)  # P H^T S^-1
        mean = mean + (gain @ (z - mean[:, :4])[:, :, None])[:, :, 0]
        cov = cov - gain @ cov[:, :4, :]  # (I - K H) P
        return mean, cov

    def warp(self, mean: np.ndarray, cov: np.ndarray,
             affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Move predicted tracks with the camera (BoT-SORT's camera-motion compensation):
        affine (2, 3) maps the previous frame's pixels to this frame's. The rotation-scale
        part turns each (x, y) pair of the state (centre, size, and their rates) and the
        translation moves the centre only; the covariance turns with them. Only meaningful
        for 'xywh', where every pair of the state is an (x, y) pair."""
        r, t = affine[:, :2], affine[:, 2]
        m8 = np.kron(np.eye(4), r)  # R on each of the four (x, y) pairs
        mean = mean @ m8.T
        mean[:, :2] += t
        cov = m8 @ cov @ m8.T
        return mean, cov


class PairwiseKalmanFilter:
    """The 'xyah' filter of ByteTrack in the form its matrices reduce to: four independent
    (value, rate) filters, one per box coordinate. With diagonal noise, a motion model that
    pairs each value with its own rate, a measurement of the values alone and no camera
    warp, the covariance never couples two coordinates, so each track's 8x8 covariance is
    four 2x2 ones: stored as (N, 4, 3) = (var value, covariance, var rate). The same
    numbers as KalmanFilter('xyah') (test_tracking.py checks), in a third of the time."""

    kind = 'xyah'
    _WP = np.array([STD_POSITION, STD_POSITION, 0.0, STD_POSITION])
    _WV = np.array([STD_VELOCITY, STD_VELOCITY, 0.0, STD_VELOCITY])

    def initiate(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, h = len(z), z[:, 3:4]
        cov = np.zeros((n, 4, 3))
        cov[:, :, 0] = (2 * h * self._WP + [0, 0, 1e-2, 0]) ** 2
        cov[:, :, 2] = (10 * h * self._WV + [0, 0, 1e-5, 0]) ** 2
        return np.concatenate([z, np.zeros((n, 4))], axis=1), cov

    def predict(self, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = mean[:, 3:4]
        mean = mean.copy()
        mean[:, :4] += mean[:, 4:]
        pxx, pxv, pvv = cov[:, :, 0], cov[:, :, 1], cov[:, :, 2]
        out = np.empty_like(cov)
        out[:, :, 0] = pxx + 2 * pxv + pvv + (h * self._WP + [0, 0, 1e-2, 0]) ** 2
        out[:, :, 1] = pxv + pvv
        out[:, :, 2] = pvv + (h * self._WV + [0, 0, 1e-5, 0]) ** 2
        return mean, out

    def update(self, mean: np.ndarray, cov: np.ndarray,
               z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = (mean[:, 3:4] * self._WP + [0, 0, 1e-1, 0]) ** 2
        pxx, pxv, pvv = cov[:, :, 0], cov[:, :, 1], cov[:, :, 2]
        s = pxx + r
        kx, kv = pxx / s, pxv / s  # the gain of the value and of the rate
        innovation = z - mean[:, :4]
        mean = mean.copy()
        mean[:, :4] += kx * innovation
        mean[:, 4:] += kv * innovation
        out = np.empty_like(cov)
        out[:, :, 0] = pxx * (1 - kx)
        out[:, :, 1] = pxv * (1 - kx)
        out[:, :, 2] = pvv - kv * pxv
        return mean, out

    def warp(self, mean: np.ndarray, cov: np.ndarray,
             affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError('camera motion needs the xywh filter (BoT-SORT)')
