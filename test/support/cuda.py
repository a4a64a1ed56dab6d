"""The real CUDA runtime, counting what it allocates and downloads: tests of GPU code use it
to show that steady frames allocate nothing, that only what is needed crosses to the
host, and how often the host waits for the GPU. Not a double: every call goes through to CUDA."""
from __future__ import annotations

from yolo_trt_ros.core.gpu.cuda import CudaRuntime


class CountingCuda(CudaRuntime):
    def __init__(self) -> None:
        super().__init__()
        self.allocations = 0  # device and pinned host allocations
        self.downloaded = 0  # bytes copied device -> host
        self.synchronisations = 0

    def malloc(self, nbytes: int) -> int:
        self.allocations += 1
        return super().malloc(nbytes)

    def malloc_host(self, nbytes: int) -> int:
        self.allocations += 1
        return super().malloc_host(nbytes)

    def copy_to_host(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        self.downloaded += nbytes
        super().copy_to_host(dst, src, nbytes, stream)

    def copy_rows_to_host(self, dst: int, src: int, pitch: int, width: int, rows: int,
                          stream: int) -> None:
        self.downloaded += width * rows
        super().copy_rows_to_host(dst, src, pitch, width, rows, stream)

    def stream_synchronize(self, stream: int) -> None:
        self.synchronisations += 1
        super().stream_synchronize(stream)
