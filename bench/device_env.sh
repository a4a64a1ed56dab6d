# Source on a machine with Python 3.12 but no ROS: installs carried ROS 2 wheels into a
# prefix, generates vision_msgs there, and exports what rclpy needs (the lent GPU machine;
# see ../shared/notes/gpu-device.md).
#   source bench/device_env.sh WHEELS_DIR [PREFIX]   install (once per PREFIX) and export
#   source bench/device_env.sh - PREFIX              export only (installed by an earlier call)
WHEELS=${1:?wheel folder, or - when PREFIX is already installed}
REPO=$(pwd)
P=${2:-/tmp/rosprefix}
if [[ ! -f $P/.ready ]]; then
    python3 -m pip install -q --no-index --no-deps --prefix "$P" "$WHEELS"/*.whl
fi
SP=$(echo "$P"/lib/python3.*/site-packages)
export PYTHONPATH=$SP:$REPO:$REPO/test${PYTHONPATH:+:$PYTHONPATH} AMENT_PREFIX_PATH=$P CMAKE_PREFIX_PATH=$P
export LD_LIBRARY_PATH=$P/lib:$(ls -d "$SP"/ros_*.libs | tr '\n' ':')${LD_LIBRARY_PATH:-}
# No ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST: rmw_fastrtps then sets the transports itself,
# over the shipped profile's, and the benches would measure those instead of what users run
# (until 2026-12-06 they did: bench/capacity.py records it in its JSON since).
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
unset ROS_AUTOMATIC_DISCOVERY_RANGE
if [[ ! -f $P/.ready ]]; then
    mkdir -p /tmp/vmb && (cd /tmp/vmb && cmake "$REPO/pip_env/vision_msgs" -DCMAKE_INSTALL_PREFIX="$P" \
        -DPython3_EXECUTABLE="$(command -v python3)" -DBUILD_TESTING=OFF >cmake.log 2>&1 &&
        make -j"$(nproc)" install >make.log 2>&1) || { echo "vision_msgs build failed"; tail -20 /tmp/vmb/*.log; }
    python3 -c 'import rclpy, vision_msgs.msg' && touch "$P/.ready"
fi
python3 -c 'import rclpy, vision_msgs.msg; print("ROS ready")'
