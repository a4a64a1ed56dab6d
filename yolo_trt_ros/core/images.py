"""Image buffers (as ROS messages carry them) to HWC uint8 numpy arrays.

Zero copy where the layout allows: 8-bit encodings become a strided view of the
caller's buffer, row padding included. mono16 and the YUV 4:2:2 encodings need a
conversion and return a new array.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .errors import ImageError

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


@dataclass(frozen=True)
class ImageView:
    """pixels: (H, W, C) uint8, C in {1, 3, 4}; order names the channels."""

    pixels: np.ndarray
    order: str

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def view_image(data, height: int, width: int, encoding: str, step: int,
               is_bigendian: bool = False) -> ImageView:
    """Interpret a raw image buffer (sensor_msgs/Image layout) without copying.

    data: any object with the buffer protocol (bytes, array.array, memoryview, ndarray),
    exactly height * step bytes. Raises ImageError naming the problem otherwise.
    """
    spec = _ENCODINGS.get(encoding)
    if spec is None:
        raise ImageError(f"unsupported encoding '{encoding}'; supported: "
                         + ', '.join(SUPPORTED_ENCODINGS), 'encoding')
    if height <= 0 or width <= 0:
        raise ImageError(f'empty image: {width}x{height}', 'empty')
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


def decode_compressed(data, fmt: str = '') -> ImageView:
    """Decode a sensor_msgs/CompressedImage payload (JPEG, PNG, ...) to BGR or gray.

    fmt is the message's format string, used only in the error message: the codec is
    recognised from the bytes themselves.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        raise ImageError('empty compressed image', 'empty')
    pixels = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ImageError(f"cannot decode compressed image ({buf.size} bytes, format "
                         f"'{fmt}'): corrupt or unsupported codec", 'decode')
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.ndim == 2:
        return ImageView(pixels[:, :, None], GRAY)
    return ImageView(pixels, BGRA if pixels.shape[2] == 4 else BGR)


def read_image(path: str) -> ImageView:
    """Read an image file from disk as BGR; ImageError with the path if it cannot."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as exc:
        raise ImageError(f'cannot read image {path}: {exc.strerror}') from exc
    try:
        return decode_compressed(data)
    except ImageError as exc:
        raise ImageError(f'{path}: {exc}') from exc


def to_bgr(view: ImageView) -> np.ndarray:
    """(H, W, 3) uint8 BGR copy of any ImageView, for drawing and saving."""
    codes = {RGB: cv2.COLOR_RGB2BGR, RGBA: cv2.COLOR_RGBA2BGR, BGRA: cv2.COLOR_BGRA2BGR,
             GRAY: cv2.COLOR_GRAY2BGR}
    if view.order == BGR:
        return np.array(view.pixels, order='C', copy=True)  # writable, even over read-only bytes
    return cv2.cvtColor(np.ascontiguousarray(view.pixels), codes[view.order])
