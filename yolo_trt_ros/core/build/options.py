"""What an engine build is asked for: precision, input profile, builder options.

Plain data, no TensorRT and no onnx: the runtime imports this to find the engine the
builder cached for the same options (build/lookup.py)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from yolo_trt_ros.core.defaults import PRECISION, PRECISIONS, check_choice


@dataclass(frozen=True)
class ShapeProfile:
    """Dynamic input range: (batch, height, width) for min, opt and max."""

    min: tuple[int, int, int]
    opt: tuple[int, int, int]
    max: tuple[int, int, int]

    @classmethod
    def parse(cls, text: str) -> ShapeProfile:
        """'1x416x416:2x416x416:4x640x640' (min:opt:max, each NxHxW)."""
        parts = text.split(':')
        if len(parts) != 3 or not all(re.fullmatch(r'\d+x\d+x\d+', p) for p in parts):
            raise ValueError(f"dynamic profile '{text}': expected MIN:OPT:MAX, each NxHxW "
                             f"(e.g. 1x416x416:2x416x416:4x640x640)")
        mn, op, mx = (tuple(int(v) for v in p.split('x')) for p in parts)
        if not all(a <= b <= c for a, b, c in zip(mn, op, mx, strict=True)) or min(mn) < 1:
            raise ValueError(f"dynamic profile '{text}': need 1 <= min <= opt <= max")
        return cls(mn, op, mx)


@dataclass(frozen=True)
class BuildOptions:
    precision: str = PRECISION
    calib_dir: Path | None = None  # images for int8 calibration
    dynamic: ShapeProfile | None = None  # None: the ONNX input's own (static) shape
    workspace_mb: int | None = None
    opt_level: int | None = None  # builder optimisation level 0..5
    simplify: bool = True  # onnxslim before parsing (where installed)
    flavour: str | None = None  # 'tensorrt' or 'tensorrt_rtx'; None: whichever imports

    def __post_init__(self) -> None:
        check_choice('precision', self.precision, PRECISIONS)
        if self.opt_level is not None and not 0 <= self.opt_level <= 5:
            raise ValueError(f'builder optimisation level {self.opt_level}: use 0..5')
        if self.workspace_mb is not None and self.workspace_mb < 1:
            raise ValueError(f'workspace {self.workspace_mb} MB: must be at least 1')
        if self.precision == 'int8' and self.calib_dir is None:
            raise ValueError('int8 needs --calib-dir: a directory of representative images')
        if self.precision == 'int8' and self.dynamic is not None:
            # TensorRT would need a calibration profile (set_calibration_profile) for that.
            raise ValueError('int8 with --dynamic is not supported: int8 calibration runs at '
                             "the ONNX input's static shape; build int8 without --dynamic, or "
                             'fp16 with it')
