"""Which of YOLO's heads a model has (detect, obb, segment, pose), and whether its outputs
fit that head: read once at start-up, so an inconsistent model is refused in one line.

The task comes from the metadata Ultralytics' exporter writes (`task`, `kpt_shape`,
`names`), else from the outputs: a 4-D second output holds prototypes (`segment`), a
`kpt_shape` means `pose`; an angle row looks like one more class, so `obb` needs `task`. Layouts,
A anchors, C classes, K x D keypoints, M mask coefficients, K' kept rows (end-to-end):
  obb      (N, 4+C+1, A)    cx cy w h, C scores, angle (radians)
           (N, K', 7)       end-to-end: cx cy w h score class angle
  segment  (N, 4+C+M, A)    cx cy w h, C scores, M coefficients; prototypes (N, M, H/4, W/4)
           (N, K', 6+M)     end-to-end: x1 y1 x2 y2 score class, M coefficients
  pose     (N, 4+C+K*D, A)  cx cy w h, C scores, K keypoints of D values (x y [score])
           (N, K', 6+K*D)   end-to-end: x1 y1 x2 y2 score class, K*D keypoint values
"""
from __future__ import annotations

import ast
import json

import numpy as np

from yolo_trt_ros.core.errors import ModelError
from yolo_trt_ros.core.pipeline.decode import detect_format, dims_text, validate_output
from yolo_trt_ros.core.pipeline.head import TASKS, Head


def _literal(raw: str):
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return None


def _kpt_shape(metadata: dict[str, str], source: str) -> tuple[int, int] | None:
    raw = metadata.get('kpt_shape')
    if raw is None:
        return None
    value = _literal(raw)
    if (not isinstance(value, (list, tuple)) or len(value) != 2 or
            not all(isinstance(v, int) for v in value) or value[0] < 1 or value[1] not in (2, 3)):
        raise ModelError(f"{source}: metadata kpt_shape {raw!r} is not [K, D] with K >= 1 "
                         f'keypoints of D = 2 (x y) or 3 (x y score) values')
    return int(value[0]), int(value[1])


def read_head(outputs: list[tuple[tuple[int | None, ...], np.dtype]],
              metadata: dict[str, str], num_classes: int | None, output_format: str,
              input_hw: tuple[int, int], source: str, known_format: str | None = None
              ) -> Head:
    """The head of a model from its outputs ((shape, dtype) each, batch first, None for a
    dynamic dimension), its metadata and class names; ModelError in one line, naming the
    model and the shapes, where they do not fit together. output_format: forced, or
    'auto'; known_format: a detection layout read at build time (an engine's sidecar)."""
    task = metadata.get('task', '').strip() or None
    if task is not None and task not in TASKS:
        raise ModelError(f"{source}: task '{task}' is not served (only "
                         f"{', '.join(TASKS)})")
    boxes_at = next((i for i, (shape, _) in enumerate(outputs) if len(shape) == 3), 0)
    shape, dtype = outputs[boxes_at]
    protos_at = next((i for i, (s, _) in enumerate(outputs) if len(s) == 4 and i != boxes_at
                      and len(shape) == 3), None)
    kpt_shape = _kpt_shape(metadata, source)
    if task is None:  # an angle looks like one more class: obb needs the metadata's task
        task = 'segment' if protos_at is not None else 'pose' if kpt_shape else 'detect'
    if task == 'detect':
        fmt = (output_format if output_format != 'auto' else
               known_format or detect_format(shape, num_classes))
        validate_output(shape, fmt, dtype, num_classes, source)
        return Head('detect', fmt, box_output=boxes_at)
    found = f'{source}: {task} output ({dims_text(shape)})'
    if len(shape) != 3 or shape[1] is None or shape[2] is None:
        raise ModelError(f'{found}: expected (batch, values, anchors) or end-to-end (batch, '
                         f'rows, values) with fixed sizes')
    fmt = output_format
    if fmt == 'auto':  # channels are far fewer than anchors; end-to-end keeps few rows
        fmt = 'yolov8' if shape[1] < shape[2] else 'end2end'
    if fmt not in ('yolov8', 'end2end'):
        raise ModelError(f"{found}: the {task} head is read in the yolov8 or end2end layout, "
                         f"not '{fmt}'")
    values = shape[1] if fmt == 'yolov8' else shape[2]
    proto_stride, mask_dim = 4.0, 0
    if task == 'obb':
        extras = 1
    elif task == 'segment':
        if protos_at is None:
            raise ModelError(f'{found}: a segment model needs a second output, the prototypes '
                             f'(batch, M, H/4, W/4); it has {len(outputs)} output(s)')
        protos = outputs[protos_at][0]
        mask_dim = extras = protos[1]
        if mask_dim is None or mask_dim < 1:
            raise ModelError(f'{source}: prototypes ({dims_text(protos)}) give no mask count')
        proto_stride = _proto_stride(protos, input_hw, source)
    else:  # pose
        extras = None if kpt_shape is None else kpt_shape[0] * kpt_shape[1]
        if kpt_shape is None:  # Ultralytics always writes it; else x y score per point
            rest = values - (4 + (num_classes or 1) if fmt == 'yolov8' else 6)
            if rest < 3 or rest % 3:
                raise ModelError(f'{found}: no kpt_shape in the metadata, and the {rest} '
                                 f'values after the boxes and scores are not keypoints of '
                                 f'3 (x y score); set kpt_shape in the model')
            kpt_shape, extras = (rest // 3, 3), rest
    _check_values(found, task, fmt, values, extras, num_classes, kpt_shape)
    if np.dtype(dtype).kind != 'f':
        raise ModelError(f'{found} {np.dtype(dtype)}: expected a floating-point output')
    return Head(task, fmt, extras, kpt_shape if task == 'pose' else None, mask_dim,
                protos_at, proto_stride, boxes_at)


def _check_values(found: str, task: str, fmt: str, values: int, extras: int,
                  num_classes: int | None, kpt_shape) -> None:
    what = {'obb': 'the angle', 'segment': f'{extras} mask coefficients (one per prototype)',
            'pose': f'{extras} keypoint values (kpt_shape {list(kpt_shape or ())})'}[task]
    if fmt == 'end2end':
        if values != 6 + extras:
            raise ModelError(f'{found}: end-to-end rows hold 6 values (box, score, class) '
                             f'and {what}: {6 + extras}, not {values}')
        return
    classes = values - 4 - extras
    if classes < 1:
        raise ModelError(f'{found}: {values} values per anchor leave no class score after '
                         f'4 box values and {what}')
    if num_classes is not None and classes != num_classes:
        raise ModelError(f'{found}: {values} values per anchor are 4 box values, {classes} '
                         f'class scores and {what}, but {num_classes} class names were given')


def _proto_stride(protos, input_hw: tuple[int, int], source: str) -> float:
    _, _, ph, pw = protos
    h, w = input_hw
    if ph is None or pw is None:
        return 4.0  # dynamic: Ultralytics' prototypes are a quarter of the input
    if ph * w != pw * h or h % ph:
        raise ModelError(f'{source}: prototypes ({dims_text(protos)}) are not the input '
                         f'{h}x{w} scaled down by a whole factor')
    return float(h // ph)
