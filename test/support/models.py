"""ONNX models made for tests beyond the constant-output ones (core/models/synthetic.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_stack(path: Path, layers: int, size: int = 160, channels: int = 16) -> Path:
    """A stack of 3x3 convolutions and ReLUs: a model whose TensorRT build takes a while
    (about 5 ms a layer with TensorRT-RTX on the dev machine), for stopping a build."""
    rng = np.random.default_rng(0)
    nodes, weights, x, c_in = [], [], 'images', 3
    for i in range(layers):
        w = rng.standard_normal((channels, c_in, 3, 3)).astype(np.float32) * 0.1
        weights.append(numpy_helper.from_array(w, f'w{i}'))
        nodes += [helper.make_node('Conv', [x, f'w{i}'], [f'c{i}'], pads=[1, 1, 1, 1]),
                  helper.make_node('Relu', [f'c{i}'], [f'r{i}'])]
        x, c_in = f'r{i}', channels
    graph = helper.make_graph(
        nodes, 'conv_stack',
        [helper.make_tensor_value_info('images', TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, channels, size, size])],
        weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]), path)
    return path


def nan_protos_on_black(path: Path, output: np.ndarray, protos: np.ndarray,
                        input_hw: tuple[int, int], names: list[str]) -> Path:
    """A constant-output segment model whose prototypes turn NaN for an all-black image
    (multiplied by mean / mean, 0 / 0 there): one camera's frames carry bad outputs while
    another camera's, in the same batch, do not."""
    from yolo_trt_ros.core.models.synthetic import constant_output_model

    constant_output_model(path, output, input_hw, names, batch='N', more=(protos,),
                          metadata={'task': 'segment'})  # both cameras in one batch
    model = onnx.load(str(path))
    producer = next(n for n in model.graph.node if 'output1' in n.output)
    producer.output[0] = 'protos_planted'
    model.graph.node.extend([
        helper.make_node('Div', ['m', 'm'], ['one_or_nan']),
        helper.make_node('Mul', ['protos_planted', 'one_or_nan'], ['output1'])])
    onnx.save(model, str(path))
    return path
