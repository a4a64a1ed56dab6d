"""The detection pipeline without ROS: nothing under this package imports rclpy.

Each subpackage is one lifetime, and imports only those below it (import-linter checks
this in CI, .importlinter):

  serving/   per frame, in a node: keep-newest slots, health, CDR in and out, the batch
             step (parse -> decode -> detect -> serialize), the node's configuration
  runtime/   per frame: the Detector (preprocess -> backend -> decode, CPU or GPU)
  build/     once per engine: options and cache lookup (no onnx), ONNX preparation,
             fp16, the TensorRT build, the int8 calibrator
  backends/  per frame: ONNX Runtime and TensorRT behind one interface, and the TensorRT
             module helper the build shares
  gpu/       per frame on a GPU: CUDA calls, NVRTC, GPU preprocess / output decode / JPEG
  pipeline/  per frame on the CPU: letterbox, output decoding, NMS, labels, drawing
  store/     engine and kernel caches under one trust policy
  image/     per frame: image buffers, header sizes before decoding, decoder output
  models/    provisioning: the default model and sample images, test models
  errors, defaults, files: the floor, importing nothing of ours
"""
