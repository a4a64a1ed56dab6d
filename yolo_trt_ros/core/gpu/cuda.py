"""cuda-python helpers: one `check` for every runtime, driver and NVRTC call, GPU
discovery, and the few runtime calls the TensorRT backend needs (device/pinned memory,
streams, copies).

cuda-python returns `(err, *results)` from every call; `check` turns a non-success code
into CudaError naming the call, so no error code is ever dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from yolo_trt_ros.core.errors import CudaError


def _runtime():
    try:
        from cuda.bindings import runtime
    except ImportError as exc:  # cuda-python missing or too old (< 12.6 has no cuda.bindings)
        raise CudaError(f'cuda-python is not installed: {exc} (pip install cuda-python)') from exc
    return runtime


def _error_text(err) -> str:
    """The name and description of a runtime, driver or NVRTC error code."""
    kind = type(err).__name__
    if kind == 'cudaError_t':
        rt = _runtime()
        return (f'{rt.cudaGetErrorName(err)[1].decode()} '
                f'({rt.cudaGetErrorString(err)[1].decode()})')
    if kind == 'CUresult':
        from cuda.bindings import driver
        return driver.cuGetErrorName(err)[1].decode()
    if kind == 'nvrtcResult':
        from cuda.bindings import nvrtc
        return nvrtc.nvrtcGetErrorString(err)[1].decode()
    return repr(err)


def check(result, call: str):
    """Unpack any cuda-python `(err, *values)` tuple (runtime, driver or NVRTC call: each
    returns its own enum, with success 0): None, the one value or a tuple of them; a
    non-success code raises CudaError naming the call and the error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise CudaError(f'{call} failed: {_error_text(err)}')
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def host_array(ptr: int, nbytes: int, dtype, shape: tuple[int, ...]):
    """A numpy view of nbytes of host memory at ptr (pinned memory from malloc_host). Where
    shape is already the flat array's, that array itself: numpy makes it the base of every
    view of it (a reshape on top would be skipped by its views' references)."""
    import ctypes

    import numpy as np
    flat = np.frombuffer((ctypes.c_byte * nbytes).from_address(ptr), dtype)
    return flat if flat.shape == tuple(shape) else flat.reshape(shape)


def pinned_allocator(cuda: CudaRuntime):
    """allocate(nbytes) -> (a uint8 array over new pinned memory, what frees it), for
    core/image/frame_buffers.py, which counts a buffer's views by its references."""
    import numpy as np

    def allocate(nbytes: int):
        ptr = cuda.malloc_host(nbytes)
        return host_array(ptr, nbytes, np.uint8, (nbytes,)), lambda: cuda.free_host(ptr)
    return allocate


@dataclass(frozen=True)
class GpuInfo:
    """What auto-selection and the engine cache need to know about the GPU, if any."""

    count: int
    name: str = ''
    compute_capability: tuple[int, int] | None = None
    reason: str = ''  # why there is no usable GPU, when count == 0


@lru_cache(maxsize=1)
def probe_gpu() -> GpuInfo:
    """Device 0's name and compute capability; count 0 with a reason where none is usable
    (no cuda-python, no driver, no device)."""
    try:
        rt = _runtime()
    except CudaError as exc:
        return GpuInfo(0, reason=str(exc))
    err, count = rt.cudaGetDeviceCount()
    if err != rt.cudaError_t.cudaSuccess or count == 0:
        why = rt.cudaGetErrorName(err)[1].decode() if err != rt.cudaError_t.cudaSuccess else ''
        return GpuInfo(0, reason=f'no CUDA device ({why or "none found"})')
    props = check(rt.cudaGetDeviceProperties(0), 'cudaGetDeviceProperties')
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return GpuInfo(count, name.rstrip('\x00'), (props.major, props.minor))


class CudaRuntime:
    """The CUDA runtime calls the TensorRT backend makes, each checked."""

    device_memory = True  # malloc gives GPU memory that kernels can read and write

    def __init__(self) -> None:
        self.rt = _runtime()

    def malloc(self, nbytes: int) -> int:
        return int(check(self.rt.cudaMalloc(max(nbytes, 1)), 'cudaMalloc'))

    def free(self, ptr: int) -> None:
        check(self.rt.cudaFree(ptr), 'cudaFree')

    def malloc_host(self, nbytes: int) -> int:
        return int(check(self.rt.cudaMallocHost(max(nbytes, 1)), 'cudaMallocHost'))

    def free_host(self, ptr: int) -> None:
        check(self.rt.cudaFreeHost(ptr), 'cudaFreeHost')

    def stream_create(self) -> int:
        flags = self.rt.cudaStreamNonBlocking
        return int(check(self.rt.cudaStreamCreateWithFlags(flags), 'cudaStreamCreateWithFlags'))

    def stream_destroy(self, stream: int) -> None:
        check(self.rt.cudaStreamDestroy(stream), 'cudaStreamDestroy')

    def stream_synchronize(self, stream: int) -> None:
        check(self.rt.cudaStreamSynchronize(stream), 'cudaStreamSynchronize')

    def capturing(self, stream: int) -> bool:
        """Whether a CUDA graph is being captured on stream (nothing may wait on it then)."""
        status = check(self.rt.cudaStreamIsCapturing(stream), 'cudaStreamIsCapturing')
        return status != self.rt.cudaStreamCaptureStatus.cudaStreamCaptureStatusNone

    def copy_to_device(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(self.rt.cudaMemcpyAsync(dst, src, nbytes, kind, stream), 'cudaMemcpyAsync(H2D)')

    def copy_to_host(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(self.rt.cudaMemcpyAsync(dst, src, nbytes, kind, stream), 'cudaMemcpyAsync(D2H)')

    def copy_rows_to_host(self, dst: int, src: int, pitch: int, width: int, rows: int,
                          stream: int) -> None:
        """The first `width` bytes of `rows` rows, `pitch` bytes apart on both sides: one
        copy (capturable) for a slice of every image of a batch."""
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(self.rt.cudaMemcpy2DAsync(dst, pitch, src, pitch, width, rows, kind, stream),
              'cudaMemcpy2DAsync(D2H)')
