"""Synthetic models and outputs with real layouts, for tests and benchmarks.

`constant_output_model` writes a real ONNX model whose output is a fixed tensor of the
layout under test (whatever the pixels): the decoders can be checked against planted
boxes, and benchmarks can take inference out of a measurement while keeping the input
and output shapes (and so every copy and decode) of a real model.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def constant_output_model(path: Path, output: np.ndarray, input_hw: tuple[int, int] = (64, 64),
                          names: list[str] | None = None, batch: int | str = 1) -> Path:
    """An ONNX model (images (batch, 3, H, W) float32 -> output0 (batch, *output.shape))
    returning `output` for every image. The input still feeds the graph (0 x its mean), so
    no runtime can prune it."""
    h, w = input_hw
    nodes = [
        helper.make_node('ReduceMean', ['images'], ['m'], axes=[1, 2, 3], keepdims=1),
        helper.make_node('Mul', ['m', 'zero'], ['z']),  # (N, 1, 1, 1)
        helper.make_node('Reshape', ['z', 'zshape'], ['z3']),  # (N, 1, 1)
        helper.make_node('Add', ['z3', 'planted'], ['output0']),
    ]
    inits = [numpy_helper.from_array(np.zeros((1, 1, 1, 1), np.float32), 'zero'),
             numpy_helper.from_array(np.array([-1, 1, 1], np.int64), 'zshape'),
             numpy_helper.from_array(output.astype(np.float32)[None], 'planted')]
    graph = helper.make_graph(
        nodes, 'constant_output',
        [helper.make_tensor_value_info('images', TensorProto.FLOAT, [batch, 3, h, w])],
        [helper.make_tensor_value_info('output0', TensorProto.FLOAT, [batch, *output.shape])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    if names is not None:
        helper.set_model_props(model, {'names': json.dumps(names)})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def yolov8_output(classes: int = 80, anchors: int = 8400, size: int = 640, objects: int = 20,
                  seed: int = 0) -> np.ndarray:
    """A (4 + classes, anchors) YOLOv8 output with the statistics of a real one: low
    background scores everywhere, ~15 overlapping high-score anchors around each object."""
    rng = np.random.default_rng(seed)
    out = np.zeros((4 + classes, anchors), np.float32)
    out[:2] = rng.uniform(0, size, (2, anchors))
    out[2:4] = rng.uniform(8, 200, (2, anchors))
    out[4:] = rng.uniform(0, 0.02, (classes, anchors))
    picks = rng.permutation(anchors)
    for k in range(objects):
        cls = rng.integers(classes)
        cx, cy = rng.uniform(0.08, 0.92) * size, rng.uniform(0.2, 0.8) * size
        w, h = rng.uniform(20, 200, 2)
        for a in picks[k * 15:(k + 1) * 15]:
            out[:4, a] = [cx + rng.normal(0, 3), cy + rng.normal(0, 3),
                          w * rng.uniform(0.9, 1.1), h * rng.uniform(0.9, 1.1)]
            out[4 + cls, a] = rng.uniform(0.3, 0.95)
    return out
