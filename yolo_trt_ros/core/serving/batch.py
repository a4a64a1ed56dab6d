"""One batch of a detector node, without ROS: the newest frame of each camera, as received
(serialized bytes), in; for each frame either the serialized Detection2DArray to publish
(and Detection3DArray, for a camera with depth) or the reason it was refused, out.

parse (CDR, size from the header) -> decode (CompressedImage: one batch, on the GPU where
there is one) -> detect -> track (per camera) -> 3D from depth (per camera) -> serialize
(with a segment model the label image of the masks, with a pose model the keypoints).
A bad frame, or a frame whose model output cannot be trusted, is refused alone; the
others go on. Bad depth costs a frame its 3D only.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import cv2
import numpy as np

from yolo_trt_ros.core.errors import ImageError, OutputError, YoloTrtError
from yolo_trt_ros.core.gpu.jpeg import DeviceImage
from yolo_trt_ros.core.image.buffers import ImageView, view_image
from yolo_trt_ros.core.image.decode import decode_compressed
from yolo_trt_ros.core.pipeline.annotate import annotated
from yolo_trt_ros.core.pipeline.masks import label_dtype
from yolo_trt_ros.core.pipeline.results import Detections
from yolo_trt_ros.core.pipeline.tracking.cmc import grey_for_cmc
from yolo_trt_ros.core.runtime.detector import Detector
from yolo_trt_ros.core.serving.cameras import CameraState, DepthProblem
from yolo_trt_ros.core.serving.cdr import RawCompressed, Stamped, parse_compressed, parse_image
from yolo_trt_ros.core.serving.cdr_writer import (
    detection3d_array_cdr,
    detection_array_cdr,
    image_cdr,
    keypoints_array_cdr,
)
from yolo_trt_ros.core.serving.config import DepthConfig
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


# What the node warms up for: buffers sized for 1080p serve every smaller frame too.
# YOLO_TRT_ROS_WARM_UP_SIZE=WxH asks for another size (A/B runs of bench/capacity.py).
WARM_UP_SIZE = (1080, 1920)
WARM_UP_ENV = 'YOLO_TRT_ROS_WARM_UP_SIZE'


def warm_up_size() -> tuple[int, int]:
    """(h, w) of the warm-up frames: WARM_UP_SIZE, or WxH from YOLO_TRT_ROS_WARM_UP_SIZE."""
    given = os.environ.get(WARM_UP_ENV, '')
    if not given:
        return WARM_UP_SIZE
    try:
        w, h = (int(v) for v in given.lower().split('x'))
    except ValueError:
        raise ValueError(f'{WARM_UP_ENV}={given!r}: expected WIDTHxHEIGHT, e.g. 640x480') from None
    if not (0 < w <= 16384 and 0 < h <= 16384):
        raise ValueError(f'{WARM_UP_ENV}={given!r}: each side from 1 to 16384')
    return h, w


@dataclass(frozen=True)
class Served:
    """A frame's result: `message` is the serialized Detection2DArray to publish;
    message_3d the Detection3DArray (a camera with depth), or depth_problem why not."""

    frame: Frame
    header: Stamped
    image: ImageView | DeviceImage  # DeviceImage: valid until the next batch
    detections: Detections
    message: bytes
    message_3d: bytes | None = None
    depth_problem: DepthProblem | None = None
    left_out: int = 0  # detections without valid depth, not in message_3d
    masks: bytes | None = None  # a segment model's label image (sensor_msgs/Image)
    keypoints: bytes | None = None  # a pose model's keypoints (Detection2DArray)


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
    """detector: the one Detector of the node; label(class_id) -> the hypothesis class_id;
    cameras: each camera's state (tracker, depth), or None (no tracking, no depth)."""

    def __init__(self, detector: Detector, compressed: bool, max_pixels: int,
                 label: Callable[[int], str], cameras: list[CameraState] | None = None,
                 depth: DepthConfig | None = None) -> None:
        self.detector, self.compressed = detector, compressed
        self.max_pixels, self.label = max_pixels, label
        self.cameras, self.depth = cameras, depth

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
            # A JPEG handed on still encoded (decoding.CameraDecoders.pass_on) had its
            # headers judged in the callback: the decoder need not judge them again.
            decoded = self.detector.decode_compressed(
                [(parsed[i][2].data, parsed[i][2].format) for i in encoded], self.max_pixels,
                judged={k for k, i in enumerate(encoded)
                        if isinstance(parsed[i][0].payload, Decoded)})
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
            results = self.detector.detect_each([image for _, _, image in good])
        except YoloTrtError as exc:
            refused += [Refused(frame.camera, 'inference', f'inference failed: {exc}')
                        for frame, _, _ in good]
            return BatchResult([], refused, taken)
        served = []
        for (frame, header, image), det in zip(good, results, strict=True):
            if isinstance(det, OutputError):  # this frame's output only
                refused.append(Refused(frame.camera, det.cause, str(det)))
            else:
                served.append(self._serve(frame, header, image, det))
        return BatchResult(served, refused, taken)

    def warm_up(self, cameras: int, size: tuple[int, int] | None = None) -> tuple[int, int]:
        """Run the pipeline on synthetic frames of size (h, w), in the batches that
        `cameras` cameras make: the first decode (on the GPU: nvImageCodec's start and its
        buffers for frames that large, and its path for a lone frame), the staging buffers
        and kernels of each batch size, the backend's first run. The node calls it before
        it subscribes, so its first frames are served like the rest (issue 21). Touches no
        camera's tracks or counters; raises YoloTrtError where inference cannot run.
        Returns the (h, w) it warmed up for: at most max_pixels (a smaller limit would
        refuse the frames)."""
        h, w = size or warm_up_size()
        if h * w > self.max_pixels:
            scale = (self.max_pixels / (h * w)) ** 0.5
            h, w = max(1, int(h * scale)), max(1, int(w * scale))
        yy, xx = np.mgrid[0:h, 0:w]
        bgr = np.repeat(((xx + yy) % 256).astype(np.uint8)[..., None], 3, axis=2)
        jpeg = cv2.imencode('.jpg', bgr)[1].tobytes() if self.compressed else b''

        def frames(n: int) -> list:
            if not self.compressed:
                return [ImageView(bgr, 'bgr')] * n
            return [image for image in self.detector.decode_compressed(
                [(jpeg, 'jpeg')] * n, self.max_pixels) if not isinstance(image, ImageError)]

        # Cameras are not in step: a batch holds any number of frames up to one per camera.
        # On the GPU path each batch size has buffers and an output decoder of its own (made
        # on its first batch: pinned and device allocations, which synchronise the GPU), so
        # every size is run here; on the CPU only the largest and a lone frame. The lone
        # frame is decoded alone: nvImageCodec decodes a lone JPEG another way, whose first
        # use took 300 ms on the H100 host (the first time one camera's frame came alone,
        # 58 frames were dropped behind it). A decode call ends the last call's device
        # images, so it comes last.
        largest = min(cameras, self.detector.max_batch or cameras)  # larger ones are chunked
        sizes = (range(largest, 1, -1) if self.detector.preprocess_device == 'gpu'
                 else [largest] if largest > 1 else [])
        images = frames(largest) if sizes else []
        for n in sizes if images else ():
            self.detector.detect(images[:n])
        lone = frames(1)
        if lone:
            self.detector.detect(lone)
        return h, w

    def _serve(self, frame: Frame, header: Stamped, image: ImageView | DeviceImage,
               det: Detections) -> Served:
        """Track, find positions, serialize (no Python message)."""
        state = self.cameras[frame.camera] if self.cameras else None
        if state is not None:
            det = state.track(det, header, lambda: self._grey(frame, image))
        served = Served(frame, header, image, det, detection_array_cdr(det, header, self.label),
                        **self._head_messages(det, header))
        if state is None or self.depth is None or not self.depth.enabled(frame.camera):
            return served
        d = self.depth
        found = state.positions(det, header, (image.width, image.height), d.slop_s, d.min_m,
                                d.max_m)
        if isinstance(found, DepthProblem):
            return replace(served, depth_problem=found)
        return replace(served, message_3d=detection3d_array_cdr(
            found.detections, found.centres, found.sizes, header, self.label),
            left_out=found.left_out)

    def _head_messages(self, det: Detections, header: Stamped) -> dict[str, bytes]:
        """The masks' label image (value i + 1: detection i of the published array, so
        made after tracking) and the keypoints array, for the heads that have them."""
        out = {}
        if det.masks is not None:
            label = det.masks.label_image()
            out['masks'] = image_cdr(label, 'mono8' if label.dtype == label_dtype(1) else
                                     'mono16', header)
        if det.keypoints is not None:
            out['keypoints'] = keypoints_array_cdr(det, header,
                                                   self.detector.head.keypoint_names)
        return out

    def _grey(self, frame: Frame, image: ImageView | DeviceImage
              ) -> tuple[np.ndarray, float] | None:
        """The frame, small and grey, for BoT-SORT's camera-motion compensation. A frame
        decoded on the GPU is decoded again on the CPU at a quarter size (libjpeg scales
        while decoding: a few ms for 1080p), rather than downloaded."""
        if isinstance(image, ImageView):
            return grey_for_cmc(image.pixels, image.order)
        raw = _compressed(frame)
        small = cv2.imdecode(np.frombuffer(raw.data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_4)
        if small is None:
            return None
        grey, scale = grey_for_cmc(small[:, :, None], 'gray')
        return grey, scale * image.width / small.shape[1]

    def annotated(self, served: Served) -> np.ndarray | ImageError:
        """The frame as (H, W, 3) uint8 BGR with its detections drawn, at most
        ANNOTATED_MAX_PIXELS (a 64 MP frame would make a 192 MB message). A frame decoded
        on the GPU is decoded again on the CPU for drawing (only while someone watches);
        where the CPU's decoder refuses what nvJPEG took, the reason (the frame's
        detections stand)."""
        image = served.image
        if not isinstance(image, ImageView):
            raw = _compressed(served.frame)
            try:
                image = decode_compressed(raw.data, raw.format, self.max_pixels)
            except ImageError as exc:
                return exc.with_traceback(None)
            except MemoryError:
                return ImageError('no memory to decode it again for drawing', 'decode')
        return annotated(image, served.detections, self.detector.label,
                         skeleton=self.detector.head.skeleton)


def _compressed(frame: Frame) -> RawCompressed:
    """The still-encoded payload of a frame the GPU decoded (passed on by the camera's
    decode step, or as received)."""
    payload = frame.payload
    return payload.image if isinstance(payload, Decoded) else parse_compressed(payload)
