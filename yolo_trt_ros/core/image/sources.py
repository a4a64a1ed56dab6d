"""Frames from files: an image, a folder of images (sorted by name) or a video, as BGR
arrays, for the image_source node and the CLI."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from yolo_trt_ros.core.image.buffers import to_bgr
from yolo_trt_ros.core.image.decode import read_image
from yolo_trt_ros.core.image.files import IMAGE_SUFFIXES, image_files


def frames_from(path: Path, loop: bool) -> Iterator[tuple[int | None, np.ndarray]]:
    """(index, BGR frame) from a file, a folder (sorted) or a video; ValueError if none.
    index identifies a still image (so its message can be reused); None for video."""
    if path.is_dir():
        files = image_files(path)
        if not files:
            raise ValueError(f'parameter path: no images in {path}')
        images = [to_bgr(read_image(str(f))) for f in files]
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        images = [to_bgr(read_image(str(path)))]
    else:
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise ValueError(f'parameter path: cannot open {path} as an image or a video')
        images = None
    while True:
        if images is not None:
            yield from enumerate(images)
        else:
            ok, frame = capture.read()
            if ok:
                yield None, frame
                continue
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        if not loop:
            return
