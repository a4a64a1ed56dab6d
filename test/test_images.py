"""Image buffers -> HWC uint8 views: every encoding, row padding, and every bad input."""
from __future__ import annotations

import array

import cv2
import numpy as np
import pytest

from yolo_trt_ros.core.errors import ImageError
from yolo_trt_ros.core.image.buffers import SUPPORTED_ENCODINGS, to_bgr, view_image
from yolo_trt_ros.core.image.decode import decode_compressed, read_image

RNG = np.random.default_rng(7)
H, W = 5, 6
RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)


def padded(rows: np.ndarray, pad: int) -> tuple[bytes, int]:
    """Flatten (H, row_bytes) rows with `pad` junk bytes after each row."""
    rows = rows.reshape(rows.shape[0], -1)
    junk = np.full((rows.shape[0], pad), 0xAB, np.uint8)
    return np.hstack([rows, junk]).tobytes(), rows.shape[1] + pad


@pytest.mark.parametrize('pad', [0, 3])
@pytest.mark.parametrize('encoding,pixels,order', [
    ('rgb8', RGB, 'rgb'),
    ('bgr8', RGB[:, :, ::-1], 'bgr'),
    ('rgba8', np.dstack([RGB, np.full((H, W), 255, np.uint8)]), 'rgba'),
    ('bgra8', np.dstack([RGB[:, :, ::-1], np.zeros((H, W), np.uint8)]), 'bgra'),
    ('mono8', RGB[:, :, :1], 'gray'),
])
def test_8bit_encodings_are_zero_copy_views(encoding, pixels, order, pad):
    data, step = padded(np.ascontiguousarray(pixels), pad)
    buf = bytearray(data)
    view = view_image(buf, H, W, encoding, step)
    assert view.order == order
    np.testing.assert_array_equal(view.pixels, pixels)
    # A view, not a copy: changing the buffer changes the pixels.
    buf[0] ^= 0xFF
    assert view.pixels[0, 0, 0] == pixels[0, 0, 0] ^ 0xFF


def test_array_array_buffer_as_rclpy_stores_it():
    data = array.array('B', RGB.tobytes())
    view = view_image(data, H, W, 'rgb8', W * 3)
    np.testing.assert_array_equal(view.pixels, RGB)


@pytest.mark.parametrize('bigendian', [False, True])
@pytest.mark.parametrize('pad', [0, 4])
def test_mono16_is_scaled_to_the_high_byte(bigendian, pad):
    words = RNG.integers(0, 65536, (H, W), dtype=np.uint16)
    raw = words.astype('>u2' if bigendian else '<u2').view(np.uint8)
    data, step = padded(raw, pad)
    view = view_image(data, H, W, 'mono16', step, is_bigendian=bigendian)
    assert view.order == 'gray'
    np.testing.assert_array_equal(view.pixels[:, :, 0], (words >> 8).astype(np.uint8))


@pytest.mark.parametrize('encoding,packing', [('yuv422', 'UYVY'), ('uyvy', 'UYVY'),
                                              ('yuv422_yuy2', 'YUYV'), ('yuyv', 'YUYV')])
def test_yuv422_converted_to_rgb(encoding, packing):
    # A flat colour converts to the same RGB everywhere; check it against the BT.601
    # video-range formula (what cameras send) computed here, not OpenCV's conversion.
    y, u, v = 120, 90, 200
    pair = [u, y, v, y] if packing == 'UYVY' else [y, u, y, v]
    data = np.tile(np.uint8(pair), (H, W // 2)).tobytes()
    view = view_image(data, H, W, encoding, W * 2)
    assert view.order == 'rgb' and view.pixels.shape == (H, W, 3)
    luma = 1.164 * (y - 16)
    r = luma + 1.596 * (v - 128)
    g = luma - 0.391 * (u - 128) - 0.813 * (v - 128)
    b = luma + 2.018 * (u - 128)
    expected = np.clip(np.round([r, g, b]), 0, 255)
    assert np.abs(view.pixels.reshape(-1, 3).astype(int) - expected).max() <= 2


def test_every_supported_encoding_is_covered():
    # The tests above cover these; a new encoding must get a test too.
    covered = {'rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16', 'yuv422', 'uyvy',
               'yuv422_yuy2', 'yuyv', '8UC1', '8UC3', '16UC1'}
    assert set(SUPPORTED_ENCODINGS) == covered


@pytest.mark.parametrize('alias,base', [('8UC1', 'mono8'), ('8UC3', 'bgr8'), ('16UC1', 'mono16')])
def test_aliases_match_their_named_encoding(alias, base):
    data = RNG.integers(0, 256, H * W * 3, dtype=np.uint8).tobytes()
    step = {'mono8': W, 'bgr8': W * 3, 'mono16': W * 2}[base]
    a = view_image(data[:H * step], H, W, alias, step)
    b = view_image(data[:H * step], H, W, base, step)
    assert a.order == b.order
    np.testing.assert_array_equal(a.pixels, b.pixels)


@pytest.mark.parametrize('kwargs,message', [
    (dict(encoding='bayer_rggb8'), "unsupported encoding 'bayer_rggb8'"),
    (dict(encoding='32FC1'), "unsupported encoding '32FC1'"),
    (dict(height=0), 'empty image: 6x0'),
    (dict(width=0, step=0), 'empty image: 0x5'),
    (dict(step=17), 'step 17 is smaller than width 6 x 3 channels x 1 bytes = 18'),
    (dict(data=bytes(H * W * 3 - 1)), 'buffer holds 89 bytes, expected height 5 x step 18 = 90'),
    (dict(data=bytes(H * W * 3 + 18)), 'buffer holds 108 bytes, expected height 5 x step 18'),
    (dict(data=b''), 'buffer holds 0 bytes'),
    (dict(data=12345), 'image data is not a byte buffer'),
    (dict(encoding='yuv422', width=5, step=10, data=bytes(50)), 'yuv422 needs an even width, got 5'),
])
def test_bad_buffers_raise_an_error_naming_the_problem(kwargs, message):
    args = dict(data=bytes(H * W * 3), height=H, width=W, encoding='rgb8', step=W * 3)
    args.update(kwargs)
    with pytest.raises(ImageError, match=message.replace('(', r'\(').replace(')', r'\)')):
        view_image(args['data'], args['height'], args['width'], args['encoding'], args['step'])


def test_compressed_jpeg_and_png_decode():
    bgr = RGB[:, :, ::-1].copy()
    ok, png = cv2.imencode('.png', bgr)
    assert ok
    view = decode_compressed(png.tobytes(), 'png')
    assert view.order == 'bgr'
    np.testing.assert_array_equal(view.pixels, bgr)
    ok, jpg = cv2.imencode('.jpg', np.full((16, 16, 3), 77, np.uint8))
    view = decode_compressed(jpg.tobytes(), 'jpeg')
    assert view.pixels.shape == (16, 16, 3) and abs(int(view.pixels.mean()) - 77) <= 1


def test_gray_png_decodes_as_gray():
    ok, png = cv2.imencode('.png', RGB[:, :, 0])
    view = decode_compressed(png.tobytes(), 'png')
    assert view.order == 'gray' and view.pixels.shape == (H, W, 1)


@pytest.mark.parametrize('data,message', [
    (b'', 'empty compressed image'),
    (b'\xff\xd8\xff\xe0 this is not really a jpeg', "cannot decode compressed image .* format 'jpeg'"),
])
def test_corrupt_compressed_images_raise(data, message):
    with pytest.raises(ImageError, match=message):
        decode_compressed(data, 'jpeg')


def test_truncated_jpeg_raises(bus_jpg):
    data = bus_jpg.read_bytes()
    with pytest.raises(ImageError, match='cannot decode compressed image'):
        decode_compressed(data[:200], 'jpeg')


def test_read_image_errors_name_the_path(tmp_path):
    with pytest.raises(ImageError, match='cannot read image .*missing.jpg'):
        read_image(str(tmp_path / 'missing.jpg'))
    bad = tmp_path / 'bad.jpg'
    bad.write_bytes(b'not an image')
    with pytest.raises(ImageError, match='bad.jpg: cannot decode'):
        read_image(str(bad))


@pytest.mark.parametrize('encoding', ['rgb8', 'rgba8', 'bgra8', 'mono8', 'bgr8'])
def test_to_bgr_restores_bgr(encoding):
    bgr = RGB[:, :, ::-1]
    src = {'rgb8': RGB, 'bgr8': bgr, 'rgba8': np.dstack([RGB, np.zeros((H, W), np.uint8)]),
           'bgra8': np.dstack([bgr, np.zeros((H, W), np.uint8)]), 'mono8': RGB[:, :, :1]}[encoding]
    view = view_image(np.ascontiguousarray(src).tobytes(), H, W, encoding, W * src.shape[2])
    out = to_bgr(view)
    expected = np.repeat(RGB[:, :, :1], 3, axis=2) if encoding == 'mono8' else bgr
    np.testing.assert_array_equal(out, expected)


def _video(path, frames: int) -> None:
    fourcc = {'.avi': 'MJPG', '.mp4': 'mp4v', '.mkv': 'mp4v'}[path.suffix]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (64, 48))
    assert writer.isOpened(), path
    for i in range(frames):
        writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    writer.release()


@pytest.mark.parametrize('suffix', ['.avi', '.mp4', '.mkv'])
def test_a_whole_video_reads_every_frame_and_no_error(tmp_path, suffix):
    """A whole file of each container is not taken for one cut short."""
    from yolo_trt_ros.core.image.sources import frames_of

    _video(tmp_path / f'v{suffix}', 12)
    got = list(frames_of([str(tmp_path / f'v{suffix}')]))
    assert len(got) == 12 and not any(isinstance(image, ImageError) for _, image in got)


def test_a_video_cut_short_ends_with_an_error_after_its_frames(tmp_path):
    from yolo_trt_ros.core.image.sources import frames_of

    path = tmp_path / 'v.avi'
    _video(path, 12)
    path.write_bytes(path.read_bytes()[:path.stat().st_size * 3 // 4])
    *frames, (name, last) = frames_of([str(path)])
    assert 0 < len(frames) < 12 and name == str(path)
    assert isinstance(last, ImageError) and last.cause == 'read'
    assert str(last) == (f'{path}: the video ended after {len(frames)} of its 12 frames '
                         '(cut short or corrupt)')


def test_a_container_without_a_frame_count_is_read_to_its_end_unjudged(tmp_path):
    """Matroska stores no count: FFmpeg's estimate from the duration and the nominal rate
    misses a whole variable-rate recording by a quarter (a helper's finding), so an MKV
    is not judged, cut short or not: its frames come, and no error."""
    from yolo_trt_ros.core.image.sources import frames_of

    path = tmp_path / 'v.mkv'
    _video(path, 12)
    path.write_bytes(path.read_bytes()[:path.stat().st_size * 3 // 4])
    got = list(frames_of([str(path)]))
    assert 0 < len(got) < 12 and not any(isinstance(i, ImageError) for _, i in got)
