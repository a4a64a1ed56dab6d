"""Darknet (.cfg + .weights) to ONNX, with a YOLOv8-style output.

Supports the layers of the YOLOv3 family: convolutional (batch norm folded into the
weights), maxpool, upsample, route, shortcut and yolo. The yolo heads are decoded in the
graph, so the model emits one tensor (1, 4 + C, A): cx cy w h in input pixels, then
per-class scores (objectness x class probability). The rest of the package decodes that
layout like any YOLOv8 export.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from yolo_trt_ros.core.errors import ModelError
from yolo_trt_ros.core.files import atomic_write

OPSET = 17
INPUT_NAME = 'images'
OUTPUT_NAME = 'output0'


def parse_cfg(text: str) -> list[tuple[str, dict[str, str]]]:
    """Sections of a darknet cfg in order: [(type, {key: raw value})]."""
    sections: list[tuple[str, dict[str, str]]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split('#', 1)[0].strip()
        if not line:
            continue
        if line.startswith('['):
            if not line.endswith(']'):
                raise ModelError(f'cfg line {lineno}: malformed section header {line!r}')
            sections.append((line[1:-1].strip(), {}))
        elif '=' in line and sections:
            key, value = line.split('=', 1)
            sections[-1][1][key.strip()] = value.strip()
        else:
            raise ModelError(f'cfg line {lineno}: expected [section] or key=value, got {line!r}')
    if not sections or sections[0][0] not in ('net', 'network'):
        raise ModelError('cfg must start with a [net] section')
    return sections


class _Weights:
    """Sequential reader of a darknet .weights file (header, then float32 blocks)."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 16:
            raise ModelError(f'weights file too short ({len(data)} bytes)')
        major, minor, _ = np.frombuffer(data, np.int32, 3)
        header = 20 if major * 10 + minor >= 2 else 16  # 'seen' became int64 in 0.2
        self._floats = np.frombuffer(data, np.float32, offset=header)
        self._pos = 0

    def take(self, n: int) -> np.ndarray:
        if self._pos + n > self._floats.size:
            raise ModelError('weights file ends early: it does not match the cfg')
        out = self._floats[self._pos:self._pos + n]
        self._pos += n
        return out

    @property
    def remaining(self) -> int:
        return self._floats.size - self._pos


@dataclass
class _Tensor:
    name: str
    channels: int
    height: int
    width: int


class _Graph:
    """Collects ONNX nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name


def _ints(value: str) -> list[int]:
    return [int(v) for v in value.replace(' ', '').split(',') if v]


def _conv(g: _Graph, i: int, opts: dict[str, str], x: _Tensor, w: _Weights) -> _Tensor:
    filters, size = int(opts['filters']), int(opts.get('size', 1))
    stride = int(opts.get('stride', 1))
    pad = size // 2 if int(opts.get('pad', 0)) else int(opts.get('padding', 0))
    bn = int(opts.get('batch_normalize', 0))
    bias = w.take(filters).copy()
    if bn:
        gamma, mean, var = w.take(filters), w.take(filters), w.take(filters)
    kernel = w.take(filters * x.channels * size * size).reshape(filters, x.channels, size, size)
    if bn:  # fold y = gamma * (conv - mean) / sqrt(var + eps) + beta into the conv
        scale = gamma / np.sqrt(var + 1e-5)
        kernel = kernel * scale[:, None, None, None]
        bias = bias - mean * scale
    name = f'conv{i}'
    out = g.node('Conv', [x.name, g.const(f'{name}.weight', kernel.astype(np.float32)),
                          g.const(f'{name}.bias', bias.astype(np.float32))], name,
                 kernel_shape=[size, size], strides=[stride, stride], pads=[pad] * 4)
    act = opts.get('activation', 'linear')
    if act == 'leaky':
        out = g.node('LeakyRelu', [out], f'{name}.leaky', alpha=0.1)
    elif act == 'relu':
        out = g.node('Relu', [out], f'{name}.relu')
    elif act == 'logistic':
        out = g.node('Sigmoid', [out], f'{name}.logistic')
    elif act != 'linear':
        raise ModelError(f'layer {i}: activation {act!r} is not supported')
    h = (x.height + 2 * pad - size) // stride + 1
    wd = (x.width + 2 * pad - size) // stride + 1
    return _Tensor(out, filters, h, wd)


def _maxpool(g: _Graph, i: int, opts: dict[str, str], x: _Tensor) -> _Tensor:
    size = int(opts.get('size', 1))
    stride = int(opts.get('stride', 1))
    padding = int(opts.get('padding', size - 1))  # darknet pads right/bottom with -inf
    begin = padding // 2
    end = padding - begin
    out = g.node('MaxPool', [x.name], f'maxpool{i}', kernel_shape=[size, size],
                 strides=[stride, stride], pads=[begin, begin, end, end])
    h = (x.height + padding - size) // stride + 1
    wd = (x.width + padding - size) // stride + 1
    return _Tensor(out, x.channels, h, wd)


def _yolo(g: _Graph, i: int, opts: dict[str, str], x: _Tensor, net_w: int,
          net_h: int) -> tuple[str, int, int]:
    """Decode one yolo head: (1, na*(5+C), H, W) -> (1, 4+C, H*W*na).

    Returns (tensor name, C, H*W*na)."""
    mask = _ints(opts['mask'])
    anchors = np.asarray(_ints(opts['anchors']), np.float32).reshape(-1, 2)[mask]
    classes = int(opts['classes'])
    na, h, w = len(mask), x.height, x.width
    if x.channels != na * (5 + classes):
        raise ModelError(f'layer {i}: yolo head expects {na * (5 + classes)} channels, '
                         f'got {x.channels}')
    xy_scale = float(opts.get('scale_x_y', 1.0))
    n = h * w * na
    name = f'yolo{i}'
    # -1 for the batch: a batch-1 shape here would make every dynamic-batch engine fail.
    t = g.node('Reshape', [x.name, g.const(f'{name}.shape5', np.array(
        [-1, na, 5 + classes, h, w], np.int64))], f'{name}.r5')
    t = g.node('Transpose', [t], f'{name}.t', perm=[0, 2, 3, 4, 1])  # (1, 5+C, H, W, na)
    t = g.node('Reshape', [t, g.const(f'{name}.shape3', np.array(
        [-1, 5 + classes, n], np.int64))], f'{name}.r3')

    def part(lo: int, hi: int, tag: str) -> str:
        return g.node('Slice', [t, g.const(f'{name}.{tag}.lo', np.array([lo], np.int64)),
                                g.const(f'{name}.{tag}.hi', np.array([hi], np.int64)),
                                g.const(f'{name}.{tag}.ax', np.array([1], np.int64))],
                      f'{name}.{tag}')

    # Row order: ((y * W) + x) * na + a, as darknet and OpenCV lay out detections.
    gy, gx, _ = np.meshgrid(np.arange(h), np.arange(w), np.arange(na), indexing='ij')
    grid = np.stack([gx.ravel(), gy.ravel()])[None].astype(np.float32)
    grid -= (xy_scale - 1) / 2
    stride = np.array([net_w / w, net_h / h], np.float32).reshape(1, 2, 1)
    wh_anchor = np.tile(anchors, (h * w, 1)).T[None].astype(np.float32)  # (1, 2, n)

    xy = g.node('Sigmoid', [part(0, 2, 'txy')], f'{name}.sxy')
    if xy_scale != 1.0:
        xy = g.node('Mul', [xy, g.const(f'{name}.xys', np.float32([xy_scale]))], f'{name}.xysm')
    xy = g.node('Add', [xy, g.const(f'{name}.grid', grid)], f'{name}.xyg')
    xy = g.node('Mul', [xy, g.const(f'{name}.stride', stride)], f'{name}.xy')
    wh = g.node('Exp', [part(2, 4, 'twh')], f'{name}.ewh')
    wh = g.node('Mul', [wh, g.const(f'{name}.anchors', wh_anchor)], f'{name}.wh')
    obj = g.node('Sigmoid', [part(4, 5, 'obj')], f'{name}.sobj')
    cls = g.node('Sigmoid', [part(5, 5 + classes, 'cls')], f'{name}.scls')
    scores = g.node('Mul', [cls, obj], f'{name}.scores')
    return g.node('Concat', [xy, wh, scores], f'{name}.out', axis=1), classes, n


# Part of the default model's stamp: a new version reconverts the fetched weights.
# 2: batch-agnostic reshapes (dynamic-batch engines).
CONVERTER_VERSION = 2


def convert(cfg_text: str, weights: bytes, class_names: list[str] | None = None,
            source: str = 'darknet') -> onnx.ModelProto:
    """Build the ONNX model of a darknet network."""
    sections = parse_cfg(cfg_text)
    net = sections[0][1]
    net_w, net_h = int(net.get('width', 416)), int(net.get('height', 416))
    channels = int(net.get('channels', 3))
    g = _Graph()
    w = _Weights(weights)
    x = _Tensor(INPUT_NAME, channels, net_h, net_w)
    layers: list[_Tensor] = []
    heads: list[str] = []
    num_classes = 0
    num_boxes = 0
    for i, (kind, opts) in enumerate(sections[1:]):
        if kind == 'convolutional':
            x = _conv(g, i, opts, x, w)
        elif kind == 'maxpool':
            x = _maxpool(g, i, opts, x)
        elif kind == 'upsample':
            s = int(opts.get('stride', 2))
            x = _Tensor(g.node('Resize', [x.name, '', g.const(f'up{i}.scales', np.float32(
                [1, 1, s, s]))], f'upsample{i}', mode='nearest',
                coordinate_transformation_mode='asymmetric', nearest_mode='floor'),
                x.channels, x.height * s, x.width * s)
        elif kind == 'route':
            src = [layers[j if j >= 0 else i + j] for j in _ints(opts['layers'])]
            if len(src) == 1:
                x = src[0]
            else:
                x = _Tensor(g.node('Concat', [s.name for s in src], f'route{i}', axis=1),
                            sum(s.channels for s in src), src[0].height, src[0].width)
        elif kind == 'shortcut':
            other = layers[int(opts['from']) + i if int(opts['from']) < 0 else int(opts['from'])]
            x = _Tensor(g.node('Add', [x.name, other.name], f'shortcut{i}'), x.channels,
                        x.height, x.width)
        elif kind == 'yolo':
            head, num_classes, n = _yolo(g, i, opts, x, net_w, net_h)
            heads.append(head)
            num_boxes += n
        else:
            raise ModelError(f'layer {i}: darknet layer type [{kind}] is not supported')
        layers.append(x)
    if not heads:
        raise ModelError('the cfg has no [yolo] layer')
    if w.remaining:
        raise ModelError(f'weights file has {w.remaining} values more than the cfg uses: '
                         f'it does not match the cfg')
    if class_names is not None and len(class_names) != num_classes:
        raise ModelError(f'{len(class_names)} class names for a model of {num_classes} classes')
    out = g.node('Concat', heads, OUTPUT_NAME, axis=2) if len(heads) > 1 else heads[0]
    graph = helper.make_graph(
        g.nodes, source,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, channels, net_h, net_w])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 4 + num_classes, num_boxes])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)],
                              producer_name='yolo_trt_ros.darknet')
    model.ir_version = 8
    meta = {'format': 'yolov8', 'source': source, 'imgsz': json.dumps([net_h, net_w])}
    if class_names is not None:
        meta['names'] = json.dumps(class_names)
    helper.set_model_props(model, meta)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def convert_files(cfg: Path, weights: Path, names: Path | None, out: Path) -> Path:
    """Convert darknet files on disk; writes the ONNX atomically. Returns out."""
    class_names = None
    if names is not None:
        class_names = [n.strip() for n in names.read_text().splitlines() if n.strip()]
    model = convert(cfg.read_text(), weights.read_bytes(), class_names, source=cfg.stem)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, model.SerializeToString())
    return out
