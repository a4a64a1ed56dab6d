"""Synthetic models and outputs with real layouts, for tests and benchmarks.

`constant_output_model` writes a real ONNX model whose output is a fixed tensor of the
layout under test (whatever the pixels): the decoders can be checked against planted
boxes, and benchmarks can take inference out of a measurement while keeping the input
and output shapes (and so every copy and decode) of a real model.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def constant_output_model(path: Path, output: np.ndarray, input_hw: tuple[int, int] = (64, 64),
                          names: list[str] | None = None, batch: int | str = 1,
                          more: tuple[np.ndarray, ...] = (),
                          metadata: dict[str, str] | None = None) -> Path:
    """An ONNX model (images (batch, 3, H, W) float32 -> output0 (batch, *output.shape),
    and output1... (batch, *more[i].shape)) returning `output` (and `more`: a segment
    model's prototypes) for every image. The input still feeds the graph (0 x its mean),
    so no runtime can prune it. metadata: more properties, as Ultralytics writes `task`
    and `kpt_shape`."""
    h, w = input_hw
    nodes = [
        helper.make_node('ReduceMean', ['images'], ['m'], axes=[1, 2, 3], keepdims=1),
        helper.make_node('Mul', ['m', 'zero'], ['z']),  # (N, 1, 1, 1)
    ]
    inits = [numpy_helper.from_array(np.zeros((1, 1, 1, 1), np.float32), 'zero')]
    outputs = []
    for i, planted in enumerate((output, *more)):
        rank = planted.ndim + 1
        nodes += [helper.make_node('Reshape', ['z', f'zshape{i}'], [f'z{i}']),  # (N, 1, ...)
                  helper.make_node('Add', [f'z{i}', f'planted{i}'], [f'output{i}'])]
        inits += [numpy_helper.from_array(np.array([-1] + [1] * (rank - 1), np.int64),
                                          f'zshape{i}'),
                  numpy_helper.from_array(planted.astype(np.float32)[None], f'planted{i}')]
        outputs.append(helper.make_tensor_value_info(f'output{i}', TensorProto.FLOAT,
                                                     [batch, *planted.shape]))
    graph = helper.make_graph(
        nodes, 'constant_output',
        [helper.make_tensor_value_info('images', TensorProto.FLOAT, [batch, 3, h, w])],
        outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    props = dict(metadata or {})
    if names is not None:
        props['names'] = json.dumps(names)
    if props:
        helper.set_model_props(model, props)
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


def _objects(rng, classes: int, size: int, objects: int):
    """(class, cx, cy, w, h) of each planted object, in model-input pixels."""
    for _ in range(objects):
        yield (int(rng.integers(classes)), rng.uniform(0.1, 0.9) * size,
               rng.uniform(0.2, 0.8) * size, *rng.uniform(20, 160, 2))


def task_output(task: str, classes: int = 80, anchors: int = 8400, size: int = 640,
                objects: int = 20, seed: int = 0, kpt_shape: tuple[int, int] = (17, 3),
                mask_dim: int = 32) -> tuple[np.ndarray, ...]:
    """One image's outputs of an obb, segment or pose head in the yolov8 layout
    (core/pipeline/tasks.py), with a real head's statistics: low background scores, ~15
    overlapping anchors per object. segment: (output, prototypes (M, size/4, size/4),
    smooth fields as real prototypes are); the others: (output,)."""
    rng = np.random.default_rng(seed)
    extras = {'obb': 1, 'segment': mask_dim, 'pose': kpt_shape[0] * kpt_shape[1]}[task]
    out = np.zeros((4 + classes + extras, anchors), np.float32)
    out[:2] = rng.uniform(0, size, (2, anchors))
    out[2:4] = rng.uniform(8, 200, (2, anchors))
    out[4:4 + classes] = rng.uniform(0, 0.02, (classes, anchors))
    out[4 + classes:] = rng.normal(0, 1, (extras, anchors))
    picks = rng.permutation(anchors)
    for k, (cls, cx, cy, w, h) in enumerate(_objects(rng, classes, size, objects)):
        angle = rng.uniform(-np.pi / 4, 3 * np.pi / 4)
        for a in picks[k * 15:(k + 1) * 15]:
            out[:4, a] = [cx + rng.normal(0, 3), cy + rng.normal(0, 3),
                          w * rng.uniform(0.9, 1.1), h * rng.uniform(0.9, 1.1)]
            out[4 + cls, a] = rng.uniform(0.3, 0.95)
            if task == 'obb':
                out[-1, a] = angle + rng.normal(0, 0.05)
            elif task == 'pose':
                k_, d = kpt_shape
                points = np.zeros((k_, d), np.float32)
                points[:, 0] = cx + rng.uniform(-w / 2, w / 2, k_)
                points[:, 1] = cy + rng.uniform(-h / 2, h / 2, k_)
                if d == 3:
                    points[:, 2] = rng.uniform(0, 1, k_)
                out[4 + classes:, a] = points.reshape(-1)
    if task != 'segment':
        return (out,)
    coarse = rng.normal(0, 1, (mask_dim, size // 64 + 1, size // 64 + 1)).astype(np.float32)
    side = size // 4
    protos = np.stack([cv2.resize(plane, (side, side), interpolation=cv2.INTER_CUBIC)
                       for plane in coarse])
    return out, protos.astype(np.float32)
