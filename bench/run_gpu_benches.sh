#!/usr/bin/env bash
# Every benchmark of docs/PERFORMANCE.md in one go, on a GPU machine with ROS set up as
# bench/device_env.sh does:   bash bench/run_gpu_benches.sh OUT_DIR [SECONDS]
# Writes stages, the heads (gpu_tasks), round trip, capacity, frame memory, GPU stages and
# lifecycle-memory JSON (with the machine) into OUT_DIR. With `source
# bench/ultralytics_env.sh WHEELS` before it, the stages include Ultralytics' rows (its
# predictor by its own timings, torchvision loaded as its users have it).
set -u
OUT=${1:?output folder}
SECONDS_EACH=${2:-15}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m yolo_trt_ros.cli bench --frames 300 --warmup 30 --json "$OUT/stages.json" \
    2>&1 | tee "$OUT/stages.txt"
python3 bench/gpu_tasks.py --frames 300 --json "$OUT/gpu_tasks.json" \
    2>&1 | tee "$OUT/gpu_tasks.txt"
python3 bench/ros_roundtrip.py --frames 150 --rate 20 --json "$OUT/roundtrip.json" \
    2>&1 | grep -v "^{"
for mode in raw compressed; do
    flag=$([[ $mode == compressed ]] && echo --compressed)
    for workers in 1 auto; do
        python3 bench/capacity.py --cameras 8 --fps 30 --size 1920x1080 \
            --seconds "$SECONDS_EACH" --workers "$workers" $flag \
            --json "$OUT/capacity_${mode}_w${workers}.json" 2>&1
    done
done
python3 bench/node_memory.py --fps 15 --frames 150 --json "$OUT/node_memory.json" 2>&1
python3 bench/gpu_stages.py --json "$OUT/gpu_stages.json" 2>&1 | grep -v "^\["
(cd bench && python3 lifecycle_memory.py --json "$OUT/lifecycle_memory.json" 2>&1 | grep -v "^\[")
