"""Seeded fuzzing of the image entry points (issue 11): every bad frame raises ImageError
with a known cause, never another exception, and every good frame decodes, unchanged.

Raw frames: random encodings, sizes, steps, buffer types and lengths through view_image,
against an independent statement of what a valid sensor_msgs/Image is. Compressed
frames: JPEG/PNG/BMP/WebP bytes mutated (bit flips, overwrites, cuts, insertions, header
sizes) through decode_compressed, against OpenCV itself: a frame that OpenCV decodes
without a warning must come back with the same pixels. That runs in a child process
whose OpenCV may allocate at most 0.1 MP, so a mutated header cannot make the reference
decode take the machine's memory, and whose address space is capped.
"""
from __future__ import annotations

import array
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from yolo_trt_ros.core.errors import ImageError
from yolo_trt_ros.core.images import (
    BENIGN_DECODER_WARNING,
    IMAGE_ERROR_CAUSES,
    decode_compressed,
    image_size,
    view_image,
)

RAW_CASES = 4000
COMPRESSED_CASES = 4000
REFERENCE_MAX_PIXELS = 100_000  # the child's OpenCV limit (OPENCV_IO_MAX_IMAGE_PIXELS)

# (channels, bytes per channel, channels handed on) of each encoding, stated here again
# from REP 104 / sensor_msgs/image_encodings.h rather than taken from the code under test.
LAYOUTS = {'rgb8': (3, 1, 3), 'bgr8': (3, 1, 3), 'rgba8': (4, 1, 4), 'bgra8': (4, 1, 4),
           'mono8': (1, 1, 1), '8UC1': (1, 1, 1), '8UC3': (3, 1, 3), 'mono16': (1, 2, 1),
           '16UC1': (1, 2, 1), 'yuv422': (2, 1, 3), 'uyvy': (2, 1, 3), 'yuv422_yuy2': (2, 1, 3),
           'yuyv': (2, 1, 3)}


def _raw_case(rng: np.random.Generator):
    """(args for view_image, expected (H, W, C) or None where the frame is bad). Each
    field is right most of the time, so good frames and each kind of fault both come."""
    def pick(right, *wrong):
        return right if rng.random() < 0.85 else wrong[int(rng.integers(len(wrong)))]

    encoding = pick(str(rng.choice(list(LAYOUTS))), 'bayer_rggb8', '32FC1', '', 'RGB8')
    height = pick(int(rng.integers(1, 40)), 0, -2)
    width = pick(int(rng.integers(1, 40)), 0, -1)
    max_pixels = pick(10**6, 1, 20)
    channels, depth, out = LAYOUTS.get(encoding, (3, 1, 3))
    row = max(width, 0) * channels * depth
    step = max(row + pick(int(rng.choice([0, 0, 1, 5])), -1, -3), 0)
    length = max(height, 0) * step + pick(0, 1, -1, -step, 100)
    data = rng.integers(0, 256, max(length, 0), dtype=np.uint8).tobytes()
    kind = pick(int(rng.integers(5)), 5, 6)
    buffer = [data, bytearray(data), memoryview(data), array.array('B', data),
              np.frombuffer(data, np.uint8), None, 'text'][kind]
    good = (encoding in LAYOUTS and 0 < height and 0 < width and width * height <= max_pixels
            and step >= row and length == height * step and kind < 5
            and not (channels == 2 and width % 2))
    args = (buffer, height, width, encoding, step, bool(rng.integers(2)), max_pixels)
    return args, ((height, width, out) if good else None)


def test_raw_frames_fuzz():
    rng = np.random.default_rng(1104)
    outcomes = {'good': 0, 'bad': 0}
    for case in range(RAW_CASES):
        args, expected = _raw_case(rng)
        where = f'case {case}: {args[1:]}'
        try:
            view = view_image(*args)
        except ImageError as exc:
            assert expected is None, f'{where}: a good frame refused: {exc}'
            assert exc.cause in IMAGE_ERROR_CAUSES, f'{where}: unknown cause {exc.cause}'
            outcomes['bad'] += 1
            continue
        assert expected is not None, f'{where}: a bad frame accepted'
        assert view.pixels.shape == expected and view.pixels.dtype == np.uint8, where
        if LAYOUTS[args[3]][:2] in ((3, 1), (4, 1), (1, 1)):  # 8-bit: the bytes themselves
            rows = np.frombuffer(args[0], np.uint8).reshape(args[1], args[4])
            np.testing.assert_array_equal(view.pixels.reshape(args[1], -1),
                                          rows[:, :view.pixels[0].size], err_msg=where)
        outcomes['good'] += 1
    assert min(outcomes.values()) > RAW_CASES // 5, outcomes  # both kinds well covered


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


def test_compressed_frames_fuzz():
    child = ('import json, sys; sys.path.insert(0, sys.argv[1]); from test_fuzz import '
             'compressed_fuzz; from hostile_images import limit_memory; limit_memory(); '
             'print(json.dumps(compressed_fuzz(2611, int(sys.argv[2]))))')
    env = dict(os.environ, OPENCV_IO_MAX_IMAGE_PIXELS=str(REFERENCE_MAX_PIXELS))
    proc = subprocess.run([sys.executable, '-c', child, str(Path(__file__).parent),
                           str(COMPRESSED_CASES)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == ''  # decode_compressed printed nothing, whatever it was fed
    result = json.loads(proc.stdout)
    assert result['failures'] == [], result
    outcomes = result['outcomes']
    # Each kind of outcome turns up, good frames among them.
    assert outcomes['decoded'] >= COMPRESSED_CASES // 10, outcomes
    for cause in ('too_large', 'decode', 'corrupt', 'format'):
        assert outcomes.get(cause, 0) >= 10, outcomes
