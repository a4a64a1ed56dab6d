"""The Detector: preprocess -> backend -> postprocess, the one pipeline that the node, the
CLI and the benchmarks all run."""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from yolo_trt_ros.core.backends.base import Backend
from yolo_trt_ros.core.backends.select import REAL_RUNTIME, RuntimeParts, open_backend
from yolo_trt_ros.core.build.lookup import find_cached_engine
from yolo_trt_ros.core.build.options import BuildOptions
from yolo_trt_ros.core.defaults import (
    BACKEND,
    GPU_PREPROCESS,
    GPU_PREPROCESS_CHOICES,
    MAX_IMAGE_PIXELS,
    OUTPUT_FORMAT,
    check_choice,
)
from yolo_trt_ros.core.errors import CudaError, ImageError, ModelError, OutputError
from yolo_trt_ros.core.gpu.cuda import GpuInfo
from yolo_trt_ros.core.gpu.decode import FORMATS as GPU_DECODE_FORMATS
from yolo_trt_ros.core.gpu.decode import GpuDecoder
from yolo_trt_ros.core.gpu.graphs import StreamGraphs
from yolo_trt_ros.core.gpu.jpeg import DeviceImage, open_gpu_jpeg
from yolo_trt_ros.core.gpu.masks import GpuMasks
from yolo_trt_ros.core.image.buffers import ImageView
from yolo_trt_ros.core.image.decode import decode_compressed
from yolo_trt_ros.core.image.frame_buffers import FrameBuffers
from yolo_trt_ros.core.image.header import JPEG, codec_of
from yolo_trt_ros.core.pipeline.decode import postprocess
from yolo_trt_ros.core.pipeline.labels import labels_from_metadata, load_labels
from yolo_trt_ros.core.pipeline.masks import MaskGeometry
from yolo_trt_ros.core.pipeline.preprocess import Letterbox, Preprocessor
from yolo_trt_ros.core.pipeline.results import Detections, PostprocessConfig
from yolo_trt_ros.core.pipeline.tasks import read_head

if TYPE_CHECKING:
    from yolo_trt_ros.core.gpu.preprocess import Source

_LOG = logging.getLogger(__name__)
# Pinned memory for frames in flight: 8 cameras x 4 buffers of 1080p bgr8 need 200 MB; a
# frame beyond the limit gets ordinary memory (its upload goes through the driver's copy).
PINNED_FRAMES_LIMIT = 512 << 20


@dataclass(frozen=True)
class DetectorConfig:
    model: Path
    backend: str = BACKEND
    engine: Path | None = None
    labels: Path | None = None  # overrides the names in the model's metadata
    output_format: str = OUTPUT_FORMAT
    post: PostprocessConfig = PostprocessConfig()
    gpu_preprocess: str = GPU_PREPROCESS  # auto: on the GPU wherever the backend is TensorRT
    cuda_graphs: bool = True  # the GPU path's per-frame work replayed as a CUDA graph
    gpu_nms: bool = True  # the GPU path's NMS on the GPU (core/gpu/nms.py)
    # Where to look for the cached engine when `engine` is None (the builder's options).
    build: BuildOptions | None = None
    cache_dir: Path | None = None


@dataclass
class StageTimes:
    """Seconds spent in each stage by the last detect() call."""

    preprocess: float = 0.0
    infer: float = 0.0
    postprocess: float = 0.0


class Detector:
    """Owns a backend; detect() takes images of any size and encoding order."""

    def __init__(self, backend: Backend, names: list[str] | None = None,
                 output_format: str = OUTPUT_FORMAT,
                 post: PostprocessConfig = PostprocessConfig(),
                 gpu_preprocess: str = GPU_PREPROCESS, source: str = 'model',
                 cuda_graphs: bool = True, gpu_nms: bool = True) -> None:
        self.backend = backend
        spec = backend.input
        self.input_size = backend.profile.input_hw
        self.max_batch = backend.profile.max_batch  # None: any batch
        batch = spec.shape[0] or backend.profile.opt[0]
        self._pre = Preprocessor(*self.input_size, batch=batch, dtype=spec.dtype)
        self._pres = {self._pre.batch: self._pre}
        self.num_classes: int | None = None
        self.names = names
        if names is not None:
            self.num_classes = len(names)
        # The head (detect, obb, segment, pose) and its layout, checked against the outputs.
        self.head = read_head([(o.shape, o.dtype) for o in backend.outputs],
                              backend.info.metadata, self.num_classes, output_format,
                              self.input_size, source, backend.info.output_format)
        self.output_format = self.head.fmt
        self.post = post
        self.times = StageTimes()
        self._gpu_mode = gpu_preprocess
        self._cuda_graphs = cuda_graphs
        self._gpu_nms = gpu_nms
        self._open_gpu()
        # Per input shape: the GPU decoder (and a segment head's GPU masks), or None.
        self._decoders: dict[tuple[int, ...], tuple[GpuDecoder, GpuMasks | None] | None] = {}
        self._jpeg: tuple | None = None  # (GPU JPEG decoder or None,), chosen on first use
        self.suspended = False

    @classmethod
    def open(cls, config: DetectorConfig, parts: RuntimeParts = REAL_RUNTIME,
             gpu: GpuInfo | None = None) -> Detector:
        """The detector for config: the engine given, else the cached engine for the build
        options (exactly as the engine_builder made it), else ONNX Runtime where allowed.
        parts: the TensorRT runtime to use (tests hand a named double in)."""
        engine, why = config.engine, ''
        if engine is None and config.backend != 'onnxruntime':
            engine, why = find_cached_engine(config.model, config.build or BuildOptions(),
                                             config.cache_dir)
        elif engine is not None and not Path(engine).exists():
            engine, why = None, f'engine {engine} does not exist'
        backend = open_backend(config.model, config.backend, engine, why, parts, gpu)
        try:
            names = (load_labels(config.labels) if config.labels is not None
                     else labels_from_metadata(backend.info.metadata))
            return cls(backend, names, config.output_format, config.post,
                       config.gpu_preprocess, str(config.model), config.cuda_graphs,
                       config.gpu_nms)
        except BaseException:
            backend.close()
            raise

    def _open_gpu(self) -> None:
        """The GPU preprocessor, and the CUDA graphs of the GPU path, where they run."""
        self._gpu_pre = self._gpu_preprocessor(self._gpu_mode)
        self.graphs: StreamGraphs | None = None
        if self._gpu_pre is not None and self._cuda_graphs:
            io = self.backend.device_io()
            self.graphs = StreamGraphs(io.stream, refusal=io.graph_refusal)

    def _gpu_preprocessor(self, mode: str):
        """The GPU path where the backend keeps its input on the GPU (TensorRT): 'auto'
        takes it when possible and falls back to the CPU, logged once with the reason, where
        the kernel cannot be built for this GPU; 'off' never; 'on' insists."""
        check_choice('gpu_preprocess', mode, GPU_PREPROCESS_CHOICES)
        from yolo_trt_ros.core.gpu.cuda import probe_gpu

        io = self.backend.device_io()
        on_device = io is not None and probe_gpu().count > 0
        if mode == 'off' or (mode == 'auto' and not on_device):
            return None
        if not on_device:
            raise ModelError(f'gpu_preprocess on needs the TensorRT backend on a GPU, not '
                             f'{self.backend.info.name} ({probe_gpu().reason or "no GPU"})')
        from yolo_trt_ros.core.gpu.preprocess import GpuPreprocessor

        try:
            return GpuPreprocessor(*self.input_size, batch=self._pre.batch,
                                   dtype=self.backend.input.dtype, stream=io.stream, out_ptr=0)
        except CudaError as exc:
            if mode == 'on':
                raise
            _LOG.warning(f'GPU preprocessing unavailable ({exc}); preprocessing on the CPU')
            return None

    @property
    def preprocess_device(self) -> str:
        return 'gpu' if self._gpu_pre is not None else 'cpu'

    def frame_buffers(self) -> FrameBuffers:
        """Host memory for camera frames taken straight from DDS (ros/rcl_take.py): pinned
        where preprocessing uploads them to the GPU, so each upload is one DMA from where
        the frame landed; ordinary memory otherwise. Close it before this detector."""
        if self._gpu_pre is None:
            return FrameBuffers()
        from yolo_trt_ros.core.gpu.cuda import pinned_allocator

        return FrameBuffers(pinned_allocator(self._gpu_pre.cuda), PINNED_FRAMES_LIMIT, 'pinned')

    def set_post(self, **changes) -> None:
        """Change thresholds and filters at run time (validated as a whole)."""
        self.post = dataclasses.replace(self.post, **changes)

    def label(self, class_id: int) -> str:
        if self.names is not None and 0 <= class_id < len(self.names):
            return self.names[class_id]
        return str(class_id)

    @property
    def task(self) -> str:
        return self.head.task

    def detect(self, images: list[ImageView]) -> list[Detections]:
        """Detections for each image, in the same order; raises the OutputError of the
        first image whose output cannot be trusted."""
        results = self.detect_each(images)
        for result in results:
            if isinstance(result, OutputError):
                raise result
        return results

    def detect_each(self, images: list[ImageView | DeviceImage]
                    ) -> list[Detections | OutputError]:
        """Detections for each image, or the OutputError of an image whose output cannot
        be trusted (NaN masks, an absurd angle): the other images are served."""
        results: list[Detections | OutputError] = []
        chunk = self.max_batch or len(images) or 1
        for start in range(0, len(images), chunk):
            results.extend(self._detect_batch(images[start:start + chunk]))
        return results

    def preprocess(self, images: list[ImageView | DeviceImage]) -> list[Letterbox]:
        """The first stage of detect(), public for benchmarks: each image letterboxed into
        slot i of the model input, on the CPU (the preprocessor's buffer) or on the GPU
        (the engine's input buffer, queued on the backend's stream). At most max_batch
        images; returns each image's geometry."""
        self._batch_shape(len(images))
        if self._gpu_pre is None:
            return [self._pre(image, slot) for slot, image in enumerate(images)]
        pre = self._gpu_pre
        return [pre.letterbox(src, slot) for slot, src in enumerate(self._upload(images))]

    def _upload(self, images: list[ImageView | DeviceImage]) -> list[Source]:
        """Queue each frame's upload (a device frame stays where it is) and point the GPU
        preprocessor at the engine input of this batch's shape."""
        pre = self._gpu_pre
        pre.out_ptr = self.backend.device_io().input_ptr(self._pre.buffer.shape)
        return [pre.source_of(image) if isinstance(image, DeviceImage) else
                pre.upload(image, slot) for slot, image in enumerate(images)]

    def _detect_batch(self, images: list[ImageView | DeviceImage]
                      ) -> list[Detections | OutputError]:
        t0 = time.perf_counter()
        if self._gpu_pre is not None:  # decode on the GPU too, where there is a decoder
            gpu = self._gpu_decoder(self._batch_shape(len(images)))
            if gpu is not None:
                return self._detect_on_gpu(images, *gpu, t0)
        boxes = self.preprocess(images)
        t1 = time.perf_counter()
        if self._gpu_pre is None:
            outputs = self.backend.infer(self._pre.buffer)
        else:  # preprocessed on the GPU, a layout without GPU decoding: download it
            outputs = self.backend.device_io().run(self._pre.buffer.shape)
        t2 = time.perf_counter()
        results = [self._decode_on_cpu(outputs, i, box) for i, box in enumerate(boxes)]
        self.times = StageTimes(t1 - t0, t2 - t1, time.perf_counter() - t2)
        return results

    def _batch_shape(self, images: int) -> tuple[int, ...]:
        """The model input's shape for a batch of images. Dynamic batch: one preprocessor
        (and buffer) per batch size, made once."""
        if self.backend.input.shape[0] is None and self._pre.batch != images:
            pre = self._pres.get(images)
            if pre is None:
                pre = self._pres[images] = Preprocessor(*self.input_size, batch=images,
                                                        dtype=self.backend.input.dtype)
            self._pre = pre
        return self._pre.buffer.shape

    def _detect_on_gpu(self, images: list[ImageView | DeviceImage], decoder: GpuDecoder,
                       masks: GpuMasks | None, t0: float) -> list[Detections | OutputError]:
        """The GPU path with the frame's work after the upload as one CUDA graph per
        (engine shape since its last change, frame count, host frames' places and sizes,
        thresholds, max_detections, agnostic): letterbox kernels of host frames (and uploads
        from pinned staging), the engine's enqueue, the decode and NMS kernels and their
        downloads (core/gpu/graphs.py). Frames already on the device are letterboxed just
        before the graph, from wherever they lie."""
        post = self.post  # one read: the node may swap it between frames, never within one
        n_allowed = decoder.prepare(post)
        if n_allowed == 0:  # no allowed class in range: nothing to run
            self.times = StageTimes()
            return [Detections.empty() for _ in images]
        shape, io, head, pre = self._pre.buffer.shape, self.backend.device_io(), self.head, \
            self._gpu_pre
        sources = self._upload(images)
        out_ptr = io.output_buffer(shape, head.box_output)[0]
        t1 = time.perf_counter()
        # A frame the GPU decoded lies wherever nvImageCodec put it this time: its kernel is
        # queued before the graph, so that device pointers that change from batch to batch
        # do not make every batch a new graph (seen on the H100 host: 16 captures, 16
        # launches, graphs off). A frame uploaded from the host lies in this slot's staging.
        before = {slot: pre.letterbox(src, slot) for slot, src in enumerate(sources)
                  if isinstance(images[slot], DeviceImage)}
        inside = tuple((slot, src) for slot, src in enumerate(sources) if slot not in before)

        def work() -> dict[int, Letterbox]:
            boxes = {slot: pre.letterbox(src, slot) for slot, src in inside}
            io.run(shape, download=False)
            decoder.queue(out_ptr, len(images), n_allowed, post)
            return boxes

        if self.graphs is None:
            boxes = work()
        else:  # the engine's context must not have changed shape since the capture
            # the frame count too: an engine of fixed batch runs any count in one shape
            key = (io.shape_changes, shape, len(images), inside, n_allowed,
                   post.conf_threshold, post.iou_threshold, post.max_detections,
                   post.agnostic)
            boxes = self.graphs.run(key, work)
        boxes = [before[slot] if slot in before else boxes[slot] for slot in range(len(images))]
        t2 = time.perf_counter()
        maskers = None if masks is None else self._gpu_maskers(io, shape, masks, boxes)
        results = decoder.collect(out_ptr, boxes, post, maskers, n_allowed)
        self.times = StageTimes(t1 - t0, t2 - t1, time.perf_counter() - t2)
        return results

    def _decode_on_cpu(self, outputs: list[np.ndarray], i: int,
                       box: Letterbox) -> Detections | OutputError:
        head = self.head
        protos = outputs[head.proto_output][i] if head.task == 'segment' else None
        try:
            return postprocess(outputs[head.box_output][i], head.fmt, box, self.post, head,
                               protos)
        except OutputError as exc:
            return exc

    def _gpu_maskers(self, io, shape: tuple[int, ...], masks: GpuMasks,
                     boxes: list[Letterbox]) -> list:
        """One mask maker per image, reading its prototypes where the engine wrote them."""
        head = self.head
        ptr, (_, m, ph, pw) = io.output_buffer(shape, head.proto_output)
        per_image = m * ph * pw * masks.dtype.itemsize

        def maker(slot: int, box: Letterbox):
            geometry = MaskGeometry(box, head.proto_stride, (ph, pw))
            return lambda coefficients, xyxy: masks(ptr + slot * per_image, m, (ph, pw),
                                                    coefficients, xyxy, geometry, slot)
        return [maker(slot, box) for slot, box in enumerate(boxes)]

    def _gpu_decoder(self, shape: tuple[int, ...]):
        """(GPU output decoder, GPU masks or None) for an input shape (made once per
        shape), or None where the layout needs none (end2end) or a part cannot start
        (logged once): then the outputs are downloaded and decoded on the CPU."""
        if shape in self._decoders:
            return self._decoders[shape]
        made = None
        head = self.head
        out = self.backend.outputs[head.box_output]
        floats = (np.float32, np.float16)
        if self.output_format in GPU_DECODE_FORMATS and out.dtype in floats:
            io = self.backend.device_io()
            decoder = masks = None
            try:
                decoder = GpuDecoder(self.output_format,
                                     io.output_buffer(shape, head.box_output)[1], out.dtype,
                                     stream=io.stream, head=head, nms=self._gpu_nms)
                if head.task == 'segment':
                    masks = GpuMasks(self.backend.outputs[head.proto_output].dtype,
                                     slots=shape[0], stream=io.stream)
                made = (decoder, masks)
            except (CudaError, ValueError) as exc:
                if decoder is not None:
                    decoder.close()
                _LOG.warning(f'GPU output decoding unavailable ({exc}); decoding on the CPU')
        self._decoders[shape] = made
        return made

    # -- compressed input ------------------------------------------------------------------
    def decode_compressed(self, payloads: list[tuple[object, str]],
                          max_pixels: int = MAX_IMAGE_PIXELS, judged: Collection[int] = ()
                          ) -> list[ImageView | DeviceImage | ImageError]:
        """Each CompressedImage payload (data, format) decoded, or the ImageError it raised.
        On the GPU path JPEGs decode on the GPU as one batch (nvImageCodec) and stay there
        for the preprocessing kernel; elsewhere, and for other codecs, OpenCV on the CPU.
        judged: indices of payloads whose headers admission.admit() has passed under
        max_pixels already; the GPU decoder does not judge them again. Device images are
        valid until the next call."""
        gpu = self._gpu_jpeg_decoder(max_pixels)
        results: list = [None] * len(payloads)
        on_gpu = [i for i, (data, _) in enumerate(payloads)
                  if gpu is not None and codec_of(np.frombuffer(data, np.uint8)) == JPEG]
        if on_gpu:
            decoded = gpu([payloads[i][0] for i in on_gpu],
                          judged={k for k, i in enumerate(on_gpu) if i in judged})
            for i, image in zip(on_gpu, decoded, strict=True):
                results[i] = image
        for i, (data, fmt) in enumerate(payloads):
            if results[i] is None:
                try:
                    results[i] = decode_compressed(data, fmt, max_pixels)
                except ImageError as exc:
                    results[i] = exc
        return results

    def _gpu_jpeg_decoder(self, max_pixels: int):
        if self._gpu_pre is None:
            return None
        if self._jpeg is None:
            decoder, why = open_gpu_jpeg(max_pixels, self.backend.device_io().stream)
            _LOG.info(f'compressed images: {why}' if decoder else
                      f'compressed images decoded on the CPU: {why}')
            self._jpeg = (decoder,)
        decoder = self._jpeg[0]
        if decoder is not None:
            decoder.max_pixels = max_pixels  # the one size rule, as on the CPU
        return decoder

    @property
    def decode_device(self) -> str:
        """Where the last batch's outputs were decoded: 'gpu' or 'cpu'."""
        return 'gpu' if any(self._decoders.values()) else 'cpu'

    @property
    def nms_device(self) -> str:
        """Where NMS runs for the decoders opened so far: 'gpu' or 'cpu'."""
        return 'gpu' if any(made and made[0].nms for made in self._decoders.values()) else 'cpu'

    @property
    def graph_use(self) -> str:
        """How the GPU path's CUDA graphs were used, for the node's log."""
        g = self.graphs
        if g is None:
            return 'CUDA graphs: none (no GPU path, or turned off)'
        off = '' if g.enabled else f'; off: {g.reason}'
        return f'CUDA graphs: {g.captures} captured, {g.launches} launched{off}'

    @property
    def staging(self) -> str:
        """How raw frames reach the GPU: 'direct' (from the message's memory), 'pinned xN'
        (copied into pinned memory by N threads), or 'none' (no GPU preprocessing)."""
        pre = self._gpu_pre
        if pre is None:
            return 'none'
        return 'direct' if pre.staging == 'direct' else f'pinned x{pre.copy_threads}'

    def jpeg_on_gpu(self, max_pixels: int = MAX_IMAGE_PIXELS) -> bool:
        """Whether CompressedImage JPEGs decode on the GPU here; opens (warms) the GPU
        decoder now rather than on the first frame."""
        return self._gpu_jpeg_decoder(max_pixels) is not None

    @property
    def jpeg_device(self) -> str:
        """Where CompressedImage JPEGs decode: 'gpu' or 'cpu' (after the first call)."""
        return 'gpu' if self._jpeg and self._jpeg[0] is not None else 'cpu'

    def suspend(self) -> None:
        """Give back the GPU memory of running (the backend's execution memory and buffers,
        the preprocessing, decoding and JPEG decoders); keep the model and the engine, so
        that resume() is quick: a lifecycle node's inactive state."""
        self._release_gpu_helpers()
        self.backend.suspend()
        self.suspended = True

    def resume(self) -> None:
        if self.suspended:
            self.backend.resume()
            self._open_gpu()
            self.suspended = False

    def _release_gpu_helpers(self) -> None:
        if self._jpeg and self._jpeg[0] is not None:
            self._jpeg[0].close()
        self._jpeg = None
        for made in self._decoders.values():
            for part in made or ():
                if part is not None:
                    part.close()
        self._decoders.clear()
        if self.graphs is not None:  # after the decoders' close() synchronised the stream
            self.graphs.clear()
        self.graphs = None
        if self._gpu_pre is not None:
            self._gpu_pre.close()
        self._gpu_pre = None

    def close(self) -> None:
        self._release_gpu_helpers()
        self.backend.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
