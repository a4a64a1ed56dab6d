"""Image buffers (as ROS messages carry them) to HWC uint8 numpy arrays.

Zero copy where the layout allows: 8-bit encodings become a strided view of the
caller's buffer, row padding included. mono16 and the YUV 4:2:2 encodings need a
conversion and return a new array.

Every entry point refuses images above max_pixels (cause 'too_large'); compressed images
are measured from their header before the decoder allocates anything.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np

from .decoder_log import decoder_messages
from .defaults import MAX_IMAGE_PIXELS
from .errors import ImageError
from .image_header import CODECS, PNG, codec_of, image_size, png_chunk_error

__all__ = ['BGR', 'BGRA', 'GRAY', 'IMAGE_ERROR_CAUSES', 'MAX_IMAGE_PIXELS', 'RGB', 'RGBA',
           'SUPPORTED_ENCODINGS', 'ImageView', 'decode_compressed', 'image_size', 'read_image',
           'to_bgr', 'view_image']

# The causes an ImageError from this module carries, for counting bad frames.
IMAGE_ERROR_CAUSES = ('encoding', 'empty', 'too_large', 'step', 'size', 'format', 'decode',
                      'corrupt', 'read')

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


# Warnings about bytes around complete image data: many USB (MJPEG) webcams trail every
# frame with padding libjpeg reports this way, and the pixels are whole. Refusing them would
# refuse every frame of such a camera, so these are dropped quietly; every other decoder
# warning (truncated or damaged data, filled in with grey) refuses the frame.
BENIGN_DECODER_WARNING = re.compile(r'extraneous bytes before marker 0xd9')


def decode_compressed(data, fmt: str = '', max_pixels: int = MAX_IMAGE_PIXELS) -> ImageView:
    """Decode a sensor_msgs/CompressedImage payload (JPEG, PNG, BMP, WebP) to BGR or gray.

    The size is read from the image header first: an image above max_pixels is refused
    (cause 'too_large') before the decoder allocates its pixels. A codec whose size cannot
    be read that way is refused ('format'). An image the decoder warns about (corrupt or
    truncated data, which libjpeg would fill in with grey) is refused too ('corrupt'), with
    the decoder's words in the message; nothing is printed. Trailing bytes after the last
    scan (MJPEG webcams) are not damage and pass. fmt is the message's format
    string, for the error message only: the codec is recognised from the bytes.
    """
    try:
        buf = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        raise ImageError(f'compressed image data is not a byte buffer: {exc}', 'size') from exc
    if buf.size == 0:
        raise ImageError('empty compressed image', 'empty')
    what = f"compressed image ({buf.size} bytes, format '{fmt}')"
    codec = codec_of(buf)
    if codec is None:
        raise ImageError(f'cannot decode {what}: not {", ".join(CODECS[:-1])} or {CODECS[-1]}',
                         'format')
    size = image_size(buf)
    if size is None:
        raise ImageError(f'cannot decode {what}: corrupt or unsupported codec', 'decode')
    check_pixels(*size, max_pixels, f'{codec} header says ')
    damage = png_chunk_error(buf) if codec == PNG else None
    if damage:
        raise ImageError(f'cannot decode {what}: {damage}', 'decode')
    with decoder_messages() as messages:
        try:
            pixels = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        except cv2.error as exc:  # OpenCV's own checks (limits, unsupported variants)
            messages.append(str(exc).strip().splitlines()[-1])
            pixels = None
    if pixels is None:
        reason = messages[0] if messages else 'corrupt or unsupported codec'
        raise ImageError(f'cannot decode {what}: {reason}', 'decode')
    damage = [m for m in messages if not BENIGN_DECODER_WARNING.search(m)]
    if damage:
        more = f' (and {len(damage) - 1} more)' if len(damage) > 1 else ''
        raise ImageError(f'corrupt {what}: {damage[0]}{more}', 'corrupt')
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.ndim == 2:
        return ImageView(pixels[:, :, None], GRAY)
    return ImageView(pixels, BGRA if pixels.shape[2] == 4 else BGR)


def read_image(path: str, max_pixels: int = MAX_IMAGE_PIXELS) -> ImageView:
    """Read an image file from disk as BGR; ImageError with the path if it cannot."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as exc:
        raise ImageError(f'cannot read image {path}: {exc.strerror}', 'read') from exc
    try:
        return decode_compressed(data, max_pixels=max_pixels)
    except ImageError as exc:
        raise ImageError(f'{path}: {exc}', exc.cause) from exc


def to_bgr(view: ImageView) -> np.ndarray:
    """(H, W, 3) uint8 BGR copy of any ImageView, for drawing and saving."""
    codes = {RGB: cv2.COLOR_RGB2BGR, RGBA: cv2.COLOR_RGBA2BGR, BGRA: cv2.COLOR_BGRA2BGR,
             GRAY: cv2.COLOR_GRAY2BGR}
    if view.order == BGR:
        return np.array(view.pixels, order='C', copy=True)  # writable, even over read-only bytes
    return cv2.cvtColor(np.ascontiguousarray(view.pixels), codes[view.order])
