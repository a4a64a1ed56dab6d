"""Where the default model and the sample images live (no download, no onnx: the nodes
import this at start-up)."""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL_NAME = 'yolov3-tiny-coco-416.onnx'
SAMPLE_IMAGES = ('bus.jpg', 'zidane.jpg')


def data_home() -> Path:
    """Where models and sample images live: $YOLO_TRT_ROS_HOME, else the XDG data dir."""
    env = os.environ.get('YOLO_TRT_ROS_HOME')
    if env:
        return Path(env)
    xdg = os.environ.get('XDG_DATA_HOME') or str(Path.home() / '.local' / 'share')
    return Path(xdg) / 'yolo_trt_ros'


def default_model_path() -> Path:
    return data_home() / 'models' / DEFAULT_MODEL_NAME


def darknet_dir() -> Path:
    """The original darknet files of the default model (kept for reference tests)."""
    return data_home() / 'models' / 'darknet'


def sample_image_paths() -> list[Path]:
    return [data_home() / 'images' / name for name in SAMPLE_IMAGES]
