# Packs, on this machine, what the lent GPU machine needs and cannot download (it has no
# network; ../shared/notes/gpu-device.md): into .device/ (ignored by git), each folder one
# `carry` of the device tool (64 MiB at most in one call).
#   .device/gpu   nvImageCodec + nvJPEG wheels for its Python 3.12 (GPU JPEG decoding)
#   .device/ros   the ROS 2 Kilted wheels for rclpy and the messages (bench/device_env.sh)
#   .device/home  the default model and sample images (YOLO_TRT_ROS_HOME of the GPU tests)
# Run after `bash pip_env/setup.sh` (which fetched the model and images):
#   bash bench/device_pack.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64 --platform any)
mkdir -p .device/gpu .device/ros .device/home
python3 -m pip download -q --no-deps "${PLATFORM[@]}" -d .device/gpu \
    $(grep -E '^nvidia-(nvimgcodec|nvjpeg)' pip_env/requirements-cuda13.txt | cut -d';' -f1)
# empy is an sdist: a wheel of it first (pure Python, so any interpreter builds it)
python3 -m pip wheel -q --no-deps -w .device/ros 'empy>=3.3,<4'
python3 -m pip download -q "${PLATFORM[@]}" -d .device/ros --find-links .device/ros \
    -r pip_env/requirements-ros.txt
rm -f .device/ros/numpy-*.whl  # the device has its own numpy
# the model and images only: the darknet originals (reference tests) stay here
.venv/bin/python - <<'PY'
import shutil
from pathlib import Path

from yolo_trt_ros.core.models import paths

home = Path('.device/home')
for path in [paths.default_model_path(), *paths.sample_image_paths()]:
    to = home / path.relative_to(paths.data_home())
    to.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, to)
PY
du -sh .device/*
