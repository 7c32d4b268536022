#!/usr/bin/env bash
# The GPU checks in one go, for a machine whose JAX sees a GPU (perfjax importable, e.g. after
# `pip install -e .[test]` with a CUDA build of jax): the Pallas kernel tests compiled
# (interpret=None compiles on a GPU), then benchmarks/pallas_sparse.py and benchmarks/moe_gpu.py.
# Each step's output goes to DIR (default gpu-results/) and the terminal; the exit status is the
# first failing step's. Usage: benchmarks/gpu_checks.sh [DIR]
set -u -o pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-gpu-results}"
mkdir -p "$out"
python="${PYTHON:-python3}"
if ! "$python" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")'; then
    echo "gpu_checks.sh: JAX sees no GPU here (backend: $("$python" -c 'import jax; print(jax.default_backend())')); nothing to check" >&2
    exit 2
fi
status=0
run() {  # name, command...
    local name="$1"; shift
    echo "== $name"
    "$@" 2>&1 | tee "$out/$name.txt"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -ne 0 ] && [ "$status" -eq 0 ] && status=$rc
    echo "== $name: exit status $rc"
}
run pallas_tests "$python" -m pytest -q -p no:cacheprovider "$here/../tests/test_kernels_pallas.py" \
    "$here/../tests/test_kernels_pallas_moe.py"
run pallas_sparse "$python" "$here/pallas_sparse.py"
run moe_gpu "$python" "$here/moe_gpu.py"
exit $status
