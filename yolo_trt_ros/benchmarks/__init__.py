"""`yolo-trt bench` and the pieces the ROS benchmarks in the repository's bench/ share."""
