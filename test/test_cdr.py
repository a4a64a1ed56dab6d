"""Reading Image and CompressedImage from their serialized bytes, checked against rclpy's
own serializer: every field, every alignment, and truncation at every byte."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image

from yolo_trt_ros.core.errors import ImageError
from yolo_trt_ros.core.serving.cdr import parse_compressed, parse_image


def image(frame_id: str, encoding: str, h: int, w: int, channels: int, pad: int, sec: int,
          bigendian: int = 0) -> Image:
    step = w * channels + pad
    data = np.random.default_rng(h * w).integers(0, 256, h * step, dtype=np.uint8).tobytes()
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=bigendian, step=step, data=data)
    msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec = frame_id, sec, 999
    return msg


@settings(max_examples=60, deadline=None)
@given(frame_id=st.text(alphabet='abcxyz_/0', max_size=9), encoding=st.sampled_from(
    ['bgr8', 'mono8', 'rgba8', 'yuv422', 'mono16']), h=st.integers(0, 7), w=st.integers(0, 9),
    pad=st.integers(0, 3), sec=st.integers(-2**31, 2**31 - 1), bigendian=st.integers(0, 1))
def test_image_fields_equal_rclpy_serialisation(frame_id, encoding, h, w, pad, sec, bigendian):
    msg = image(frame_id, encoding, h, w, 3, pad, sec, bigendian)
    raw = parse_image(serialize_message(msg))
    assert (raw.header.sec, raw.header.nanosec, raw.header.frame_id) == (sec, 999, frame_id)
    assert (raw.height, raw.width, raw.encoding, raw.step) == (h, w, encoding, msg.step)
    assert raw.is_bigendian == bool(bigendian)
    assert bytes(raw.data) == bytes(msg.data)


@pytest.mark.parametrize('frame_id', ['', 'a', 'cam', 'camera_front_left'])
def test_compressed_fields(frame_id):
    msg = CompressedImage(format='jpeg', data=bytes(range(200)))
    msg.header.frame_id, msg.header.stamp.sec = frame_id, 12
    raw = parse_compressed(serialize_message(msg))
    assert (raw.header.frame_id, raw.header.sec, raw.format) == (frame_id, 12, 'jpeg')
    assert bytes(raw.data) == bytes(range(200))


def test_pixels_are_a_view_of_the_bytes_not_a_copy():
    data = bytearray(serialize_message(image('c', 'bgr8', 4, 4, 3, 0, 1)))
    raw = parse_image(data)
    before = raw.data[0]
    data[-48] ^= 0xFF  # the first pixel byte: the data sequence is the tail of the message
    assert raw.data[0] == before ^ 0xFF


def test_truncation_anywhere_is_an_image_error():
    full = serialize_message(image('camera', 'bgr8', 3, 5, 3, 1, 7))
    for cut in range(len(full)):
        try:
            raw = parse_image(full[:cut])
        except ImageError as exc:
            assert exc.cause == 'cdr'
        else:  # cut inside the pixel data only: the count then disagrees with the bytes
            pytest.fail(f'cut at {cut} parsed: {raw}')


def test_not_cdr_at_all():
    with pytest.raises(ImageError, match='shorter than its CDR header'):
        parse_image(b'\x00')
    with pytest.raises(ImageError, match='unknown CDR encapsulation'):
        parse_image(b'\x00\x07\x00\x00' + bytes(40))
