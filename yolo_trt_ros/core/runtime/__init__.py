"""The Detector: one object that owns preprocessing, the backend and decoding, run the same
way by the node, the CLI and the benchmarks."""
