"""CompressedImage payloads decoded on the GPU with NVIDIA nvImageCodec (nvJPEG inside).

Several cameras' JPEGs decode as one batch straight into device memory; each frame comes
back as a DeviceImage (device pointer, row pitch, size, channels) that the preprocessing
kernel reads where it lies: the pixels never cross to the host. On the H200 a 1080p JPEG
q90 decoded in 1.5 ms here against 13 ms for cv2.imdecode on that host's CPU.

nvImageCodec and nvJPEG are installed with the CUDA packages that match the driver
(pip_env/requirements-cuda13.txt or -cuda12.txt; `pip install .[gpu-jpeg]` elsewhere);
`open_gpu_jpeg` returns None with the reason where they or a GPU are missing, and the
caller keeps OpenCV on the CPU (images.decode_compressed), saying which it chose.

Frames are decoded as cv2.imdecode(IMREAD_UNCHANGED) does: EXIF orientation ignored; a
gray JPEG comes back as RGB with three equal channels, which letterboxes to the same input
as the gray frame. Each frame's size is read from its header first: one above max_pixels
is refused before any pixel buffer is allocated.
"""
from __future__ import annotations

import logging
import re
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from importlib import metadata

import numpy as np

from yolo_trt_ros.core.errors import ImageError
from yolo_trt_ros.core.image.admission import admit
from yolo_trt_ros.core.image.buffers import RGB
from yolo_trt_ros.core.image.capture import library_output

EXTRA = 'gpu-jpeg'
CPU_THREADS = 2  # nvImageCodec's executor threads per decoder (default: one per core)
# Per CUDA major version: nvImageCodec and the nvJPEG library its JPEG decoder loads.
PACKAGES = {13: ('nvidia-nvimgcodec-cu13', 'nvidia-nvjpeg'),
            12: ('nvidia-nvimgcodec-cu12', 'nvidia-nvjpeg-cu12')}


@dataclass(frozen=True)
class DeviceImage:
    """A decoded frame in device memory: height rows of width x channels uint8 (interleaved,
    in `order`), `pitch` bytes from one row to the next. Valid until the decoder's next call;
    ready in the order of the decoder's stream."""

    ptr: int
    pitch: int
    width: int
    height: int
    channels: int
    order: str = RGB


# nvImageCodec announces on import, in raw lines, each optional codec extension whose
# library is missing (JPEG 2000, TIFF): we decode JPEG only, so those are dropped.
_OPTIONAL_EXTENSION = re.compile(r'nvjpeg2k|nvtiff|nvJPEG2000|nvTIFF', re.IGNORECASE)
_LOG = logging.getLogger(__name__)


def _nvimgcodec():
    if 'nvidia.nvimgcodec' not in sys.modules:
        with library_output() as lines:
            from nvidia import nvimgcodec  # noqa: F401
        for line in lines:
            if not _OPTIONAL_EXTENSION.search(line):
                _LOG.warning('nvImageCodec: %s', line)
    return sys.modules['nvidia.nvimgcodec']


def code_stream(data, max_pixels: int, judged: bool = False):
    """A frame's nvImageCodec code stream, its size and decoding cost judged first from the
    headers by the same rules as the CPU path (core/image/admission.py), so a bomb never
    reaches the GPU library: ImageError 'empty', 'decode', 'format', 'too_large' or
    'too_costly'. judged: admit() has passed this frame already (the detector node judges
    a frame in its subscription callback), so it is not judged twice."""
    if not judged:
        admit(data, max_pixels, 'jpeg')
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        return _nvimgcodec().CodeStream(buf)
    except RuntimeError as exc:
        raise ImageError(f'cannot decode compressed image ({buf.size} bytes): {exc}',
                         'decode') from exc


def check_headers(frames: Sequence, max_pixels: int, judged: Collection[int] = ()) -> list:
    """Each frame's code stream, or the ImageError its header raised; judged: the indices
    of frames that admit() has passed already. The errors carry no
    traceback: a stored traceback would keep the caller's frame alive in a reference cycle,
    and with it the batch's decoded device images until the garbage collector frees them,
    possibly after their CUDA stream is gone (a segfault seen on the H200)."""
    checked = []
    for i, data in enumerate(frames):
        try:
            checked.append(code_stream(data, max_pixels, i in judged))
        except ImageError as exc:
            exc.__cause__ = exc.__context__ = None  # its message already names the cause
            checked.append(exc.with_traceback(None))
    return checked


class GpuJpegDecoder:
    """Decode batches of JPEG payloads on the GPU. Use `open_gpu_jpeg` to get one."""

    def __init__(self, max_pixels: int, stream: int = 0, device_id: int = 0) -> None:
        nv = _nvimgcodec()
        self.max_pixels, self.stream = max_pixels, stream
        # fancy_upsampling: interpolate the chroma planes as libjpeg (cv2) does, rather than
        # replicating them, so the result stays within a few levels of the CPU decode.
        # Huffman decoding on the GPU too (threshold 0): several cameras' frames at once, in
        # several detector processes, must not queue for a few CPU threads each.
        self._decoder = nv.Decoder(
            device_id=device_id, max_num_cpu_threads=CPU_THREADS,
            options=':fancy_upsampling=1 nvjpeg_cuda_decoder:hybrid_huffman_threshold=0')
        self._params = nv.DecodeParams(apply_exif_orientation=False,
                                       color_spec=nv.ColorSpec.SRGB,
                                       sample_format=nv.SampleFormat.I_RGB)
        self._device_kind = nv.ImageBufferKind.STRIDED_DEVICE
        self._images: list = []  # the last call's decoded images: they own the device memory

    def __call__(self, frames: Sequence, judged: Collection[int] = ()
                 ) -> list[DeviceImage | ImageError]:
        """One DeviceImage per frame (any buffer: bytes, memoryview, uint8 array), or the
        ImageError that frame raised; the other frames of the batch are decoded all the
        same. judged: indices of frames whose headers admit() has passed already. Queued
        on the decoder's stream."""
        checked = check_headers(frames, self.max_pixels, judged)
        streams = [s for s in checked if not isinstance(s, ImageError)]
        decoded = self._decoder.decode(streams, params=self._params,
                                       cuda_stream=self.stream) if streams else []
        self._images = list(decoded)
        images = iter(decoded)
        return [s if isinstance(s, ImageError) else self._device_image(next(images))
                for s in checked]

    def _device_image(self, image) -> DeviceImage | ImageError:
        if image is None:
            return ImageError('nvImageCodec could not decode the compressed image: corrupt or '
                              'unsupported', 'decode')
        if image.buffer_kind != self._device_kind:  # decoded by a CPU fallback codec
            image = image.cuda()
            self._images.append(image)  # keep its device copy alive with the others
        iface = image.__cuda_array_interface__
        height, width, channels = iface['shape']
        strides = iface.get('strides')
        pitch = strides[0] if strides else width * channels
        return DeviceImage(int(iface['data'][0]), int(pitch), int(width), int(height),
                           int(channels))

    def close(self) -> None:
        self._images = []
        self._decoder = None

    def __enter__(self) -> GpuJpegDecoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_gpu_jpeg(max_pixels: int, stream: int = 0) -> tuple[GpuJpegDecoder | None, str]:
    """(a GPU JPEG decoder, why) or (None, why not): no GPU, nvImageCodec or nvJPEG missing,
    or the decoder failed to start. The caller logs the reason and decodes with OpenCV."""
    from yolo_trt_ros.core.gpu.cuda import probe_gpu

    gpu = probe_gpu()
    if gpu.count == 0:
        return None, f'no GPU ({gpu.reason})'
    installed = next((names for names in PACKAGES.values() if _installed(names)), None)
    if installed is None:
        wanted = ' or '.join(' + '.join(names) for names in PACKAGES.values())
        return None, (f'nvImageCodec is not installed ({wanted}; pip install '
                      f'"yolo_trt_ros[{EXTRA}]")')
    try:
        decoder = GpuJpegDecoder(max_pixels, stream)
    except (ImportError, RuntimeError) as exc:
        return None, f'nvImageCodec unusable: {exc}'
    return decoder, f'nvImageCodec {metadata.version(installed[0])} on {gpu.name}'


def _installed(names: tuple[str, ...]) -> bool:
    try:
        return all(metadata.version(name) for name in names)
    except metadata.PackageNotFoundError:
        return False
