"""Workloads: sparse matrices and tensors (reading, formats, statistics, generators)."""

from perfjax.workloads.sparse import (
    COO3, CSF, DCSR, SparseStats, banded, cache_bytes, coo3, gather_misses, generated,
    l1_data_cache_bytes, l2_cache_bytes, length_changes, powerlaw_rows, random_tensor3,
    read_matrix, read_tns, rmat, row_misses, stack_stats, stats, uniform_random)

__all__ = ["COO3", "CSF", "DCSR", "SparseStats", "banded", "cache_bytes", "coo3",
           "gather_misses", "generated", "l1_data_cache_bytes", "l2_cache_bytes",
           "length_changes", "powerlaw_rows", "random_tensor3", "read_matrix", "read_tns", "rmat",
           "row_misses", "stack_stats", "stats", "uniform_random"]
