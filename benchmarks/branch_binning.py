"""Row-length binning: measured saving per short-row length change beside the model's.

For generated power-law matrices (random and in-order columns, short and long average rows, one
that streams from memory), times the generated single-thread C SpMV plain and with rows of up
to --bin nonzeros binned by length (``perfjax.kernels.c`` ``bin_rows``; best of --repeats runs
of 30 calls each), and prints the measured saving per length change among those rows, beside
what the calibrated load-balance model predicts (``Calibration.single_thread_time``, costs
fitted on the validation's generated calibration set, other seeds than these matrices). The
model's saving is its ``per_branch_miss`` term; this shows how far the measured one strays.

Usage: python benchmarks/branch_binning.py [--bin 8] [--repeats 3]
"""

from __future__ import annotations

import argparse

import numpy as np

import perfjax  # noqa: F401
from perfjax.kernels import c as ckernels
from perfjax.validate import balance as validation
from perfjax.workloads import sparse

MATRICES = {  # name: (rows, nonzeros, columns)
    "avg 20/row, random columns": (20_000, 400_000, "random"),
    "avg 5/row, random columns": (20_000, 100_000, "random"),
    "avg 5/row, in-order columns": (20_000, 100_000, "local"),
    "avg 20/row, in-order columns": (20_000, 400_000, "local"),
    "avg 5/row, 200k rows (streams)": (200_000, 1_000_000, "random"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", type=int, default=8, help="bin rows of up to this many nonzeros")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not 1 <= args.bin <= 16 or args.repeats < 1:
        parser.error("--bin must lie in 1..16 and --repeats be at least 1")
    settings = validation.Settings(kernels=("spmv",), workers=(1, 4, 16), repeats=5)
    fitted = validation.calibrate_on(validation.calibration_matrices(1), settings)
    print(f"calibrated per_branch_miss {float(fitted['spmv'].per_branch_miss) * 1e9:.2f} ns; "
          f"binning rows of <= {args.bin} nonzeros; times best of {args.repeats}")
    print(f"{'matrix':<32}{'plain us':>10}{'binned us':>10}{'measured ns/change':>20}"
          f"{'model ns/change':>17}")
    for name, (rows, nnz, columns) in MATRICES.items():
        matrix = sparse.powerlaw_rows(rows, rows, nnz, alpha=1.1, seed=0, columns=columns)
        x = np.random.default_rng(0).standard_normal(rows)
        lengths = np.diff(matrix.indptr)
        changes = int(np.count_nonzero((lengths[1:] != lengths[:-1]) & (lengths[1:] <= args.bin)))

        def best(**mode) -> float:
            return min(ckernels.spmv(matrix, x, repeats=30, **mode).best
                       for _ in range(args.repeats))

        plain, binned = best(), best(bin_rows=args.bin)
        model = (fitted.single_thread_time(matrix, "spmv")
                 - fitted.single_thread_time(matrix, "spmv", bin_rows=args.bin))
        print(f"{name:<32}{plain * 1e6:10.0f}{binned * 1e6:10.0f}"
              f"{(plain - binned) / changes * 1e9:20.2f}{model / changes * 1e9:17.2f}")


if __name__ == "__main__":
    main()
