"""The top floor: validation of models against real kernels and reference simulators."""
