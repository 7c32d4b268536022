"""Pallas sparse kernels (perfjax.kernels.pallas) against jax.experimental.sparse and dense matmul.

On a GPU: for a power-law (skewed rows) and a banded matrix of about 1e6 and 5e5 nonzeros, times
SpMV and SpMM (K columns) with the merge-path kernels, the BSR kernel, a BCOO matmul and a dense
jnp matmul (skipped where the dense matrix would not fit --dense-gib), all compiled, best of
--repeats after a warm-up call, each ended by block_until_ready; prints milliseconds and each
kernel's time relative to BCOO and to dense (below 1: faster), after checking it against scipy;
a kernel that fails to compile or gives a wrong result is listed at the end (exit status 1)
and the others are still timed.
The matrices' host-side preparation (merge-path split, BSR conversion) is not timed.

Without a GPU it says so on one line and only checks the three kernels in interpret mode on a
small matrix, so the script still proves it works (exit status 1 on a wrong result).

Usage: python benchmarks/pallas_sparse.py [--repeats 20] [--k 32] [--block 8] [--dense-gib 4]
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse

import perfjax  # noqa: F401  (float64 on: the kernels are checked at 1e-10)
from perfjax.kernels import pallas as kp
from perfjax.kernels.pallas.sparse import _is_power_of_two
from perfjax.workloads import sparse


def best_seconds(fn, *args, repeats: int) -> float:
    """Fastest of ``repeats`` calls after one untimed call (compilation, first transfer)."""
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def describe(failure: Exception) -> str:
    """A kernel's compile or launch error on one line: its type and first line, cut at 300."""
    first = (str(failure).splitlines() or [""])[0]  # an exception may have no message
    return f"{type(failure).__name__}: {first[:300]}"


def report_failures(failures: list[str]) -> None:
    """Print each failure on a FAILED line and exit with status 1 if there is any."""
    for failure in failures:
        print(f"FAILED {failure}")
    if failures:
        sys.exit(1)


def relative_error(actual, expected: np.ndarray) -> float:
    return float(np.abs(np.asarray(actual) - expected).max() / max(np.abs(expected).max(), 1e-300))


def candidates(matrix, block: int, dense_gib: float) -> dict:
    """Name -> (jitted function of (matrix operand, dense operand), matrix operand), the dense
    matmul only where the dense matrix fits ``dense_gib``.

    Matrix operands are arguments, not closed-over constants, so jit does not embed them.
    """
    product = jax.jit(lambda a, x: a @ x)
    merge_path = jax.jit(lambda plan, x: (kp.spmm_merge_path if x.ndim == 2
                                          else kp.spmv_merge_path)(plan, x))
    found = {
        "merge_path": (merge_path, kp.merge_path_csr(matrix)),
        f"bsr {block}x{block}": (jax.jit(kp.bsr_spmm), kp.block_sparse(matrix, (block, block))),
        "bcoo": (product, jsparse.BCOO.from_scipy_sparse(matrix)),
    }
    if matrix.shape[0] * matrix.shape[1] * 8 <= dense_gib * 2**30:
        found["dense"] = (product, jnp.asarray(matrix.toarray()))
    return found


def time_matrix(name: str, matrix, args, failures: list[str]) -> list[str]:
    """Table rows for one matrix: every kernel on SpMV and SpMM, times and ratios. A kernel that
    fails (compile error, wrong result) gets no row and a line in ``failures``."""
    rng = np.random.default_rng(0)
    operands = {"spmv": rng.standard_normal(matrix.shape[1]),
                f"spmm K={args.k}": rng.standard_normal((matrix.shape[1], args.k))}
    kernels = candidates(matrix, args.block, args.dense_gib)
    rows = []
    for op, operand in operands.items():
        expected = matrix @ operand
        x = jnp.asarray(operand)
        times = {}
        for kernel, (fn, structure) in kernels.items():
            try:  # a kernel this GPU's compiler rejects is reported; the others are still timed
                error = relative_error(fn(structure, x), expected)
            except Exception as failure:  # noqa: BLE001 - any compile or launch error
                failures.append(f"{name} {op} {kernel}: {describe(failure)}")
                continue
            if error > 1e-10:
                failures.append(f"{name} {op} {kernel}: relative error {error:.2e} against scipy")
                continue
            times[kernel] = best_seconds(fn, structure, x, repeats=args.repeats)
        for kernel, seconds in times.items():
            ratios = [f"{seconds / times[ref]:{width}.2f}" if ref in times else f"{'n/a':>{width}}"
                      for ref, width in (("bcoo", 8), ("dense", 9))]
            rows.append(f"{name:<10} {op:<11} {kernel:<11} {seconds * 1e3:10.3f} {' '.join(ratios)}")
    return rows


def gpu_benchmark(args) -> None:
    matrices = {
        "powerlaw": sparse.powerlaw_rows(16384, 16384, 1_000_000, alpha=1.2, seed=0),
        "banded": sparse.banded(16384, 16, seed=0),
    }
    print(f"device: {jax.devices()[0].device_kind}; float64; best of {args.repeats}")
    for name, matrix in matrices.items():
        print(f"{name}: {matrix.shape[0]} x {matrix.shape[1]}, {matrix.nnz} nonzeros")
    print(f"{'matrix':<10} {'op':<11} {'kernel':<11} {'time [ms]':>10} {'/ bcoo':>8} {'/ dense':>9}")
    failures: list[str] = []
    for name, matrix in matrices.items():
        for row in time_matrix(name, matrix, args, failures):
            print(row, flush=True)
    report_failures(failures)


def interpret_check() -> None:
    """The three kernels in interpret mode on a small skewed matrix, against scipy."""
    matrix = sparse.powerlaw_rows(200, 160, 2000, alpha=1.3, seed=0)
    rng = np.random.default_rng(0)
    x, X = rng.standard_normal(160), rng.standard_normal((160, 8))
    results = {
        "spmv_merge_path": (kp.spmv_merge_path(matrix, x, workers=8, interpret=True), matrix @ x),
        "spmm_merge_path": (kp.spmm_merge_path(matrix, X, workers=8, interpret=True), matrix @ X),
        "bsr_spmm": (kp.bsr_spmm(matrix, X, block=(4, 4), interpret=True), matrix @ X),
    }
    failed = False
    for name, (actual, expected) in results.items():
        error = relative_error(actual, expected)
        failed |= error > 1e-10
        print(f"interpret mode {name}: relative error {error:.1e} against scipy "
              f"({'ok' if error <= 1e-10 else 'WRONG'})")
    if failed:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--k", type=int, default=32, help="columns of the SpMM operand")
    parser.add_argument("--block", type=int, default=8, help="BSR block edge (a power of two)")
    parser.add_argument("--dense-gib", type=float, default=4.0,
                        help="largest dense matrix (GiB) to time the dense matmul on")
    args = parser.parse_args()
    if not _is_power_of_two(args.block):
        parser.error(f"--block must be a power of two, got {args.block}")
    if args.repeats < 1 or args.k < 1:
        parser.error("--repeats and --k must be at least 1")
    if jax.default_backend() != "gpu":
        print(f"no GPU present (JAX backend: {jax.default_backend()}): skipping the timings, "
              "checking the kernels in interpret mode only")
        interpret_check()
        return
    gpu_benchmark(args)


if __name__ == "__main__":
    main()
