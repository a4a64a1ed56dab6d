#!/usr/bin/env bash
# Issue 21 item 4 on a host with two GPUs (ROS set up as bench/device_env.sh does):
#   bash bench/run_two_gpu.sh OUT_DIR [SECONDS]
# 16 cameras x 1080p x 30 through one launch, raw and compressed, `workers:=auto` on GPU 0
# alone and then on every GPU, in one run: the scaling factor is the second's processed
# fps over the first's (bench/capacity.py --devices).
set -u
OUT=${1:?output folder}
SECONDS_EACH=${2:-15}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=index,name --format=csv,noheader
for mode in raw compressed; do
    flag=$([[ $mode == compressed ]] && echo --compressed)
    for devices in 0 all; do
        python3 bench/capacity.py --cameras 16 --fps 30 --size 1920x1080 \
            --seconds "$SECONDS_EACH" --workers auto --devices "$devices" $flag \
            --json "$OUT/capacity16_${mode}_devices_${devices/,/_}.json" 2>&1 | tail -3
    done
done
