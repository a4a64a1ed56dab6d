"""Frames above max_image_pixels are refused from their header and counted as bad input
`too_large`, never `internal`; the good frame after them is processed (issue 11.1)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from support.images import claiming
from support.ros import diagnostics_value, frame, running
from support.truth import assert_bus_and_people
from vision_msgs.msg import Detection2DArray

from yolo_trt_ros.ros.image_source_node import to_message

pytestmark = pytest.mark.ros


def jpeg_bomb(height: int = 30000, width: int = 30000) -> bytes:
    """A small JPEG whose frame header claims height x width."""
    ok, data = cv2.imencode('.jpg', np.full((64, 64, 3), 128, np.uint8))
    return claiming(data.tobytes(), width, height)


def send_and_count(client, pub, bad, good, diags, results) -> dict[str, str]:
    """Publish the bad frame until it is counted, then the good one until it is answered."""
    pub.publish(bad)
    client.wait(lambda: diagnostics_value(diags, 'bad_input') == '1', 'the large frame counted')
    pub.publish(good)
    client.wait(lambda: results, 'detections for the good frame after the large one')
    client.wait(lambda: diagnostics_value(diags, 'processed') == '1', 'the processed count')
    return {kv.key: kv.value for kv in diags[-1].status[0].values}


def test_jpeg_bomb_is_too_large_and_the_next_frame_is_processed(bus_jpg):
    with running(compressed=True, max_image_pixels=2_000_000) as (proc, client):
        results = client.collect(Detection2DArray, 'detections')
        diags = client.collect(DiagnosticArray, '/diagnostics')
        pub = client.publisher(CompressedImage, 'image/compressed')
        bomb = CompressedImage(header=Header(frame_id='bomb'), format='jpeg', data=jpeg_bomb())
        values = send_and_count(client, pub, bomb, frame(bus_jpg, 'compressed', 1, 'good'),
                                diags, results)
        log = proc.output()
    assert values['bad_input.too_large'] == '1' and 'bad_input.internal' not in values
    assert '30000x30000' in log and 'internal' not in log
    assert_bus_and_people(results[0])


def test_raw_frame_above_the_limit_is_too_large(bus_jpg):
    with running(max_image_pixels=800_000) as (proc, client):  # the bus is 810x1080
        results = client.collect(Detection2DArray, 'detections')
        diags = client.collect(DiagnosticArray, '/diagnostics')
        pub = client.publisher(Image, 'image')
        small = to_message(cv2.resize(cv2.imread(str(bus_jpg)), (540, 720)), 'bgr8')
        small.header.frame_id = 'small'
        values = send_and_count(client, pub, frame(bus_jpg, 'bgr8', 1, 'large'), small,
                                diags, results)
    assert values['bad_input.too_large'] == '1' and 'bad_input.internal' not in values
    assert results[0].header.frame_id == 'small' and len(results) == 1
