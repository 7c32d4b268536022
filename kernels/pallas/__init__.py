"""perfjax.kernels.pallas: sparse matrix kernels written in Pallas (Triton on GPU, interpreted
elsewhere).

``spmv_merge_path`` / ``spmm_merge_path`` run CSR SpMV / SpMM with one program per merge-path
segment (``perfjax.schedulers.partition.merge_path``) and a carry fix-up; ``bsr_spmm`` runs
block-sparse SpMM with one program per block row. ``merge_path_csr`` / ``block_sparse`` prepare a
matrix once (host-side split, device arrays) for repeated calls. See ``sparse`` for the design
and the constraints of Pallas that shaped it. ``grouped_matmul`` is a ragged grouped GEMM for
tokens sorted by expert and ``expert_ffn`` an MoE layer's expert part on it (see ``moe``);
``fit_expert_time`` fits a time model's leaves to measured expert times. Bad arguments raise
``perfjax.errors.WorkloadError``.
"""

from perfjax.kernels.pallas.sparse import (
    BLOCK_K, ITEMS_PER_WORKER, BlockSparse, MergePathCSR, block_sparse, bsr_spmm, merge_path_csr,
    spmm_merge_path, spmv_merge_path)

from perfjax.kernels.pallas.moe import ExpertTimeFit, expert_ffn, fit_expert_time, grouped_matmul

__all__ = ["ExpertTimeFit", "expert_ffn", "fit_expert_time", "grouped_matmul", "BLOCK_K", "ITEMS_PER_WORKER", "BlockSparse", "MergePathCSR", "block_sparse",
           "bsr_spmm", "merge_path_csr", "spmm_merge_path", "spmv_merge_path"]
