"""Performance models: pure JAX functions of (hardware, workload statistics, configurations)."""
