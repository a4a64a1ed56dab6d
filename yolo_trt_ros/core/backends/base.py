"""The interface every backend implements: input spec and profile, output specs, infer,
and (where the backend keeps its input on the GPU) device I/O."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

DEFAULT_INPUT_SIZE = 640  # height and width for models whose input size is dynamic


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output. shape: batch first; None marks a dynamic dimension."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype

    @property
    def is_dynamic(self) -> bool:
        return any(d is None for d in self.shape)


@dataclass(frozen=True)
class InputProfile:
    """The input shapes a backend accepts (NCHW): every dimension between min and max;
    opt is the shape to feed (its height and width are the detector's input size).
    max batch None: no upper limit (ONNX Runtime with a dynamic batch)."""

    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int | None, int, int, int]

    @classmethod
    def of(cls, spec: TensorSpec, hw: tuple[int, int] | None = None) -> InputProfile:
        """The profile of a model input: fixed dimensions fixed, a dynamic batch 1..any,
        dynamic height/width fixed at hw (default DEFAULT_INPUT_SIZE)."""
        n, c, h, w = spec.shape
        dh, dw = hw or (DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE)
        size = (c or 3, h or dh, w or dw)
        return cls((n or 1, *size), (n or 1, *size), (n, *size))

    @property
    def max_batch(self) -> int | None:
        return self.max[0]

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.opt[2], self.opt[3]

    def accepts(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == 4 and all(
            lo <= s and (hi is None or s <= hi)
            for lo, s, hi in zip(self.min, shape, self.max, strict=True))


@dataclass(frozen=True)
class BackendInfo:
    """What a backend is and why it was chosen (logged by the CLI and the node)."""

    name: str  # 'onnxruntime' or 'tensorrt'
    device: str  # 'cpu', 'cuda:0', ...
    reason: str = ''
    metadata: dict[str, str] = field(default_factory=dict)
    output_format: str | None = None  # known layout (an engine's sidecar), else detected
    engine_path: str | None = None  # the engine file a TensorRT backend loaded


class DeviceIO(Protocol):
    """Input (and outputs) in device memory: the GPU preprocessing kernel writes the
    input where the engine reads it, on the backend's stream."""

    @property
    def stream(self) -> int: ...

    def input_ptr(self, shape: tuple[int, ...]) -> int:
        """The device input buffer for shape (allocated on the first call for it)."""

    def run(self, shape: tuple[int, ...], download: bool = True) -> list[np.ndarray]:
        """Run on the input already queued into input_ptr(shape) on `stream`. download:
        the outputs copied to the host and the stream synchronised (arrays valid until the
        next call); else only queued, the outputs left on the device (output_buffer) for a
        kernel that reads them there, and [] returned."""

    def output_buffer(self, shape: tuple[int, ...], index: int = 0) -> tuple[int, tuple[int, ...]]:
        """(device pointer, shape) of output `index` at input shape."""


class Backend(Protocol):
    info: BackendInfo
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    profile: InputProfile

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """batch: (N, 3, H, W) in input.dtype, a shape profile accepts -> one array per
        output, batch first. The arrays may be buffers the backend reuses: valid until the
        next infer call."""

    def device_io(self) -> DeviceIO | None:
        """Device-memory I/O where the backend has it (TensorRT on a GPU), else None."""

    def suspend(self) -> None:
        """Give back what running holds (GPU buffers, execution memory), keep the model:
        an inactive detector. resume() before the next infer."""

    def resume(self) -> None:
        """Undo suspend()."""

    def close(self) -> None:
        """Release every resource; the backend is unusable afterwards."""

    def __enter__(self) -> Backend: ...

    def __exit__(self, *exc) -> None: ...
