"""ROS 2 nodes and message conversions; the work is done in yolo_trt_ros.core."""
