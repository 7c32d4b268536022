"""Benchmark harnesses that sit on top of models, schedulers and kernels."""
