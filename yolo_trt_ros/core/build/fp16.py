"""float32 ONNX -> mixed-precision float16 ONNX, for strongly typed TensorRT builds.

TensorRT 11 and TensorRT-RTX take precision from the network itself, so an fp16 engine
needs an fp16 ONNX. Ops that lose accuracy or overflow in half precision (exp, softmax,
reductions, division, ...) stay float32; everything else runs in float16. Casts are added
where the two meet; graph inputs and outputs stay float32, so callers see no change.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Part of the fp16 cache key: change it whenever the conversion's output changes.
CONVERTER_VERSION = 1

# Safe in float16: convolutions, matrix products, elementwise ops with bounded outputs,
# and pure data movement.
FP16_OPS = frozenset({
    'Conv', 'ConvTranspose', 'MatMul', 'Gemm', 'Relu', 'LeakyRelu', 'Sigmoid', 'HardSigmoid',
    'HardSwish', 'Tanh', 'Add', 'Sub', 'Mul', 'Clip', 'MaxPool', 'AveragePool',
    'GlobalAveragePool', 'GlobalMaxPool', 'BatchNormalization', 'Concat', 'Split', 'Slice',
    'Reshape', 'Transpose', 'Flatten', 'Squeeze', 'Unsqueeze', 'Resize', 'Upsample', 'Pad',
    'Identity', 'Gather', 'Expand', 'Tile', 'PRelu', 'Max', 'Min', 'Neg', 'Abs',
})
# Inputs that must keep their own type whatever the node's precision (sizes, indices).
KEEP_INPUTS = {'Resize': {1, 2, 3}, 'Upsample': {1}, 'Reshape': {1}, 'Slice': {1, 2, 3, 4},
               'Split': {1}, 'Squeeze': {1}, 'Unsqueeze': {1}, 'Expand': {1}, 'Tile': {1},
               'Gather': {1}, 'Pad': {1, 3}}
FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {i.name: i.data_type for i in g.initializer}
    for v in list(g.input) + list(g.output) + list(g.value_info):
        types[v.name] = v.type.tensor_type.elem_type
    return types


def to_mixed_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A new model: FP16_OPS in float16, the rest float32, float32 at the boundaries."""
    types = _elem_types(model)
    src = model.graph
    inits = {i.name: i for i in src.initializer}
    users: dict[str, set[bool]] = {}  # initializer -> precisions of the nodes reading it
    for node in src.node:
        half = node.op_type in FP16_OPS
        for idx, name in enumerate(node.input):
            if name in inits and idx not in KEEP_INPUTS.get(node.op_type, ()):
                users.setdefault(name, set()).add(half)

    current: dict[str, int] = dict(types)  # tensor -> element type as rewritten so far
    nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    casts: dict[tuple[str, int], str] = {}

    def as_type(name: str, to: int) -> str:
        if current.get(name) not in (FLOAT, HALF) or current[name] == to:
            return name
        if (name, to) not in casts:
            out = f'{name}__as_{"fp16" if to == HALF else "fp32"}'
            nodes.append(helper.make_node('Cast', [name], [out], name=out, to=to))
            casts[(name, to)] = out
            current[out] = to
        return casts[(name, to)]

    for init in src.initializer:
        if init.data_type == FLOAT and users.get(init.name) == {True}:
            arr = numpy_helper.to_array(init).astype(np.float16)
            new_inits.append(numpy_helper.from_array(arr, init.name))
            current[init.name] = HALF
        else:
            new_inits.append(init)

    for node in src.node:
        half = node.op_type in FP16_OPS
        want = HALF if half else FLOAT
        keep = KEEP_INPUTS.get(node.op_type, ())
        inputs = [n if (not n or i in keep) else as_type(n, want) for i, n in enumerate(node.input)]
        new = onnx.NodeProto()
        new.CopyFrom(node)
        del new.input[:]
        new.input.extend(inputs)
        if node.op_type == 'Cast':
            current[node.output[0]] = next(a.i for a in node.attribute if a.name == 'to')
        else:
            for out in node.output:
                if types.get(out) in (FLOAT, HALF):
                    current[out] = want
        nodes.append(new)

    outputs = []
    for out in src.output:
        name = out.name
        if current.get(name) == HALF:  # rename the producer's output, cast back to fp32
            inner = f'{name}__fp16'
            for n in nodes:
                n.output[:] = [inner if o == name else o for o in n.output]
                n.input[:] = [inner if i == name else i for i in n.input]
            nodes.append(helper.make_node('Cast', [inner], [name], name=f'{name}__to_fp32',
                                          to=FLOAT))
        outputs.append(out)

    graph = helper.make_graph(nodes, src.name, list(src.input), outputs, new_inits)
    result = helper.make_model(graph, opset_imports=list(model.opset_import),
                               producer_name='yolo_trt_ros.fp16')
    result.ir_version = model.ir_version
    del result.metadata_props[:]
    result.metadata_props.extend(model.metadata_props)
    onnx.checker.check_model(result)
    return result
