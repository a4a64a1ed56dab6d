"""Hostile images made from valid ones, shared by the image and CLI tests."""
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


def jpeg_with_size(width: int, height: int, length: int | None = None) -> bytes:
    """A valid small JPEG whose frame header (SOF0) claims width x height, cut to length."""
    data = bytearray(encode('.jpg'))
    sof = data.index(b'\xff\xc0')
    data[sof + 5:sof + 9] = height.to_bytes(2, 'big') + width.to_bytes(2, 'big')
    return bytes(data[:length])


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
