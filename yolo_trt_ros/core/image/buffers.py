"""Image buffers (as ROS messages carry them) to HWC uint8 numpy arrays.

Zero copy where the layout allows: 8-bit encodings become a strided view of the
caller's buffer, row padding included. mono16 and the YUV 4:2:2 encodings need a
conversion and return a new array. A frame above max_pixels is refused (cause
'too_large') before anything is read; compressed images: decode.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from yolo_trt_ros.core.defaults import MAX_IMAGE_PIXELS
from yolo_trt_ros.core.errors import ImageError

# The causes an ImageError from this module carries, for counting bad frames.
IMAGE_ERROR_CAUSES = ('encoding', 'empty', 'too_large', 'too_costly', 'too_slow', 'step', 'size',
                      'format', 'decode', 'corrupt', 'read')

# Channel orders a pixel array can have; preprocessing maps each to the model's order.
RGB, BGR, RGBA, BGRA, GRAY = 'rgb', 'bgr', 'rgba', 'bgra', 'gray'


@dataclass(frozen=True)
class _Encoding:
    channels: int  # values per pixel in the buffer
    bytes_per_channel: int
    order: str  # channel order of the array handed on


_ENCODINGS: dict[str, _Encoding] = {
    'rgb8': _Encoding(3, 1, RGB),
    'bgr8': _Encoding(3, 1, BGR),
    'rgba8': _Encoding(4, 1, RGBA),
    'bgra8': _Encoding(4, 1, BGRA),
    'mono8': _Encoding(1, 1, GRAY),
    '8UC1': _Encoding(1, 1, GRAY),
    '8UC3': _Encoding(3, 1, BGR),  # cv_bridge's convention for untyped 3-channel data
    'mono16': _Encoding(1, 2, GRAY),
    '16UC1': _Encoding(1, 2, GRAY),
    'yuv422': _Encoding(2, 1, RGB),  # UYVY
    'uyvy': _Encoding(2, 1, RGB),
    'yuv422_yuy2': _Encoding(2, 1, RGB),  # YUYV
    'yuyv': _Encoding(2, 1, RGB),
}
_YUV_CODES = {
    'yuv422': cv2.COLOR_YUV2RGB_UYVY,
    'uyvy': cv2.COLOR_YUV2RGB_UYVY,
    'yuv422_yuy2': cv2.COLOR_YUV2RGB_YUY2,
    'yuyv': cv2.COLOR_YUV2RGB_YUY2,
}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)


class Sized:
    """height and width of an image held as `pixels`, (H, W, ...)."""

    pixels: np.ndarray

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


@dataclass(frozen=True)
class ImageView(Sized):
    """pixels: (H, W, C) uint8, C in {1, 3, 4}; order names the channels."""

    pixels: np.ndarray
    order: str


def check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    """ImageError 'empty' or 'too_large' unless 0 < width x height <= max_pixels."""
    if height <= 0 or width <= 0:
        raise ImageError(f'empty image: {what}{width}x{height}', 'empty')
    if width * height > max_pixels:
        raise ImageError(f'image too large: {what}{width}x{height} = {width * height} pixels, '
                         f'more than max_image_pixels {max_pixels}', 'too_large')


def view_image(data, height: int, width: int, encoding: str, step: int,
               is_bigendian: bool = False, max_pixels: int = MAX_IMAGE_PIXELS) -> ImageView:
    """Interpret a raw image buffer (sensor_msgs/Image layout) without copying.

    data: any object with the buffer protocol (bytes, array.array, memoryview, ndarray),
    exactly height * step bytes. Raises ImageError naming the problem otherwise.
    """
    spec = _ENCODINGS.get(encoding)
    if spec is None:
        raise ImageError(f"unsupported encoding '{encoding}'; supported: "
                         + ', '.join(SUPPORTED_ENCODINGS), 'encoding')
    check_pixels(width, height, max_pixels, '')
    row_bytes = width * spec.channels * spec.bytes_per_channel
    if step < row_bytes:
        raise ImageError(f'step {step} is smaller than width {width} x {spec.channels} '
                         f'channels x {spec.bytes_per_channel} bytes = {row_bytes}', 'step')
    try:
        flat = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        raise ImageError(f'image data is not a byte buffer: {exc}', 'size') from exc
    if flat.size != height * step:
        raise ImageError(f'buffer holds {flat.size} bytes, expected height {height} x '
                         f'step {step} = {height * step} ({encoding} {width}x{height})', 'size')

    rows = flat.reshape(height, step)[:, :row_bytes]
    if spec.bytes_per_channel == 2:
        words = rows.view('>u2' if is_bigendian else '<u2')
        # Keep the 8 most significant bits: a fixed scale, so brightness is comparable
        # across frames (a per-frame min/max stretch would flicker).
        return ImageView((words >> 8).astype(np.uint8).reshape(height, width, 1), spec.order)
    pixels = rows.reshape(height, width, spec.channels)
    if encoding in _YUV_CODES:
        if width % 2:
            raise ImageError(f'{encoding} needs an even width, got {width}', 'size')
        return ImageView(cv2.cvtColor(pixels, _YUV_CODES[encoding]), spec.order)
    return ImageView(pixels, spec.order)


def to_bgr(view: ImageView) -> np.ndarray:
    """(H, W, 3) uint8 BGR copy of any ImageView, for drawing and saving."""
    codes = {RGB: cv2.COLOR_RGB2BGR, RGBA: cv2.COLOR_RGBA2BGR, BGRA: cv2.COLOR_BGRA2BGR,
             GRAY: cv2.COLOR_GRAY2BGR}
    if view.order == BGR:
        return np.array(view.pixels, order='C', copy=True)  # writable, even over read-only bytes
    return cv2.cvtColor(np.ascontiguousarray(view.pixels), codes[view.order])
