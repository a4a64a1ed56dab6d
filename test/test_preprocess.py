"""Letterbox geometry and the preprocessed tensor."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yolo_trt_ros.core.image.buffers import ImageView
from yolo_trt_ros.core.pipeline.preprocess import PAD_VALUE, Letterbox, Preprocessor

sizes = st.integers(min_value=1, max_value=4000)


@settings(max_examples=300, deadline=None)
@given(sw=sizes, sh=sizes, dw=st.sampled_from([320, 416, 640, 1280]),
       dh=st.sampled_from([256, 416, 640]), data=st.data())
def test_box_mapped_forward_and_back_lands_where_it_started(sw, sh, dw, dh, data):
    box = Letterbox.fit(sw, sh, dw, dh)
    x1 = data.draw(st.floats(0, sw, allow_nan=False))
    x2 = data.draw(st.floats(x1, sw, allow_nan=False))
    y1 = data.draw(st.floats(0, sh, allow_nan=False))
    y2 = data.draw(st.floats(y1, sh, allow_nan=False))
    original = np.array([[x1, y1, x2, y2]], np.float32)
    back = box.to_original(box.to_input(original))
    np.testing.assert_allclose(back, original, atol=1e-3 * max(sw, sh), rtol=1e-5)


@settings(max_examples=300, deadline=None)
@given(sw=sizes, sh=sizes, dw=st.sampled_from([320, 416, 640]), dh=st.sampled_from([320, 416, 640]))
def test_letterbox_keeps_aspect_fits_and_centres(sw, sh, dw, dh):
    box = Letterbox.fit(sw, sh, dw, dh)
    assert 1 <= box.new_width <= dw and 1 <= box.new_height <= dh
    assert box.new_width == dw or box.new_height == dh  # touches one side
    assert abs(box.pad_x - (dw - box.new_width - box.pad_x)) <= 1  # centred
    assert abs(box.pad_y - (dh - box.new_height - box.pad_y)) <= 1
    # One scale for both axes, up to the rounding of the resized size to whole pixels.
    ratio = min(dw / sw, dh / sh)
    assert abs(box.new_width - sw * ratio) <= 1 and abs(box.new_height - sh * ratio) <= 1


def test_to_original_clips_to_the_image():
    box = Letterbox.fit(200, 100, 64, 64)
    out = box.to_original(np.array([[-50, -50, 500, 500]], np.float32))
    np.testing.assert_array_equal(out, [[0, 0, 200, 100]])


def _view(pixels, order):
    return ImageView(pixels, order)


@pytest.mark.parametrize('dtype', [np.float32, np.float16])
def test_tensor_is_rgb_chw_scaled_and_padded(dtype):
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)  # 2:1 -> 64x32 band, pad 16
    pre = Preprocessor(64, 64, dtype=dtype)
    box = pre(_view(bgr, 'bgr'))
    assert (box.pad_x, box.pad_y, box.new_width, box.new_height) == (0, 16, 64, 32)
    t = pre.buffer[0].astype(np.float32)
    assert pre.buffer.dtype == dtype and t.shape == (3, 64, 64)
    tol = 1e-3 if dtype == np.float16 else 1e-6
    # Same size: no resampling, so the band equals the pixels exactly (R plane first).
    np.testing.assert_allclose(t[:, 16:48, :], bgr[:, :, ::-1].transpose(2, 0, 1) / 255, atol=tol)
    np.testing.assert_allclose(t[:, :16, :], PAD_VALUE / 255, atol=tol)
    np.testing.assert_allclose(t[:, 48:, :], PAD_VALUE / 255, atol=tol)


@pytest.mark.parametrize('order,pixels', [
    ('rgb', lambda rgb: rgb), ('bgr', lambda rgb: rgb[:, :, ::-1]),
    ('rgba', lambda rgb: np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])),
    ('bgra', lambda rgb: np.dstack([rgb[:, :, ::-1], np.zeros(rgb.shape[:2], np.uint8)])),
])
def test_every_channel_order_gives_the_same_tensor(order, pixels):
    rgb = np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    pre = Preprocessor(48, 48)
    pre(_view(np.ascontiguousarray(pixels(rgb)), order))
    np.testing.assert_allclose(pre.buffer[0], rgb.transpose(2, 0, 1) / 255, atol=1e-6)


def test_gray_fills_three_planes_and_bgr_models_get_bgr():
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8, 1)
    pre = Preprocessor(8, 8)
    pre(_view(gray, 'gray'))
    for plane in range(3):
        np.testing.assert_allclose(pre.buffer[0, plane], gray[:, :, 0] / 255, atol=1e-6)
    rgb = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    pre_bgr = Preprocessor(8, 8, channel_order='bgr')
    pre_bgr(_view(rgb, 'rgb'))
    np.testing.assert_allclose(pre_bgr.buffer[0], rgb[:, :, ::-1].transpose(2, 0, 1) / 255, atol=1e-6)


def test_buffer_is_reused_and_batch_slots_are_independent():
    pre = Preprocessor(32, 32, batch=2)
    buffer = pre.buffer
    a = np.full((16, 16, 3), 10, np.uint8)
    b = np.full((40, 20, 3), 200, np.uint8)
    pre(_view(a, 'rgb'), 0)
    pre(_view(b, 'rgb'), 1)
    pre(_view(a, 'rgb'), 0)
    assert pre.buffer is buffer
    assert np.isclose(pre.buffer[0].max(), 10 / 255)
    assert np.isclose(pre.buffer[1].max(), 200 / 255)


def test_resized_image_matches_an_independent_resize():
    import cv2
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    pre = Preprocessor(128, 128)
    box = pre(_view(img, 'rgb'))
    ref = cv2.resize(img, (box.new_width, box.new_height), interpolation=cv2.INTER_LINEAR)
    band = pre.buffer[0][:, box.pad_y:box.pad_y + box.new_height, box.pad_x:box.pad_x + box.new_width]
    np.testing.assert_allclose(band, ref.transpose(2, 0, 1) / 255, atol=1e-6)


def test_bad_channel_order_is_refused():
    with pytest.raises(ValueError, match="channel_order must be 'rgb' or 'bgr'"):
        Preprocessor(8, 8, channel_order='rgba')


def test_padding_is_rewritten_when_the_geometry_of_a_slot_changes():
    pre = Preprocessor(32, 32)
    pre(_view(np.full((16, 32, 3), 200, np.uint8), 'rgb'))  # wide: band in rows 8..24
    box = pre(_view(np.full((32, 16, 3), 50, np.uint8), 'rgb'))  # tall: band in cols 8..24
    assert (box.pad_x, box.pad_y) == (8, 0)
    t = pre.buffer[0]
    np.testing.assert_allclose(t[:, :, :8], PAD_VALUE / 255, atol=1e-6)  # the old band is gone
    np.testing.assert_allclose(t[:, :, 24:], PAD_VALUE / 255, atol=1e-6)
    np.testing.assert_allclose(t[:, :, 8:24], 50 / 255, atol=1e-6)
