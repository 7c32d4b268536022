"""Built-in scenarios (BaCO format) that need no downloaded data.

Use them as ``perfjax.scenarios.load("taco-spmm")`` or on the command line as
``perfjax space check builtin:taco-spmm``. Their parameter ranges follow the TACO and RISE/ELEVATE
benchmarks of BaCO (CATBench); the loop-order constraints are written for the loops each kernel
has.
"""

from __future__ import annotations

import os
from typing import Any

from perfjax.errors import SpaceError
from perfjax.space import Space

_POW2 = [2 ** k for k in range(11)]  # 1 .. 1024


def _ordinal(values: list, default: Any, log: bool = True, constraints: list | None = None) -> dict:
    spec = {"parameter_type": "ordinal", "values": values, "parameter_default": default}
    if log:
        spec["transform"] = "log"
    if constraints:
        spec["constraints"] = constraints
    return spec


def _taco_spmm() -> dict:
    # SpMM C(i,j) = A(i,k) B(k,j) with i split by chunk_size into i0/i1 and j split by
    # unroll_factor into j0/j1: loops [i0, i1, k, j0, j1]. Each split keeps its outer loop
    # outside its inner loop; k (the sparse level) must be inside i1.
    return {
        "application_name": "taco-spmm",
        "optimization_objectives": ["compute_time"],
        "input_parameters": {
            "chunk_size": _ordinal(_POW2[1:], 16),
            "unroll_factor": _ordinal(_POW2[:7], 8, constraints=["unroll_factor <= chunk_size"]),
            "omp_chunk_size": _ordinal(_POW2[:9], 1),
            "omp_num_threads": _ordinal(list(range(1, 65)), 16, log=False),
            "omp_scheduling_type": {"parameter_type": "categorical",
                                    "values": ["static", "dynamic", "guided"],
                                    "parameter_default": "static"},
            "omp_monotonic": _ordinal([0, 1], 0, log=False, constraints=[
                "(omp_monotonic == 0) | (omp_scheduling_type != 'static')"]),
            "permutation": {"parameter_type": "permutation", "values": [5],
                            "parameter_default": [0, 1, 2, 3, 4], "parametrization": "spearman",
                            "constraints": ["(permutation_i0 < permutation_i1) & "
                                            "(permutation_i3 < permutation_i4) & "
                                            "(permutation_i1 < permutation_i2)"]},
        },
    }


def _taco_mttkrp7() -> dict:
    # MTTKRP A(i,j) = B(i,k,l) C(k,j) D(l,j) with i and j split: loops [i0, i1, k, l, j0, j1, r]
    # where r is the rank-blocking loop. Splits stay ordered, k before l (CSF level order), and a
    # dynamic schedule is needed when the blocked loop r runs outside the sparse levels.
    return {
        "application_name": "taco-mttkrp7",
        "optimization_objectives": ["compute_time"],
        "input_parameters": {
            "chunk_size": _ordinal(_POW2[1:], 16),
            "unroll_factor": _ordinal(_POW2[:7], 4, constraints=["unroll_factor <= chunk_size"]),
            "rank_block": _ordinal([4, 8, 16, 32, 64], 16),
            "omp_chunk_size": _ordinal(_POW2[:9], 1, constraints=[
                "omp_chunk_size * omp_num_threads <= 4096"]),
            "omp_num_threads": _ordinal(list(range(1, 65)), 16, log=False),
            "omp_scheduling_type": {"parameter_type": "categorical",
                                    "values": ["static", "dynamic", "guided"],
                                    "parameter_default": "static"},
            "loop_order": {"parameter_type": "permutation", "values": [7],
                           "parameter_default": list(range(7)), "parametrization": "kendall",
                           "constraints": [
                               "(loop_order_i0 < loop_order_i1) & (loop_order_i4 < loop_order_i5)",
                               "loop_order_i2 < loop_order_i3",
                               "(loop_order_i6 > loop_order_i2) | (omp_scheduling_type == 'dynamic')",
                               "rank_block * unroll_factor <= 1024",
                           ]},
        },
    }


def _rise_mm() -> dict:
    # The RISE/ELEVATE matrix-multiplication space of BaCO: ten integer parameters in [1, 1024]
    # tied by divisibility, work-group size and local-memory (49152 bytes) constraints.
    def integer(constraints: list[str], deps: list[str]) -> dict:
        spec = {"parameter_type": "integer", "values": [1, 1024], "parameter_default": 4,
                "transform": "log"}
        if constraints:
            spec["constraints"] = constraints
        if deps:
            spec["dependencies"] = deps
        return spec

    return {
        "application_name": "rise-mm",
        "optimization_objectives": ["runtime"],
        "input_parameters": {
            "v3": integer(["v3 % 4 == 0", "v7 % v3 == 0"], ["v7"]),
            "v4": integer(["v5 % v4 == 0"], ["v5"]),
            "v5": integer(["1024 % v5 == 0", "v5 % 4 == 0"], []),
            "v6": integer(["v6 % 4 == 0", "v5 * v8 % v6 == 0"], ["v5", "v8"]),
            "v7": integer(["1024 % v7 == 0", "v7 % 4 == 0"], []),
            "v8": integer(["1024 % v8 == 0",
                           "49152 - 4 * v5 * v7 - 4 * v5 * v8 - 4 * v7 * v8 >= 0"], ["v5", "v7"]),
            "ls0": integer(["gs0 % ls0 == 0"], ["gs0"]),
            "ls1": integer(["gs1 % ls1 == 0", "ls0 * ls1 <= 1024"], ["gs1", "ls0"]),
            "gs0": integer(["1024 % gs0 == 0"], []),
            "gs1": integer(["1024 % gs1 == 0"], []),
        },
    }


def _cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def _kernel(kernel: str) -> dict:
    # perfjax's own generated C kernels (perfjax.bench.kernel_tuning runs them). Threads go one
    # step past the cores so a tuner can learn that oversubscription hurts. SpMM / SDDMM loops
    # [i0, i1, k, j0, j1]: i split by chunk_size, j (the dense K loop) by unroll_factor; k inside
    # i1 inside i0 (outermost, the parallel loop), j0 outside j1. An explicit partition fixes
    # each worker's rows, so the j loops stay inside the row loop and the OpenMP kind is moot.
    cores = _cores()
    params = {
        "chunk_size": _ordinal(_POW2[:10], 16),
        "unroll_factor": _ordinal([1, 2, 4, 8], 1 if kernel == "spmv" else 8),
        "omp_chunk_size": _ordinal(_POW2[:9], 1),
        "omp_num_threads": _ordinal([*range(1, cores + 1), 2 * cores], cores, log=False),
        "omp_scheduling_type": {"parameter_type": "categorical",
                                "values": ["static", "dynamic", "guided"],
                                "parameter_default": "static"},
        "partition": {"parameter_type": "categorical",
                      "values": ["omp", "row_blocks", "static_chunks", "dynamic_chunks",
                                 "nnz_split", "merge_path"],
                      "parameter_default": "omp",
                      "constraints": ["(partition == 'omp') | (omp_scheduling_type == 'static')"]},
    }
    if kernel == "spmv":  # row-length binning (perfjax.kernels.c bin_rows; 0: off), omp loop only
        params["bin_rows"] = _ordinal([0, 2, 4, 8], 0, log=False,
                                      constraints=["(bin_rows == 0) | (partition == 'omp')"])
    if kernel != "spmv":  # CSR SpMV has one legal order (i0 i1 k): no permutation
        params["permutation"] = {
            "parameter_type": "permutation", "values": [5], "parameter_default": [0, 1, 2, 3, 4],
            "parametrization": "spearman",
            "constraints": ["(permutation_i0 < permutation_i1) & (permutation_i1 < permutation_i2)"
                            " & (permutation_i3 < permutation_i4) & "
                            "(permutation_i0 < permutation_i3)"]}
        params["partition"]["constraints"].append(
            "(partition == 'omp') | (permutation_i1 < permutation_i3)")
    return {"application_name": f"kernel-{kernel}", "optimization_objectives": ["compute_time"],
            "input_parameters": params}


BUILTIN = {"taco-spmm": _taco_spmm, "taco-mttkrp7": _taco_mttkrp7, "rise-mm": _rise_mm,
           "kernel-spmm": lambda: _kernel("spmm"), "kernel-spmv": lambda: _kernel("spmv"),
           "kernel-sddmm": lambda: _kernel("sddmm")}


def scenario(name: str) -> dict:
    """The scenario dict of a built-in scenario."""
    if name not in BUILTIN:
        raise SpaceError(f"unknown built-in scenario {name!r} (known: {', '.join(BUILTIN)})")
    return BUILTIN[name]()


def load(name: str) -> Space:
    """A built-in scenario as a Space."""
    return Space.from_baco_json(scenario(name))


def resolve(source: str) -> Space:
    """A path to a scenario file, or ``builtin:NAME``."""
    if isinstance(source, str) and source.startswith("builtin:"):
        return load(source.split(":", 1)[1])
    return Space.from_baco_json(source)
