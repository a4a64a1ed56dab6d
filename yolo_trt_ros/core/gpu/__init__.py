"""The GPU side of one frame: CUDA runtime calls (one checked helper), NVRTC kernels, the
preprocessing and output-decoding kernels, and JPEG decoding with nvImageCodec."""
