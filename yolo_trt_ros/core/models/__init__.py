"""Provisioning: where the default model and sample images live, fetching and converting
them, and the synthetic models tests and benchmarks use."""
