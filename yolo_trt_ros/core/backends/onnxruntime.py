"""ONNX Runtime backend: CPU by default, CUDA where onnxruntime-gpu provides it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from yolo_trt_ros.core.backends.base import BackendInfo, InputProfile, TensorSpec
from yolo_trt_ros.core.errors import BackendError, ModelError
from yolo_trt_ros.core.files import MODEL_FILE_LIMIT, regular_file_problem

_DTYPES = {'tensor(float)': np.float32, 'tensor(float16)': np.float16,
           'tensor(double)': np.float64, 'tensor(uint8)': np.uint8,
           'tensor(int64)': np.int64, 'tensor(int32)': np.int32}


def _spec(arg) -> TensorSpec:
    dtype = _DTYPES.get(arg.type)
    if dtype is None:
        raise ModelError(f"tensor '{arg.name}' has unsupported type {arg.type}")
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape)
    return TensorSpec(arg.name, shape, np.dtype(dtype))


def _imgsz(meta: dict[str, str]) -> tuple[int, int] | None:
    """The export size Ultralytics (and our converter) record, for a dynamic-size input:
    '[640, 640]' or '640'."""
    raw = meta.get('imgsz', '').strip('[]() ')
    try:
        values = [int(v) for v in raw.split(',') if v.strip()]
    except ValueError:
        return None
    if len(values) == 1:
        values *= 2
    return (values[0], values[1]) if len(values) == 2 and min(values) > 0 else None


class OnnxRuntimeBackend:
    """Runs an ONNX model. device: 'cpu' or 'cuda' (needs onnxruntime-gpu)."""

    def __init__(self, model_path: str | Path, device: str = 'cpu', threads: int = 0,
                 reason: str = '', spin: bool = False) -> None:
        """spin: let the intra-op threads spin-wait after each run (ONNX Runtime's default).
        Off here: a detector runs once a frame, and at camera rate the spinning burned CPU
        between frames without making a run faster (bench/ort_threads.py)."""
        import onnxruntime as ort

        model_path = Path(model_path)
        problem = regular_file_problem(model_path)
        if problem:  # ONNX Runtime would block on a pipe, or read a device forever
            raise ModelError(f'model {model_path} {problem}')
        if model_path.stat().st_size > MODEL_FILE_LIMIT:
            raise ModelError(f'model {model_path} is larger than an ONNX model can be')
        if device == 'cuda':
            if 'CUDAExecutionProvider' not in ort.get_available_providers():
                raise BackendError('ONNX Runtime has no CUDA provider here: install '
                                   'onnxruntime-gpu, or use device cpu')
            providers = ['CUDAExecutionProvider', 'CPUExecutionProvider']
        elif device == 'cpu':
            providers = ['CPUExecutionProvider']
        else:
            raise BackendError(f"unknown ONNX Runtime device '{device}': use cpu or cuda")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.add_session_config_entry('session.intra_op.allow_spinning',
                                         '1' if spin else '0')
        options.log_severity_level = 3  # errors only: warnings go to our own log
        try:
            self._session = ort.InferenceSession(str(model_path), options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for a bad model
            raise ModelError(f'cannot load ONNX model {model_path}: '
                             f'{str(exc).strip().splitlines()[-1]}') from exc
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f'{model_path}: expected one image input, found '
                             f'{[i.name for i in inputs]}')
        self.input = _spec(inputs[0])
        if len(self.input.shape) != 4 or self.input.shape[1] not in (3, None):
            raise ModelError(f"{model_path}: input '{self.input.name}' has shape "
                             f'{list(self.input.shape)}, expected (N, 3, H, W)')
        self.outputs = tuple(_spec(o) for o in self._session.get_outputs())
        self._output_names = [o.name for o in self.outputs]
        meta = dict(self._session.get_modelmeta().custom_metadata_map)
        self.profile = InputProfile.of(self.input, _imgsz(meta))
        self.info = BackendInfo('onnxruntime', device, reason, meta)

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        try:
            return self._session.run(self._output_names, {self.input.name: batch})
        except Exception as exc:  # ORT's own exception types (shape, type mismatch)
            raise BackendError(f'ONNX Runtime inference failed: {exc}') from exc

    def device_io(self) -> None:
        return None  # inputs and outputs live in host memory

    def suspend(self) -> None:
        pass  # the session's memory is the model's: nothing to give back while inactive

    def resume(self) -> None:
        pass

    def close(self) -> None:
        self._session = None

    def __enter__(self) -> OnnxRuntimeBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
