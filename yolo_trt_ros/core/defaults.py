"""Every default and every list of choices shared by more than one way of running the
detector, in one place, and the one check of a choice.

The CLI, the nodes, the launch arguments and config/detector.yaml all take these values
from here (test_defaults.py checks the YAML and the launch arguments), so a default cannot
differ between the ways of running the detector. A default that only one module uses lives
in that module, beside the code it configures.
"""
from __future__ import annotations

from collections.abc import Sequence

CONF_THRESHOLD = 0.25
IOU_THRESHOLD = 0.45
# 300, as Ultralytics' `max_det`: a crowded street scene at 0.25 confidence can exceed
# 100 real objects, and the cap exists to bound NMS output, not to hide detections.
MAX_DETECTIONS = 300
# An absurd cap would only hide a typo (10**12); no image holds more objects than this.
MAX_DETECTIONS_LIMIT = 100_000

BACKENDS = ('auto', 'tensorrt', 'onnxruntime')
BACKEND = 'auto'
PRECISIONS = ('fp32', 'fp16', 'int8')
PRECISION = 'fp32'
FLAVOURS = ('tensorrt', 'tensorrt_rtx')
# Output layouts a model can have; 'auto' detects it from the output shape.
OUTPUT_FORMATS = ('yolov8', 'yolov5', 'end2end')
OUTPUT_FORMAT_CHOICES = ('auto', *OUTPUT_FORMATS)
OUTPUT_FORMAT = 'auto'

# Input QoS reliability: auto follows the publishers (reliable when all of them are).
QOS_RELIABILITIES = ('auto', 'reliable', 'best_effort')
QOS_RELIABILITY = 'auto'
QOS_DEPTH = 1
MAX_QOS_DEPTH = 100  # frames are big: a deeper queue only holds stale ones

IMAGE_TOPIC = 'image'
COMPRESSED = False
PUBLISH_ANNOTATED = True
# Detector processes of one launch: a number, or auto (one per camera, at most one per core).
WORKERS = '1'
MAX_WORKERS = 64
# Multi-object tracking after NMS: none keeps Detection2D.id empty (as before trackers).
TRACKERS = ('none', 'bytetrack', 'botsort')
TRACKER = 'none'
# Preprocessing on the GPU: auto where the backend keeps its input there (TensorRT).
GPU_PREPROCESS_CHOICES = ('auto', 'on', 'off')
GPU_PREPROCESS = 'auto'

# Largest decoded frame, in pixels: 64 MP, above any camera a detector runs on (an 8K
# frame is 33 MP), far below what a hostile header can claim; refused from the header,
# before any pixel memory is allocated.
MAX_IMAGE_PIXELS = 64_000_000


def check_choice(what: str, value: object, choices: Sequence[str]) -> str:
    """value if it is one of choices, else ValueError: "what: 'value' is not a, b or c"."""
    if value not in choices:
        listed = ', '.join(choices[:-1]) + f' or {choices[-1]}' if len(choices) > 1 \
            else choices[0]
        raise ValueError(f"{what}: '{value}' is not {listed}")
    return value
