"""Building an engine, once per model and options. options.py and lookup.py import no onnx
(the runtime uses them to find the cached engine); the rest is the build toolchain."""
