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
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
from support.fuzz import REFERENCE_MAX_PIXELS
from support.images import encode, png_chunk, scan_bomb

from yolo_trt_ros.core.errors import ImageError
from yolo_trt_ros.core.image.buffers import IMAGE_ERROR_CAUSES, view_image
from yolo_trt_ros.core.image.decode import decode_compressed

RAW_CASES = 4000
COMPRESSED_CASES = 4000
COST_CASES = 120
COST_BUDGET_S = 1.0  # per image, on a loaded 2-core CI machine; 0.5 s is the target

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


def test_compressed_frames_fuzz():
    child = ('import json, sys; sys.path.insert(0, sys.argv[1]); from support.fuzz import '
             'compressed_fuzz; from support.images import limit_memory; limit_memory(); '
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


def _cost_case(rng: np.random.Generator) -> bytes:
    """An image whose decoding cost, not its size, is the attack: progressive JPEGs with
    repeated scans, restart-interval storms, PNGs of every bit depth and colour type,
    interlaced or not, with their data split into a storm of tiny chunks."""
    kind = int(rng.integers(4))
    side = int(rng.integers(16, 2400))
    if kind == 0:  # many scans
        return scan_bomb(side, int(rng.integers(1, 400)))
    if kind == 1:  # a restart marker after every MCU
        pixels = rng.integers(0, 256, (side // 4 + 8, side // 4 + 8, 3), dtype=np.uint8)
        return encode('.jpg', pixels, cv2.IMWRITE_JPEG_RST_INTERVAL, 1)
    depth = int(rng.choice([8, 16]))
    colour = int(rng.choice([0, 2, 4, 6]))
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    width, height = side * 2, side * 2
    row = bytes(1 + width * channels * depth // 8)
    squash = zlib.compressobj(9)
    data = b''.join(squash.compress(row) for _ in range(height)) + squash.flush()
    chunks = [data] if kind == 2 else [data[i:i + 7] for i in range(0, len(data), 7)]
    header = struct.pack('>IIBBBBB', width, height, depth, colour, 0, 0,
                         int(rng.integers(2)))  # interlaced or not
    return (b'\x89PNG\r\n\x1a\n' + png_chunk(b'IHDR', header) +
            b''.join(png_chunk(b'IDAT', c) for c in chunks) + png_chunk(b'IEND', b''))


def test_decoding_cost_fuzz():
    """Issue 17: every image is decoded or refused within the time budget, whatever its
    headers make the decoder do; the costly ones are refused before decoding."""
    rng = np.random.default_rng(1717)
    outcomes: dict[str, int] = {}
    for case in range(COST_CASES):
        data = _cost_case(rng)
        start = time.perf_counter()
        try:
            decode_compressed(data, max_pixels=4_000_000)
            outcome = 'decoded'
        except ImageError as exc:
            assert exc.cause in IMAGE_ERROR_CAUSES, f'case {case}: {exc}'
            outcome = exc.cause
        seconds = time.perf_counter() - start
        assert seconds < COST_BUDGET_S, f'case {case} ({outcome}) took {seconds:.2f} s'
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes.get('decoded', 0) >= COST_CASES // 5, outcomes
    assert outcomes.get('too_costly', 0) >= COST_CASES // 10, outcomes
