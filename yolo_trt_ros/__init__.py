"""yolo_trt_ros: fast YOLO object detection for ROS 2 with TensorRT engines.

`yolo_trt_ros.core` holds everything that needs no ROS graph (images, preprocessing,
decoding, NMS, backends, the engine builder and cache); `yolo_trt_ros.ros` holds the nodes.
"""

__version__ = '0.1.0'
