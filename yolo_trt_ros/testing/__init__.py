"""Support for tests and benchmarks (as numpy.testing is): fakes at the one boundary no
machine of this project can run, the TensorRT runtime. Never used in production."""
