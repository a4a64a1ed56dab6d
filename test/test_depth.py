"""Depth -> 3D (core/pipeline/depth.py) on synthetic depth with known intrinsics: planes,
steps, holes, masks, both encodings, and the camera_info YAML and depth files the CLI
reads."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from yolo_trt_ros.core.errors import ImageError
from yolo_trt_ros.core.pipeline.depth import (
    CameraModel,
    DepthImage,
    depth_view,
    positions,
    read_camera_yaml,
    read_depth_file,
)
from yolo_trt_ros.core.pipeline.masks import InstanceMasks, mask_regions

CAMERA = CameraModel(fx=600.0, fy=500.0, cx=320.0, cy=240.0, width=640, height=480)


def plane_mm(z_m: float) -> np.ndarray:
    return np.full((480, 640), round(z_m * 1000), np.uint16)


def test_a_box_on_a_plane_is_back_projected_through_the_pinhole_model():
    depth = DepthImage(plane_mm(2.0), 0.001)
    boxes = np.array([[420, 140, 520, 340], [270, 190, 370, 290]], np.float32)
    p = positions(depth, CAMERA, boxes)
    assert p.valid.tolist() == [True, True]
    # centre (470, 240): x = (470 - 320) * 2 / 600 = 0.5 m, y = 0, z = 2
    assert np.allclose(p.centre[0], [0.5, 0.0, 2.0])
    assert np.allclose(p.centre[1], [0.0, -0.0, 2.0], atol=1e-9)
    # 100 x 200 px at 2 m: 100 * 2 / 600 by 200 * 2 / 500; a flat plane has no depth extent
    assert np.allclose(p.size[0], [1 / 3, 0.8, 0.0])


def test_a_step_inside_the_box_median_and_spread():
    """An object at 1.5 m filling the box's centre, the wall at 4 m around it: the central
    region sees the object; a box half over the step reports the spread as its extent."""
    mm = plane_mm(4.0)
    mm[200:300, 250:400] = 1500
    depth = DepthImage(mm, 0.001)
    on_object = positions(depth, CAMERA, np.array([[240, 180, 410, 320]]))
    assert on_object.centre[0, 2] == pytest.approx(1.5)
    left = np.full((480, 640), 1000, np.uint16)
    left[:, 320:] = 3000  # a step at the box's centre column
    straddle = positions(DepthImage(left, 0.001), CAMERA, np.array([[220, 140, 420, 340]]))
    assert straddle.valid[0] and straddle.size[0, 2] == pytest.approx(2.0)


def test_holes_are_ignored_and_a_box_without_depth_is_invalid():
    mm = plane_mm(2.5)
    mm[::2, :] = 0  # every other row missing (a structured-light camera's holes)
    depth = DepthImage(mm, 0.001)
    p = positions(depth, CAMERA, np.array([[100, 100, 200, 200]]))
    assert p.valid[0] and p.centre[0, 2] == pytest.approx(2.5)
    mm[100:300, 100:300] = 0
    p = positions(DepthImage(mm, 0.001), CAMERA,
                  np.array([[120, 120, 280, 280], [400, 100, 500, 200], [700, 10, 800, 40]]))
    assert p.valid.tolist() == [False, True, False]  # a hole; fine; outside the image
    assert np.isnan(p.centre[0]).all()


def test_metres_with_nan_and_the_range_limits():
    metres = np.full((480, 640), 3.0, np.float32)
    metres[:, :320] = np.nan
    metres[:, 320:340] = 50.0  # beyond max_m: a reflection
    p = positions(DepthImage(metres, 1.0), CAMERA, np.array([[280, 200, 400, 280]]),
                  max_m=10.0)
    assert p.valid[0] and p.centre[0, 2] == pytest.approx(3.0)
    near = positions(DepthImage(metres, 1.0), CAMERA, np.array([[400, 200, 500, 280]]),
                     min_m=5.0)
    assert not near.valid[0]


def test_a_mask_selects_the_object_pixels():
    mm = plane_mm(4.0)
    mm[100:140, 100:300] = 800  # a thin object along the top of the box
    box = np.array([[100, 100, 300, 300]])
    crop = np.zeros((200, 200), np.uint8)  # the mask over the box's pixels
    crop[:40] = 1
    mask = InstanceMasks(480, 640, mask_regions(box, 640, 480), crop.reshape(-1),
                         np.zeros(1, np.int64))
    assert positions(DepthImage(mm, 0.001), CAMERA, box).centre[0, 2] == pytest.approx(4.0)
    with_mask = positions(DepthImage(mm, 0.001), CAMERA, box, masks=mask)
    assert with_mask.centre[0, 2] == pytest.approx(0.8)


def test_depth_buffers_of_both_encodings_and_byte_orders():
    mm = (np.arange(12, dtype=np.uint16) * 100).reshape(3, 4)
    view = depth_view(mm.tobytes(), 3, 4, '16UC1', 8)
    assert view.scale == 0.001 and np.array_equal(view.pixels, mm)
    padded = np.zeros((3, 12), np.uint8)
    padded[:, :8] = mm.astype('>u2').view(np.uint8).reshape(3, 8)
    assert np.array_equal(depth_view(padded.tobytes(), 3, 4, '16UC1', 12, True).pixels, mm)
    m = np.linspace(0, 5, 12, dtype=np.float32).reshape(3, 4)
    view = depth_view(m.tobytes(), 3, 4, '32FC1', 16)
    assert view.scale == 1.0 and np.array_equal(view.pixels, m)
    with pytest.raises(ImageError, match="depth encoding 'rgb8' is not 16UC1") as exc:
        depth_view(bytes(36), 3, 4, 'rgb8', 12)
    assert exc.value.cause == 'depth_encoding'
    with pytest.raises(ImageError, match='depth buffer holds 20 bytes, expected 24') as exc:
        depth_view(bytes(20), 3, 4, '16UC1', 8)
    assert exc.value.cause == 'depth_size'


def test_camera_matrix_checks():
    k = [600, 0, 320, 0, 500, 240, 0, 0, 1]
    assert CameraModel.from_matrix(k, 640, 480) == CAMERA
    with pytest.raises(ValueError, match='focal length fx 0, fy 500'):
        CameraModel.from_matrix([0, 0, 320, 0, 500, 240, 0, 0, 1])
    with pytest.raises(ValueError, match='has 3 values, expected 9'):
        CameraModel.from_matrix([1, 2, 3])


CAMERA_YAML = """\
image_width: 640
image_height: 480
camera_name: front
camera_matrix:
  rows: 3
  cols: 3
  data: [600.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [0.0, 0.0, 0.0, 0.0, 0.0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
projection_matrix:
  rows: 3
  cols: 4
  data: [600.0, 0.0, 320.0, 0.0, 0.0, 500.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0]
"""


def test_files_the_cli_reads(tmp_path):
    (tmp_path / 'camera.yaml').write_text(CAMERA_YAML)
    assert read_camera_yaml(tmp_path / 'camera.yaml') == CAMERA
    (tmp_path / 'bad.yaml').write_text('image_width: 640\n')
    with pytest.raises(ValueError, match='not a camera_info YAML'):
        read_camera_yaml(tmp_path / 'bad.yaml')
    cv2.imwrite(str(tmp_path / 'd.png'), plane_mm(1.25))
    png = read_depth_file(tmp_path / 'd.png')
    assert png.scale == 0.001 and png.pixels.dtype == np.uint16 and png.pixels[0, 0] == 1250
    cv2.imwrite(str(tmp_path / 'd.tiff'), np.full((480, 640), 1.25, np.float32))
    tiff = read_depth_file(tmp_path / 'd.tiff')
    assert tiff.scale == 1.0 and tiff.pixels[0, 0] == np.float32(1.25)
    cv2.imwrite(str(tmp_path / 'colour.png'), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match='3 channels; depth has one'):
        read_depth_file(tmp_path / 'colour.png')


def test_the_shipped_rviz_config_shows_detections_3d():
    """rviz shows the 3D result through vision_msgs_rviz_plugins' Detection3DArray display,
    on the topic the node publishes."""
    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / 'config' / 'detect.rviz')
                         .read_text())
    displays = doc['Visualization Manager']['Displays']
    shown = [(d['Class'], d['Topic']['Value']) for d in displays if d.get('Enabled')]
    assert ('vision_msgs_rviz_plugins/Detection3DArray', 'detections_3d') in shown
