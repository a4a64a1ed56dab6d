"""The interface every backend implements: input spec, output specs, infer."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


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
class BackendInfo:
    """What a backend is and why it was chosen (logged by the CLI and the node)."""

    name: str  # 'onnxruntime' or 'tensorrt'
    device: str  # 'cpu', 'cuda:0', ...
    reason: str = ''
    metadata: dict[str, str] = field(default_factory=dict)


class Backend(Protocol):
    info: BackendInfo
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """batch: (N, 3, H, W) in input.dtype -> one array per output, batch first.

        The arrays may be buffers the backend reuses: valid until the next infer call.
        """

    def close(self) -> None:
        """Release every resource; the backend is unusable afterwards."""

    def __enter__(self) -> Backend: ...

    def __exit__(self, *exc) -> None: ...
