"""One batch of a detector node, without ROS: the newest frame of each camera, as received
(serialized bytes), in; for each frame either the serialized Detection2DArray to publish
or the reason it was refused, out.

parse (CDR, size from the header) -> decode (CompressedImage: one batch, on the GPU where
there is one) -> detect -> serialize. A bad frame is refused alone; the others go on.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from yolo_trt_ros.core.errors import ImageError, YoloTrtError
from yolo_trt_ros.core.gpu.jpeg import DeviceImage
from yolo_trt_ros.core.image.buffers import ImageView, view_image
from yolo_trt_ros.core.image.decode import decode_compressed
from yolo_trt_ros.core.pipeline.annotate import annotated
from yolo_trt_ros.core.pipeline.results import Detections
from yolo_trt_ros.core.runtime.detector import Detector
from yolo_trt_ros.core.serving.cdr import RawCompressed, Stamped, parse_compressed, parse_image
from yolo_trt_ros.core.serving.cdr_writer import detection_array_cdr
from yolo_trt_ros.core.serving.decoding import Decoded
from yolo_trt_ros.core.serving.frames import Frame


def parse_frame(data, compressed: bool,
                max_pixels: int) -> tuple[Stamped, ImageView | RawCompressed]:
    """A serialized Image or CompressedImage -> (its header, a view of its pixels, or for a
    CompressedImage its still-encoded payload, decoded later with the rest of the batch).
    Parses only what it must; a raw frame above max_pixels is refused from its header
    (ImageError 'too_large') before any pixel memory is allocated; raises ImageError."""
    if compressed:
        m = parse_compressed(data)
        return m.header, m
    m = parse_image(data)
    return m.header, view_image(m.data, m.height, m.width, m.encoding, m.step,
                                m.is_bigendian, max_pixels=max_pixels)


@dataclass(frozen=True)
class Served:
    """A frame's result: `message` is the serialized Detection2DArray to publish."""

    frame: Frame
    header: Stamped
    image: ImageView | DeviceImage  # DeviceImage: valid until the next batch
    detections: Detections
    message: bytes


@dataclass(frozen=True)
class Refused:
    camera: int
    cause: str  # a short stable key for counting ('too_large', 'corrupt', 'inference', ...)
    reason: str


@dataclass(frozen=True)
class BatchResult:
    served: list[Served]
    refused: list[Refused]
    taken: float  # time.monotonic() when the batch was taken


class BatchStep:
    """detector: the one Detector of the node; label(class_id) -> the hypothesis class_id."""

    def __init__(self, detector: Detector, compressed: bool, max_pixels: int,
                 label: Callable[[int], str]) -> None:
        self.detector, self.compressed = detector, compressed
        self.max_pixels, self.label = max_pixels, label

    def __call__(self, frames: list[Frame]) -> BatchResult:
        taken = time.monotonic()
        refused: list[Refused] = []
        parsed = []  # (frame, header, pixels: ImageView, or a payload still encoded)
        for frame in frames:
            if isinstance(frame.payload, Decoded):  # the camera's decode step ran already
                parsed.append((frame, frame.payload.header, frame.payload.image))
                continue
            try:
                parsed.append((frame, *parse_frame(frame.payload, self.compressed,
                                                   self.max_pixels)))
            except ImageError as exc:
                refused.append(Refused(frame.camera, exc.cause, str(exc)))
        encoded = [i for i, (_, _, image) in enumerate(parsed)
                   if isinstance(image, RawCompressed)]
        if encoded:  # one batch: on the GPU where there is one
            decoded = self.detector.decode_compressed(
                [(parsed[i][2].data, parsed[i][2].format) for i in encoded], self.max_pixels)
            for i, image in zip(encoded, decoded, strict=True):
                parsed[i] = (*parsed[i][:2], image)
        good = []
        for frame, header, image in parsed:
            if isinstance(image, ImageError):
                refused.append(Refused(frame.camera, image.cause, str(image)))
            else:
                good.append((frame, header, image))
        if not good:
            return BatchResult([], refused, taken)
        try:
            results = self.detector.detect([image for _, _, image in good])
        except YoloTrtError as exc:
            refused += [Refused(frame.camera, 'inference', f'inference failed: {exc}')
                        for frame, _, _ in good]
            return BatchResult([], refused, taken)
        served = [Served(frame, header, image, det,
                         detection_array_cdr(det, header, self.label))  # no Python message
                  for (frame, header, image), det in zip(good, results, strict=True)]
        return BatchResult(served, refused, taken)

    def annotated(self, served: Served) -> np.ndarray:
        """The frame as (H, W, 3) uint8 BGR with its detections drawn, at most
        ANNOTATED_MAX_PIXELS (a 64 MP frame would make a 192 MB message). A frame decoded
        on the GPU is decoded again on the CPU for drawing (only while someone watches)."""
        image = served.image
        if not isinstance(image, ImageView):
            payload = served.frame.payload
            raw = payload.image if isinstance(payload, Decoded) else parse_compressed(payload)
            image = decode_compressed(raw.data, raw.format, self.max_pixels)
        return annotated(image, served.detections, self.detector.label)
