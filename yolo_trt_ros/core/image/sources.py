"""Frames from files: an image, a folder of images (sorted by name) or a video, as BGR
arrays, for the image_source node and the CLI."""
from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from yolo_trt_ros.core.errors import ImageError
from yolo_trt_ros.core.image.buffers import BGR, ImageView, check_pixels, to_bgr
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


def frames_of(inputs: list[str], max_pixels: int | None = None
              ) -> Iterator[tuple[str, ImageView | ImageError]]:
    """(name, image) for every frame of the inputs in order, read one at a time: a folder's
    images sorted by name, a video's frames (named by the video), an image file. A frame
    that cannot be read comes as its ImageError, and the next one follows."""
    limit = {} if max_pixels is None else {'max_pixels': max_pixels}
    for item in inputs:
        path = Path(item)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            mode = None  # read_image says it is missing
        except OSError as exc:  # a name too long, a loop of links, no permission
            yield item, ImageError(f'cannot read {item}: {exc.strerror}', 'read')
            continue
        if mode is not None and stat.S_ISDIR(mode):
            try:
                files = [str(f) for f in image_files(path)]
            except OSError as exc:
                yield item, ImageError(f'cannot list {item}: {exc.strerror}', 'read')
                continue
            if not files:
                yield item, ImageError(f'no images in {item}', 'read')
        elif mode is None or path.suffix.lower() in IMAGE_SUFFIXES:
            files = [item]
        else:  # a video: a file, a pipe it streams through (`cat v.mkv | ... /dev/stdin`;
            # opening one waits for its writer, as any reader of a pipe does) or a camera
            yield from _video(item, max_pixels)
            continue
        for name in files:
            try:
                yield name, read_image(name, **limit)
            except ImageError as exc:
                yield name, exc


# Containers that store their frame count (AVI's header, MP4's and QuickTime's sample
# tables). Elsewhere (Matroska, WebM, MPEG-TS) FFmpeg estimates it from the duration and
# the nominal rate, which a whole variable-rate recording misses by a quarter (a helper's
# ffmpeg-made MKV: 90 frames read, 119 estimated): such a video is read to its end unjudged.
COUNTED = ('.avi', '.mp4', '.m4v', '.mov')
COUNT_SLACK = 1  # a last frame a decoder holds back (B-frames) is not a file cut short


def _video(item: str, max_pixels: int | None = None
           ) -> Iterator[tuple[str, ImageView | ImageError]]:
    """The video's frames; after the last one read, an ImageError where a container that
    stores its frame count declared more (a file cut short still opens, and its reader
    just stops early). Frames above max_pixels: one ImageError for the video, none read."""
    capture = cv2.VideoCapture(item)
    if not capture.isOpened():
        yield item, ImageError(f'cannot open {item} as an image or a video', 'read')
        return
    try:
        size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if max_pixels is not None and min(size) > 0:  # 0: a stream that does not say
            try:
                check_pixels(*size, max_pixels, f'{item}: its frames are ')
            except ImageError as exc:
                yield item, exc
                return
        declared, read = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            read += 1
            yield item, ImageView(frame, BGR)
    finally:
        capture.release()
    if Path(item).suffix.lower() in COUNTED and read < declared - COUNT_SLACK:
        yield item, ImageError(f'{item}: the video ended after {read} of its {declared} '
                               'frames (cut short or corrupt)', 'read')
