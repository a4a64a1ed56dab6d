"""The dynamic input range of an engine build: (batch, height, width) for min, opt, max."""
from __future__ import annotations

import re
from dataclasses import dataclass


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
