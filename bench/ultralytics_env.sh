# Source on the GPU machine (no network) to make Ultralytics importable for the
# Ultralytics rows of `yolo-trt bench` (issue 21: Ultralytics as its users run it).
# Installs the carried wheels (ultralytics and the pure-Python pieces it imports that the
# machine lacks; torch and torchvision are the machine's own) into a prefix:
#   source bench/ultralytics_env.sh WHEELS_DIR [PREFIX]
# The wheel folder is made where there is network with:
#   pip download --only-binary=:all: --no-deps --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform any -d WHEELS_DIR ultralytics==8.4.190 \
#     pyyaml pillow psutil requests urllib3 idna certifi charset-normalizer ultralytics-thop \
#     nvidia-ml-py matplotlib contourpy cycler fonttools kiwisolver pyparsing \
#     python-dateutil six packaging                      (27 MB: one carry)
# Source it in the same command as the benchmark: each device call is a new shell, and
# without this PYTHONPATH torchvision finds no PIL and the Ultralytics rows are skipped
# (what happened on 2026-12-04's first run). Installs once per PREFIX; `-` as WHEELS_DIR
# only exports.
UL_WHEELS=${1:?wheel folder, or - when PREFIX is already installed}
UL_PREFIX=${2:-/tmp/ultralytics_prefix}
if [[ $UL_WHEELS != - ]]; then
    python3 -m pip install -q --no-index --no-deps --prefix "$UL_PREFIX" "$UL_WHEELS"/*.whl
fi
export PYTHONPATH=$(echo "$UL_PREFIX"/lib/python3.*/site-packages)${PYTHONPATH:+:$PYTHONPATH}
export YOLO_OFFLINE=1  # no online checks (the machine has no network)
python3 -c 'import torch, torchvision, ultralytics
print("ultralytics", ultralytics.__version__, "torch", torch.__version__,
      "torchvision", torchvision.__version__, "cuda", torch.cuda.is_available())'
