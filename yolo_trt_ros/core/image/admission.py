"""Whether a compressed image may be decoded at all: its size and its decoding cost, judged
from its headers (header.survey) before any decoder runs, on the CPU and the GPU path alike.

The limits follow max_image_pixels (default 64 MP), so one parameter scales them all:
- pixels: width x height <= max_pixels ('too_large');
- memory: the decoded samples (a 16-bit PNG counts 2 bytes a sample, an interlaced PNG
  twice) and a progressive JPEG's coefficient buffer (2 bytes a sample) <= 4 bytes a
  pixel of the largest frame ('too_costly');
- work: at most MAX_JPEG_SCANS scans (as libjpeg-turbo's and nvImageCodec's scan limits),
  and pixels x channels x scans <= 16 x max_pixels for a progressive JPEG ('too_costly');
  at most MAX_JPEG_SEGMENTS marker segments, which the header walk reads one by one
  ('too_costly': a 2 MB frame can hold a million);
- what a decoder here cannot decode right: 12-bit JPEG, a side over 65500 pixels (libjpeg's
  limit), RLE or embedded-codec BMP ('format').
"""
from __future__ import annotations

import numpy as np

from yolo_trt_ros.core.errors import ImageError
from yolo_trt_ros.core.image.buffers import check_pixels
from yolo_trt_ros.core.image.header import (
    BMP,
    CODECS,
    JPEG,
    PNG,
    Survey,
    codec_of,
    png_chunk_error,
    survey,
)

MAX_JPEG_SCANS = 64  # a progressive encoder writes ~10; nvImageCodec refuses above 256
# A camera's JPEG has about ten segments, a progressive one ~25; an ICC profile is split
# over at most 255 APP2 segments. Reading 1000 costs the walk ~2 ms on the dev machine.
MAX_JPEG_SEGMENTS = 1000
BYTES_PER_PIXEL_BUDGET = 4  # decoded memory: an RGBA8 frame of max_pixels
SCAN_WORK_BUDGET = 16  # pixels x channels x scans, in units of max_pixels
LIBJPEG_MAX_DIMENSION = 65500  # JPEG_MAX_DIMENSION in libjpeg's jmorecfg.h
_BMP_COMPRESSION = {1: 'RLE8', 2: 'RLE4', 4: 'embedded JPEG', 5: 'embedded PNG'}


def _costly(what: str, detail: str) -> ImageError:
    return ImageError(f'decoding {what} would cost too much: {detail} (limits scale with '
                      f'max_image_pixels)', 'too_costly')


def _check_jpeg(s: Survey, what: str, max_pixels: int) -> None:
    if s.bits != 8:
        raise ImageError(f'cannot decode {what}: {s.bits}-bit JPEG (sample precision '
                         f'{s.bits}); only 8-bit JPEG is supported', 'format')
    if max(s.width, s.height) > LIBJPEG_MAX_DIMENSION:
        raise ImageError(f'cannot decode {what}: {s.width}x{s.height}, libjpeg decodes at '
                         f'most {LIBJPEG_MAX_DIMENSION} pixels a side', 'too_large')
    if s.channels not in (1, 3, 4):
        raise ImageError(f'cannot decode {what}: {s.channels} colour components', 'format')
    if s.scans > MAX_JPEG_SCANS:
        raise _costly(what, f'more than {MAX_JPEG_SCANS} scans')
    if s.progressive:
        samples = s.width * s.height * s.channels
        if samples * 2 > BYTES_PER_PIXEL_BUDGET * max_pixels:
            raise _costly(what, f'a progressive {s.width}x{s.height}x{s.channels} JPEG needs '
                                f'{samples * 2 >> 20} MB of coefficients')
        if samples * s.scans > SCAN_WORK_BUDGET * max_pixels:
            raise _costly(what, f'{s.scans} progressive scans over {s.width}x{s.height}x'
                                f'{s.channels}')


def _check_png(s: Survey, what: str, max_pixels: int, buf: np.ndarray, chunks: bool) -> None:
    decoded = s.width * s.height * max(s.channels, 1) * max(s.bits, 8) // 8
    work = decoded * (2 if s.interlaced else 1)
    if work > BYTES_PER_PIXEL_BUDGET * max_pixels:
        raise _costly(what, f'{s.width}x{s.height}, {s.channels} channels of {s.bits} bits'
                            f'{", interlaced" if s.interlaced else ""}: {decoded >> 20} MB '
                            f'decoded')
    damage = png_chunk_error(buf) if chunks else None
    if damage:
        raise ImageError(f'cannot decode {what}: {damage}', 'decode')


def admit(data, max_pixels: int, fmt: str = '', png_chunks: bool = True) -> Survey:
    """The image's survey if it may be decoded, else ImageError with the reason: 'empty',
    'format' (not JPEG, PNG, BMP or WebP, or a variant we refuse), 'decode' (headers
    unreadable), 'too_large' or 'too_costly'. fmt: the message's format string, for the
    error message only (the codec is recognised from the bytes). png_chunks False: leave a
    PNG's chunk list (one Python step a chunk: a 12 MB PNG of empty chunks costs 0.2 s)
    to the process that decodes it, which judges it again (decoding.CameraDecoders)."""
    try:
        buf = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        raise ImageError(f'compressed image data is not a byte buffer: {exc}', 'size') from exc
    if buf.size == 0:
        raise ImageError('empty compressed image', 'empty')
    # fmt: what a CompressedImage message says; a file has none to show
    what = f"compressed image ({buf.size} bytes{f', format {fmt!r}' if fmt else ''})"
    codec = codec_of(buf)
    if codec is None:
        raise ImageError(f'cannot decode {what}: not {", ".join(CODECS[:-1])} or {CODECS[-1]}',
                         'format')
    s = survey(buf, MAX_JPEG_SCANS, MAX_JPEG_SEGMENTS)
    if s is None:
        raise ImageError(f'cannot decode {what}: corrupt or unsupported codec (no readable '
                         f'{codec} header)', 'decode')
    if s.segments > MAX_JPEG_SEGMENTS:  # the walk stopped there: its other fields are partial
        raise _costly(what, f'more than {MAX_JPEG_SEGMENTS} marker segments')
    check_pixels(s.width, s.height, max_pixels, f'{codec} header says ')
    if codec == JPEG:
        _check_jpeg(s, what, max_pixels)
    elif codec == PNG:
        _check_png(s, what, max_pixels, buf, png_chunks)
    elif codec == BMP and s.compression in _BMP_COMPRESSION:
        raise ImageError(f'cannot decode {what}: {_BMP_COMPRESSION[s.compression]}-compressed '
                         f'BMP is not supported (decoders disagree on it)', 'format')
    return s
