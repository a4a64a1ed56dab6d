"""Test images: hostile ones made from valid ones, and camera-like frames."""
from __future__ import annotations

import resource
import struct
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


def _jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment of a JPEG, a scan's entropy-coded data included."""
    i, out = 2, []
    while i < len(data):
        marker = data[i + 1]
        if marker == 0xD9:
            out.append((marker, i, i + 2))
            break
        end = i + 2 + int.from_bytes(data[i + 2:i + 4], 'big')
        if marker == 0xDA:
            while True:
                end = data.index(b'\xff', end)
                if data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
        out.append((marker, i, end))
        i = end
    return out


def scan_bomb(side: int = 8000, scans: int = 883) -> bytes:
    """A progressive grey JPEG of side x side whose last scan is repeated until the file has
    `scans` scans: every scan is a pass over the whole image for libjpeg (883 scans of a
    64 MP image took 19 s in the attack that found it); the file stays small."""
    pixels = np.full((side, side), 128, np.uint8)  # flat: every scan is a few bytes
    progressive = encode('.jpg', pixels, cv2.IMWRITE_JPEG_PROGRESSIVE, 1,
                         cv2.IMWRITE_JPEG_QUALITY, 50)
    sos = [(start, end) for marker, start, end in _jpeg_segments(progressive) if marker == 0xDA]
    last = progressive[sos[-1][0]:sos[-1][1]]
    return progressive[:sos[-1][1]] + last * (scans - len(sos)) + b'\xff\xd9'


def marker_storm(count: int, segment: bytes = b'\xff\x01') -> bytes:
    """A small JPEG that decodes cleanly, with `count` empty marker segments before its
    first scan: TEM markers (2 bytes, no length: a 2 MB frame holds a million) or e.g.
    empty comments (b'\xff\xfe\x00\x02'). libjpeg reads each in a few instructions; a
    header reader that loops over them in Python pays microseconds each."""
    base = encode('.jpg', COLOUR)
    sos = base.index(b'\xff\xda')
    return base[:sos] + segment * count + base[sos:]


def skipped_marker_segments(size: int) -> bytes:
    """SOI, then APP0 segments of 32 KB whose payloads are nothing but TEM markers: a
    header walk skips each payload, so a search that lists every marker of a block ahead
    of it lists 16 000 for nothing, segment after segment."""
    body = b'\xff\x01' * 16388
    segment = b'\xff\xe0' + (len(body) + 2).to_bytes(2, 'big') + body
    return b'\xff\xd8' + segment * (size // len(segment))


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack('>I', len(body)) + kind + body +
            struct.pack('>I', zlib.crc32(kind + body)))


def sixteen_bit_rgba_png(side: int = 8000) -> bytes:
    """A valid side x side PNG of 16-bit RGBA (8 bytes a pixel decoded: 512 MB at 8000),
    made row by row so that the test itself never holds the pixels."""
    squash = zlib.compressobj(9)
    row = bytes(1 + side * 8)  # filter byte 0, then zeros
    data = b''.join(squash.compress(row) for _ in range(side)) + squash.flush()
    header = struct.pack('>IIBBBBB', side, side, 16, 6, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + png_chunk(b'IHDR', header) + png_chunk(b'IDAT', data) +
            png_chunk(b'IEND', b''))


def rle8_bmp(index: np.ndarray, palette: np.ndarray) -> bytes:
    """An 8-bit palette BMP (BI_RLE8): encoded runs of one palette index, a row at a time,
    bottom-up; palette (N, 3) as BGR."""
    h, w = index.shape
    body = bytearray()
    for row in index[::-1]:
        x = 0
        while x < w:
            run = 1
            while x + run < w and run < 255 and row[x + run] == row[x]:
                run += 1
            body += bytes([run, int(row[x])])
            x += run
        body += b'\x00\x00'  # end of line
    body += b'\x00\x01'  # end of bitmap
    colours = b''.join(bytes([int(b), int(g), int(r), 0]) for b, g, r in palette)
    offset = 14 + 40 + len(colours)
    return (b'BM' + struct.pack('<IHHI', offset + len(body), 0, 0, offset) +
            struct.pack('<IiiHHIIiiII', 40, w, h, 1, 8, 1, len(body), 2835, 2835,
                        len(palette), 0) + colours + bytes(body))
