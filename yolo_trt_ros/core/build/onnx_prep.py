"""ONNX preparation before a TensorRT build: simplify, convert to fp16 (strongly typed
builders), make the input dynamic, and check that the model accepts the requested profile.

Each step is a plain function of a ModelProto; `prepare_onnx` chains them in the one order
that is correct: the fp16 conversion (slow, cached) works on the simplified static model,
and the dynamic rewrite is applied afterwards, whether the fp16 model came from the cache
or not.
"""
from __future__ import annotations

import hashlib
import logging

import numpy as np
import onnx

from yolo_trt_ros.core.build.options import ShapeProfile
from yolo_trt_ros.core.errors import EngineError, ModelError
from yolo_trt_ros.core.store.trust import TrustedDir

_LOG = logging.getLogger(__name__)
DYNAMIC_DIMS = ('batch', None, 'height', 'width')  # NCHW: channels stay fixed


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        import onnxslim
    except ImportError:
        _LOG.info('  onnxslim not installed: parsing the model as it is')
        return model
    before = len(model.graph.node)
    slim = onnxslim.slim(model)
    _LOG.info(f'  simplified with onnxslim: {before} -> {len(slim.graph.node)} nodes')
    return slim


def fp16_cache_name(onnx_sha256: str, simplified: bool) -> str:
    """Everything that changes the converted model: the source, whether it was simplified
    (and by which onnxslim), and the converter's version."""
    from yolo_trt_ros.core.build.fp16 import CONVERTER_VERSION
    try:
        import onnxslim
        slim = onnxslim.__version__ if simplified else 'off'
    except ImportError:
        slim = 'absent'
    key = hashlib.sha256(f'{onnx_sha256}|{slim}|{CONVERTER_VERSION}'.encode()).hexdigest()
    return f'fp16-{key[:24]}.onnx'


def to_fp16_cached(model: onnx.ModelProto, name: str, cache: TrustedDir) -> onnx.ModelProto:
    """The mixed-fp16 model, from the cache (under the trust policy) or converted and
    cached atomically."""
    data, _why = cache.read(name)
    if data is not None:
        try:
            cached = onnx.load_from_string(data)
            _LOG.info(f'  using cached fp16 ONNX {name}')
            return cached
        except Exception:
            _LOG.info(f'  cached fp16 ONNX {name} is damaged: converting again')
    from yolo_trt_ros.core.build.fp16 import to_mixed_fp16
    converted = to_mixed_fp16(model)
    cache.write(name, converted.SerializeToString())
    _LOG.info(f'  converted to mixed fp16 (float32 kept for sensitive ops): {name}')
    return converted


def make_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Batch, height and width of the image input become symbolic (in place)."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, DYNAMIC_DIMS, strict=False):
        if value is not None:
            dim.ClearField('dim_value')
            dim.dim_param = value
    return model


def check_profile(model: onnx.ModelProto, profile: ShapeProfile) -> None:
    """Run the (dynamic) model at the profile's min, opt and max shapes on the CPU: a model
    that cannot take them (a batch-1 reshape, a fixed grid) gets one line naming the input
    and the shape, before TensorRT reports it in terms of its layers. The outputs must
    follow the input's batch, or the detector would read one image's results for all."""
    import onnxruntime as ort

    inp = model.graph.input[0]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=['CPUExecutionProvider'])
    except Exception as exc:
        raise ModelError(f'cannot check the profile: ONNX Runtime rejects the model: '
                         f'{str(exc).strip().splitlines()[-1]}') from exc
    dtype = np.float16 if inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 \
        else np.float32
    channels = inp.type.tensor_type.shape.dim[1].dim_value or 3
    for label, (n, h, w) in (('min', profile.min), ('opt', profile.opt), ('max', profile.max)):
        shape = (n, channels, h, w)
        try:
            outputs = session.run(None, {inp.name: np.zeros(shape, dtype)})
        except Exception as exc:
            raise EngineError(
                f"the model cannot take the profile's {label} shape {list(shape)} at input "
                f"'{inp.name}' ({str(exc).strip().splitlines()[-1][:200]}); export it with a "
                f'dynamic batch/size, or build without --dynamic') from exc
        bad = [list(o.shape) for o in outputs if o.ndim and o.shape[0] != n]
        if bad:
            raise EngineError(
                f"the model ignores the batch at input '{inp.name}': input shape "
                f'{list(shape)} gives output shapes {bad}; export it with a dynamic batch, '
                f'or build without --dynamic')


def prepare_onnx(model: onnx.ModelProto, onnx_sha256: str, precision: str,
                 simplify_first: bool, dynamic: ShapeProfile | None, strongly_typed: bool,
                 cache: TrustedDir) -> onnx.ModelProto:
    """The model TensorRT will parse, for the given build options."""
    if strongly_typed and precision == 'int8':
        raise EngineError('int8 with a strongly typed TensorRT (TensorRT-RTX, TensorRT 11+) '
                          'needs an explicitly quantized (Q/DQ) ONNX: install NVIDIA ModelOpt '
                          "(pip install 'nvidia-modelopt[onnx]') and quantize the model with "
                          'it, then build that ONNX with --precision fp32')
    if simplify_first:
        model = simplify(model)
    if dynamic is not None:  # checked on the float32 model: the fp16 one runs slowly on CPU
        check_profile(make_dynamic(_copy(model)), dynamic)
    if strongly_typed and precision == 'fp16':
        model = to_fp16_cached(model, fp16_cache_name(onnx_sha256, simplify_first), cache)
    if dynamic is not None:
        model = make_dynamic(model)
    return model


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy
