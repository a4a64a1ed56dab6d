"""Camera-motion compensation for BoT-SORT: how the image moved since the last frame.

As the BoT-SORT paper describes it: corners found in the previous frame are followed into
this one with sparse (pyramidal Lucas-Kanade) optical flow, and an affine transform
(rotation, uniform scale, translation) is fitted to the moved points with RANSAC, so the
points on moving objects fall out as outliers and the background's motion remains. The
frame is worked on in grey, shrunk to at most WORK_SIDE pixels on its long side: the
motion of the whole image needs no fine detail, and the cost stays about the same for any
camera.
"""
from __future__ import annotations

import cv2
import numpy as np

WORK_SIDE = 480
MAX_CORNERS = 200
# Lucas-Kanade window and pyramid depth: +-30 px per frame at the working size, which is
# 120 px at 1080p, more than a camera pans between two frames of a live stream.
LK_WINDOW, LK_LEVELS = (15, 15), 2
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def grey_for_cmc(pixels: np.ndarray, order: str) -> tuple[np.ndarray, float]:
    """(H, W, C) uint8 in channel order `order` ('bgr', 'rgb', 'bgra', 'rgba', 'gray') ->
    (small grey uint8 image, original pixels per small pixel)."""
    h, w = pixels.shape[:2]
    step = max(1, -(-max(h, w) // WORK_SIDE))  # ceil
    small = np.ascontiguousarray(pixels[::step, ::step])
    if small.ndim == 3 and small.shape[2] > 1:
        codes = {'bgr': cv2.COLOR_BGR2GRAY, 'rgb': cv2.COLOR_RGB2GRAY,
                 'bgra': cv2.COLOR_BGRA2GRAY, 'rgba': cv2.COLOR_RGBA2GRAY}
        small = cv2.cvtColor(small, codes[order])
    elif small.ndim == 3:
        small = small[:, :, 0]
    return np.ascontiguousarray(small), float(step)


class SparseFlowCMC:
    """estimate(grey, scale) -> the (2, 3) affine from the previous frame's pixels to this
    one's, in original-image pixels; identity on the first frame, after a change of frame
    size, or where too few points could be followed."""

    def __init__(self) -> None:
        self._prev: np.ndarray | None = None
        self._points: np.ndarray | None = None

    def reset(self) -> None:
        self._prev = self._points = None

    def estimate(self, grey: np.ndarray, scale: float = 1.0) -> np.ndarray:
        prev, points = self._prev, self._points
        self._prev = grey
        self._points = cv2.goodFeaturesToTrack(grey, MAX_CORNERS, qualityLevel=0.01,
                                               minDistance=8, blockSize=3)
        if prev is None or points is None or prev.shape != grey.shape or len(points) < 8:
            return IDENTITY.copy()
        moved, status, _ = cv2.calcOpticalFlowPyrLK(prev, grey, points, None, winSize=LK_WINDOW,
                                                    maxLevel=LK_LEVELS)
        ok = status.ravel() == 1
        if ok.sum() < 8:
            return IDENTITY.copy()
        affine, inliers = cv2.estimateAffinePartial2D(points[ok], moved[ok], method=cv2.RANSAC,
                                                      ransacReprojThreshold=1.0)
        if affine is None or inliers is None or inliers.sum() < 6:
            return IDENTITY.copy()
        affine = affine.astype(np.float64)
        affine[:, 2] *= scale  # translation back in original-image pixels
        return affine
