"""`yolo-trt track` (video, folder, listed images; the JSON contract; --save; an Ultralytics
tracker YAML) and `yolo-trt detect --depth --camera-info` (positions in metres)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest


def run_cli(*args, timeout=180):
    return subprocess.run([sys.executable, '-m', 'yolo_trt_ros.cli', *args],
                          capture_output=True, text=True, timeout=timeout)


def pan_frames(bus_jpg: Path, out: Path, count: int = 6) -> list[Path]:
    """A camera panning over bus.jpg: 720x850 crops moving 12 px right per frame, as PNG
    (lossless: the node test publishes exactly these pixels)."""
    bus = cv2.imread(str(bus_jpg))
    out.mkdir(exist_ok=True)
    paths = []
    for i in range(count):
        paths.append(out / f'{i:03d}.png')
        cv2.imwrite(str(paths[-1]), bus[150:1000, 12 * i:12 * i + 720])
    return paths


def as_video(frames: list[Path], video: Path) -> Path:
    """The pan's frames as an MJPG AVI at 10 fps."""
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'MJPG'), 10, (720, 850))
    assert writer.isOpened()
    for path in frames:
        writer.write(cv2.imread(str(path)))
    writer.release()
    return video


def test_track_json_contract_and_ids_that_follow_objects(bus_jpg, tmp_path):
    frames = pan_frames(bus_jpg, tmp_path / 'pan')
    proc = run_cli('track', str(tmp_path / 'pan'), '--json', '--backend', 'onnxruntime')
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [f['frame'] for f in doc] == list(range(len(frames)))
    assert [f['image'] for f in doc] == [str(p) for p in frames]  # sorted by name
    for f in doc:
        assert set(f) == {'frame', 'image', 'width', 'height', 'detections'}
        assert (f['width'], f['height']) == (720, 850)
        for d in f['detections']:
            assert set(d) == {'class_id', 'label', 'score', 'bbox_xyxy', 'track_id'}
            assert isinstance(d['track_id'], int) and d['track_id'] >= 1
    # The two people in front keep their ids while the camera pans: each id stays on the
    # same label, and its box moves left by about the pan each frame.
    first = {d['track_id']: d for d in doc[0]['detections'] if d['score'] > 0.8}
    assert len(first) == 2  # (the bus fills the frame's width: its box cannot move)
    for f in doc[1:]:
        for d in f['detections']:
            if d['track_id'] in first:
                start = first[d['track_id']]
                assert d['label'] == start['label']
                centre = (d['bbox_xyxy'][0] + d['bbox_xyxy'][2]) / 2
                start_centre = (start['bbox_xyxy'][0] + start['bbox_xyxy'][2]) / 2
                # the tiny model's boxes jitter by a few tens of pixels on crops
                assert abs(centre - start_centre + 12 * f['frame']) < 45, (d, start)
    assert all(set(first) <= {d['track_id'] for d in f['detections']} for f in doc)


def test_track_a_video_and_listed_images_with_save(bus_jpg, tmp_path):
    frames = pan_frames(bus_jpg, tmp_path / 'pan', 4)
    video = as_video(frames, tmp_path / 'pan.avi')
    proc = run_cli('track', str(video), str(frames[0]), '--json', '--tracker', 'botsort',
                   '--save', str(tmp_path / 'out'))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [f['image'] for f in doc] == [str(video)] * 4 + [str(frames[0])]
    assert all(f['detections'] for f in doc)
    saved = sorted(p.name for p in (tmp_path / 'out').iterdir())
    assert saved == [f'frame_{i:06d}.jpg' for i in range(5)]
    drawn = cv2.imread(str(tmp_path / 'out' / 'frame_000000.jpg'))
    assert drawn.shape == (850, 720, 3) and \
        (cv2.absdiff(drawn, cv2.imread(str(frames[0]))).max(axis=2) > 60).mean() > 0.005


def test_an_ultralytics_tracker_yaml_carries_over(bus_jpg, tmp_path):
    pan_frames(bus_jpg, tmp_path / 'pan', 3)
    botsort = tmp_path / 'botsort.yaml'
    botsort.write_text('tracker_type: botsort\ntrack_high_thresh: 0.25\ntrack_low_thresh: 0.1\n'
                       'new_track_thresh: 0.25\ntrack_buffer: 30\nmatch_thresh: 0.8\n'
                       'fuse_score: True\ngmc_method: sparseOptFlow\nproximity_thresh: 0.5\n'
                       'appearance_thresh: 0.8\nwith_reid: False\nmodel: auto\n')
    proc = run_cli('track', str(tmp_path / 'pan'), '--tracker-config', str(botsort))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count('#1 ') == 3
    bad = tmp_path / 'bad.yaml'
    bad.write_text('tracker_type: bytetrack\ntrack_buffer: 0\n')
    proc = run_cli('track', str(tmp_path / 'pan'), '--tracker-config', str(bad))
    assert proc.returncode == 2 and proc.stdout == ''
    assert proc.stderr.strip().splitlines() == [
        f'yolo-trt: --tracker-config {bad}: track_buffer: 0 must be at least 1 (frames)']
    # A hostile user's attack (helper): a wrong type failed without naming the key, or
    # passed ('maybe' as true)
    for line, said in (('track_buffer: abc', "track_buffer: 'abc' is not a whole number"),
                       ('fuse_score: maybe', "fuse_score: 'maybe' is not true or false"),
                       ('match_thresh: [1]', 'match_thresh: [1] is not a number')):
        bad.write_text(f'tracker_type: bytetrack\n{line}\n')
        proc = run_cli('track', str(tmp_path / 'pan'), '--tracker-config', str(bad))
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
            f'yolo-trt: --tracker-config {bad}: {said}'], proc.stderr


def test_a_tracker_config_that_is_a_pipe_is_one_line_at_once(bus_jpg, tmp_path):
    """A hostile user's attack (helper): the YAML was read with read_text(), so a FIFO
    blocked for ever and /dev/zero grew the process by gigabytes; the README promises one
    line at once for both."""
    import os
    import time

    pipe = tmp_path / 'tracker.yaml'
    os.mkfifo(pipe)
    start = time.monotonic()
    proc = run_cli('track', str(bus_jpg), '--tracker-config', str(pipe), timeout=60)
    assert time.monotonic() - start < 60
    assert proc.returncode == 2 and proc.stdout == ''
    assert proc.stderr.strip().splitlines() == [
        f'yolo-trt: --tracker-config: file {pipe} is not a regular file (a pipe or a device)']


def test_track_says_a_video_ended_before_its_last_frame(bus_jpg, tmp_path):
    """A video cut short (a copy or a download interrupted) still opens, and its reader
    just stops early: track said nothing and exited 0, as if every
    frame had been tracked. The frames that were read are kept; one line names the video
    and how far it got, and the exit status is 1, as for any input that failed."""
    frames = pan_frames(bus_jpg, tmp_path / 'pan', 8)
    video = as_video(frames, tmp_path / 'cut.avi')
    video.write_bytes(video.read_bytes()[:int(video.stat().st_size * 0.6)])
    proc = run_cli('track', str(video), '--json', '--backend', 'onnxruntime')
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert 0 < len(doc) < len(frames) and [f['frame'] for f in doc] == list(range(len(doc)))
    errors = [line for line in proc.stderr.splitlines() if line.startswith('yolo-trt:')]
    assert errors == [f'yolo-trt: {video}: the video ended after {len(doc)} of its '
                      f'{len(frames)} frames (cut short or corrupt)'], proc.stderr


def test_track_reports_a_bad_frame_in_one_line_and_goes_on(bus_jpg, tmp_path):
    frames = pan_frames(bus_jpg, tmp_path / 'pan', 3)
    frames[1].write_bytes(b'\x89PNG broken')
    proc = run_cli('track', str(tmp_path / 'pan'), '--json')
    assert proc.returncode == 1
    assert [f['frame'] for f in json.loads(proc.stdout)] == [0, 2]
    errors = [line for line in proc.stderr.splitlines() if line.startswith('yolo-trt:')]
    assert len(errors) == 1 and str(frames[1]) in errors[0]


CAMERA_YAML = """\
image_width: 810
image_height: 1080
camera_name: bus_camera
camera_matrix:
  rows: 3
  cols: 3
  data: [700.0, 0.0, 405.0, 0.0, 700.0, 540.0, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [0.0, 0.0, 0.0, 0.0, 0.0]
"""


def test_detect_with_depth_adds_positions_in_metres(bus_jpg, tmp_path):
    """A depth image: the wall at 6 m, everything in the lower half at 2.5 m, a hole over
    the left quarter (no depth)."""
    depth = np.full((1080, 810), 6000, np.uint16)
    depth[540:, :] = 2500
    depth[:, :200] = 0
    cv2.imwrite(str(tmp_path / 'depth.png'), depth)
    (tmp_path / 'camera.yaml').write_text(CAMERA_YAML)
    proc = run_cli('detect', str(bus_jpg), '--depth', str(tmp_path / 'depth.png'),
                   '--camera-info', str(tmp_path / 'camera.yaml'), '--json')
    assert proc.returncode == 0, proc.stderr
    (entry,) = json.loads(proc.stdout)
    with_depth = [d for d in entry['detections'] if d['position_m'] is not None]
    assert with_depth and len(with_depth) < len(entry['detections'])  # the hole: null
    for d in entry['detections']:
        assert set(d) == {'class_id', 'label', 'score', 'bbox_xyxy', 'position_m', 'size_m'}
        x1, y1, x2, y2 = d['bbox_xyxy']
        if d['position_m'] is None:
            assert x2 < 300  # only boxes over the hole have none
            continue
        x, y, z = d['position_m']
        centre_y = (y1 + y2) / 2
        assert z in (2.5, 6.0)
        assert x == pytest.approx(((x1 + x2) / 2 - 405) * z / 700, abs=1e-3)
        assert y == pytest.approx((centre_y - 540) * z / 700, abs=1e-3)
        assert d['size_m'][1] == pytest.approx((y2 - y1) * z / 700, abs=1e-3)


def test_detect_depth_errors(bus_jpg, tmp_path):
    (tmp_path / 'camera.yaml').write_text(CAMERA_YAML)
    cv2.imwrite(str(tmp_path / 'small.png'), np.full((100, 100), 1000, np.uint16))
    proc = run_cli('detect', str(bus_jpg), '--depth', str(tmp_path / 'small.png'),
                   '--camera-info', str(tmp_path / 'camera.yaml'), '--json')
    assert proc.returncode == 1
    assert [line for line in proc.stderr.splitlines() if line.startswith('yolo-trt:')] == [
        f'yolo-trt: {tmp_path}/small.png: depth image 100x100 is not the size of {bus_jpg} '
        f'(810x1080); it must be aligned to it']
    (entry,) = json.loads(proc.stdout)  # the 2D detections still come; no position (null)
    assert entry['detections'] and entry['detections'][0]['position_m'] is None
    proc = run_cli('detect', str(bus_jpg), '--depth', str(tmp_path / 'small.png'))
    assert proc.returncode == 2
    assert proc.stderr.strip() == ('yolo-trt: --depth needs --camera-info CAMERA.yaml (the '
                                   'camera matrix)')
    (tmp_path / 'zero.yaml').write_text(CAMERA_YAML.replace('[700.0,', '[0.0,'))
    proc = run_cli('detect', str(bus_jpg), '--depth', str(tmp_path / 'small.png'),
                   '--camera-info', str(tmp_path / 'zero.yaml'))
    assert proc.returncode == 2 and 'focal length fx 0, fy 700' in proc.stderr
