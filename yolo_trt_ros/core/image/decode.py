"""Compressed images (CompressedImage payloads, image files) decoded on the CPU with OpenCV.

The size is read from the image header first (header.py): an image above max_pixels is
refused before the decoder allocates its pixels. What the C decoders print is captured
(capture.py) and turned into the error's reason.
"""
from __future__ import annotations

import re

import cv2
import numpy as np

from yolo_trt_ros.core.defaults import MAX_IMAGE_PIXELS
from yolo_trt_ros.core.errors import ImageError
from yolo_trt_ros.core.files import IMAGE_FILE_LIMIT, FileError, read_regular
from yolo_trt_ros.core.image.admission import admit
from yolo_trt_ros.core.image.buffers import BGR, BGRA, GRAY, ImageView
from yolo_trt_ros.core.image.capture import decoder_messages

# Warnings about bytes around complete image data: many USB (MJPEG) webcams trail every
# frame with padding libjpeg reports this way, and the pixels are whole. Refusing them would
# refuse every frame of such a camera, so these are dropped quietly; every other decoder
# warning (truncated or damaged data, filled in with grey) refuses the frame.
BENIGN_DECODER_WARNING = re.compile(r'extraneous bytes before marker 0xd9')


def decode_compressed(data, fmt: str = '', max_pixels: int = MAX_IMAGE_PIXELS) -> ImageView:
    """Decode a sensor_msgs/CompressedImage payload (JPEG, PNG, BMP, WebP) to BGR or gray.

    Its size and decoding cost are judged from its headers first (admission.admit): an
    image above max_pixels ('too_large'), too costly to decode ('too_costly') or of a
    codec or variant we do not decode ('format') is refused before the decoder allocates
    anything. An image the decoder warns about (corrupt or truncated data, which libjpeg
    would fill in with grey) is refused too ('corrupt'), with the decoder's words in the
    message; nothing is printed. Trailing bytes after the last scan (MJPEG webcams) are not
    damage and pass. fmt is the message's format string, for the error message only.
    """
    admit(data, max_pixels, fmt)
    buf = np.frombuffer(data, dtype=np.uint8)
    what = f"compressed image ({buf.size} bytes, format '{fmt}')"
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
    """Read an image file from disk as BGR; ImageError with the path if it cannot (a pipe
    or a device is refused at once, a file above IMAGE_FILE_LIMIT before it is read)."""
    try:
        data = read_regular(path, IMAGE_FILE_LIMIT, 'image')
    except FileError as exc:
        raise ImageError(str(exc), 'read') from None
    try:
        return decode_compressed(data, max_pixels=max_pixels)
    except ImageError as exc:
        raise ImageError(f'{path}: {exc}', exc.cause) from exc
