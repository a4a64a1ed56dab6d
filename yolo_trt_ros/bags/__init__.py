"""`yolo-trt bag`: the detector's batch step over a recorded ROS 2 bag, and bag replay for
the benchmarks. The only part of the package that reads or writes bags (rosbags); the
nodes and the core never import it."""
