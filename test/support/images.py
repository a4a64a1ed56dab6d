"""Test images: hostile ones made from valid ones, and camera-like frames."""
from __future__ import annotations

import resource
import zlib

import cv2
import numpy as np

COLOUR = np.random.default_rng(11).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def encode(ext: str, pixels: np.ndarray = COLOUR, *params: int) -> bytes:
    ok, data = cv2.imencode(ext, pixels, list(params))
    assert ok
    return data.tobytes()


def claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """jpeg with its frame header (SOF0) rewritten to claim width x height: a decoder that
    believes it allocates the whole claimed image."""
    sof = jpeg.index(b'\xff\xc0')  # marker, length (2), precision (1), height, width
    return jpeg[:sof + 5] + height.to_bytes(2, 'big') + width.to_bytes(2, 'big') + jpeg[sof + 9:]


def jpeg_with_size(width: int, height: int, length: int | None = None) -> bytes:
    """A valid small JPEG whose frame header (SOF0) claims width x height, cut to length."""
    return claiming(encode('.jpg'), width, height)[:length]


def png_with_size(width: int, height: int) -> bytes:
    """A valid small PNG whose IHDR claims width x height, CRC fixed so libpng reads it."""
    data = bytearray(encode('.png'))
    data[16:24] = width.to_bytes(4, 'big') + height.to_bytes(4, 'big')
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, 'big')
    return bytes(data)


def corrupt_jpegs(source: bytes, count: int) -> list[bytes]:
    """JPEGs libjpeg decodes only with a warning, their scan cut short before EOI
    ('premature end of data segment'): the missing rows come out grey."""
    rng = np.random.default_rng(20)
    scan = source.index(b'\xff\xda') + 20
    return [source[:int(rng.integers(scan, len(source) - 2))] + b'\xff\xd9'
            for _ in range(count)]


def trailing_junk_jpegs(source: bytes, count: int) -> list[bytes]:
    """Complete JPEGs with junk between the last scan and EOI, as many MJPEG webcams send
    ('N extraneous bytes before marker 0xd9'): the pixels are whole."""
    rng = np.random.default_rng(21)
    return [source[:-2] + rng.integers(1, 255, int(rng.integers(1, 200)),
                                       dtype=np.uint8).tobytes() + b'\xff\xd9'
            for _ in range(count)]


def limit_memory(extra: int = 1 << 30) -> None:
    """Allow this process `extra` more bytes of address space: a reference decode that
    believes a hostile length (a PNG chunk of 4 GB) fails at once instead of paging."""
    with open('/proc/self/status') as status:
        vm_kb = int(next(line for line in status if line.startswith('VmSize')).split()[1])
    resource.setrlimit(resource.RLIMIT_AS, (vm_kb * 1024 + extra,) * 2)


def camera_like(h: int, w: int, channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth content plus noise: like a camera, and hard on interpolation at edges.
    yy, xx = np.mgrid[0:h, 0:w]
    base = (np.sin(xx / 7.0) + np.cos(yy / 5.0)) * 60 + 128
    img = base[..., None] + rng.normal(0, 25, (h, w, channels))
    return np.clip(img, 0, 255).astype(np.uint8)
