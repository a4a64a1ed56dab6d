"""The compressed-frame fuzzer of test_fuzz.py, run in a child process whose OpenCV and
address space are capped: JPEG/PNG/BMP/WebP bytes mutated (bit flips, overwrites, cuts,
insertions, header sizes) through decode_compressed, against OpenCV itself."""
from __future__ import annotations

import os
import tempfile

import cv2
import numpy as np

from yolo_trt_ros.core.errors import ImageError
from yolo_trt_ros.core.image.buffers import IMAGE_ERROR_CAUSES
from yolo_trt_ros.core.image.decode import BENIGN_DECODER_WARNING, decode_compressed
from yolo_trt_ros.core.image.header import image_size

REFERENCE_MAX_PIXELS = 100_000  # the child's OpenCV limit (OPENCV_IO_MAX_IMAGE_PIXELS)


def _sources() -> list[bytes]:
    rng = np.random.default_rng(5)
    colour = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    colour = cv2.GaussianBlur(colour, (5, 5), 0)  # some structure for the codecs
    alpha = np.dstack([colour, rng.integers(0, 256, (24, 32), dtype=np.uint8)])
    grey16 = rng.integers(0, 65536, (9, 14), dtype=np.uint16)
    encoded = [('.jpg', colour, []), ('.jpg', colour, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
               ('.jpg', colour[:, :, 0], []), ('.png', colour, []), ('.png', alpha, []),
               ('.png', grey16, []), ('.bmp', colour, []), ('.bmp', colour[:, :, 0], []),
               ('.webp', colour, [cv2.IMWRITE_WEBP_QUALITY, 80]),
               ('.webp', alpha, [cv2.IMWRITE_WEBP_QUALITY, 101])]
    out = []
    for ext, pixels, params in encoded:
        ok, data = cv2.imencode(ext, pixels, params)
        assert ok
        out.append(data.tobytes())
    return out


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    kind = int(rng.integers(8))
    at = int(rng.integers(len(b)))
    if kind == 0:  # flip a few bits
        for i in rng.integers(0, len(b), int(rng.integers(1, 6))):
            b[i] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # overwrite a run
        n = int(rng.integers(1, 16))
        b[at:at + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    elif kind == 2:  # cut short
        del b[at:]
    elif kind == 3:  # insert junk
        b[at:at] = rng.integers(0, 256, int(rng.integers(1, 40)), dtype=np.uint8).tobytes()
    elif kind == 4:  # delete a run
        del b[at:at + int(rng.integers(1, 40))]
    elif kind == 5:  # a size field somewhere in the first 40 bytes set to something big
        i = int(rng.integers(2, 40))
        b[i:i + 2] = bytes(rng.integers(0, 256, 2, dtype=np.uint8))
    elif kind == 6:  # the magic only, then noise
        b = b[:4] + bytearray(rng.integers(0, 256, at, dtype=np.uint8).tobytes())
    # kind 7: unchanged, a good frame
    return bytes(b)


def _reference(data: bytes) -> tuple[np.ndarray | None, bytes]:
    """OpenCV's own decode and what it printed on fd 2 meanwhile (captured here with a
    plain redirect, not with the code under test)."""
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            pixels = None
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        return pixels, sink.read()


def compressed_fuzz(seed: int, cases: int) -> dict:
    """Run in the child process: failures found and how often each outcome came."""
    rng = np.random.default_rng(seed)
    sources = _sources()
    failures: list[str] = []
    outcomes: dict[str, int] = {}
    for case in range(cases):
        data = _mutate(sources[case % len(sources)], rng)
        max_pixels = int(rng.choice([REFERENCE_MAX_PIXELS, 500]))
        where = f'case {case} ({len(data)} bytes, head {data[:12].hex()})'
        reference, printed = _reference(data)
        # A frame whose only warning is trailing bytes after complete data (MJPEG webcams)
        # is whole: it must decode, as a clean one must.
        warnings = [line for line in printed.decode(errors="replace").splitlines() if line.strip()]
        good = reference is not None and all(BENIGN_DECODER_WARNING.search(line) for line in warnings)
        try:
            view = decode_compressed(data, 'fuzz', max_pixels=max_pixels)
        except ImageError as exc:
            outcome = exc.cause
            if exc.cause not in IMAGE_ERROR_CAUSES:
                failures.append(f'{where}: unknown cause {exc.cause}')
            size = image_size(data)
            if good and exc.cause != 'too_large' and exc.cause != 'format':
                failures.append(f'{where}: a good frame refused: {exc}')
            if exc.cause == 'too_large' and size is not None and size[0] * size[1] <= max_pixels:
                failures.append(f'{where}: refused as too large at {size}')
        except Exception as exc:  # anything but ImageError is the failure looked for
            outcome = 'other'
            failures.append(f'{where}: {type(exc).__name__}: {exc}')
        else:
            outcome = 'decoded'
            height, width = view.pixels.shape[:2]
            if not good:
                failures.append(f'{where}: decoded what OpenCV warns about: {printed[:80]!r}')
            elif (width, height) != image_size(data) or width * height > max_pixels:
                failures.append(f'{where}: decoded {width}x{height}, header {image_size(data)}')
            elif view.pixels.dtype != np.uint8 or view.pixels.shape[2] not in (1, 3, 4):
                failures.append(f'{where}: pixels {view.pixels.dtype} {view.pixels.shape}')
            elif reference.dtype == np.uint8 and not np.array_equal(
                    view.pixels.reshape(reference.shape), reference):
                failures.append(f'{where}: pixels differ from OpenCV\'s own decode')
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return {'failures': failures[:20], 'outcomes': outcomes}
