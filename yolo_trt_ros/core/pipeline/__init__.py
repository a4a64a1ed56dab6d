"""The CPU math of one frame: letterbox, output decoding per layout, NMS, class names and
drawing. No GPU, no backend, no ROS: every function here is a plain function of arrays."""
