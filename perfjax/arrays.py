"""Moving arrays between numpy and JAX without compiling anything.

Outside ``jit``, JAX runs each operation as its own compiled program, built once per input
shape. Two of them come up everywhere a batch of a new size crosses the numpy / JAX boundary
(measured with JAX 0.10 on this project's CPU): ``jnp.asarray(ndarray)`` without a dtype stages
an identity program per shape (``jit(stage)``, about 20 ms each time a shape is new), and
slicing a JAX array compiles a ``dynamic_slice`` per result shape (about 50 ms). A search that
filters its candidates ends up with a new size at nearly every step. The helpers here do both on
the host instead, and ``bucket`` / ``pad_rows`` let a jitted function serve every batch size
from a few compiled programs.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def to_jax(x: Any) -> jax.Array:
    """``x`` as a JAX array by a plain copy to the device (the dtype given, so ``jnp.asarray``
    takes its ``device_put`` path instead of staging a program)."""
    x = np.asarray(x)
    return jnp.asarray(x, dtype=x.dtype)


def head(x: Any, n: int) -> jax.Array:
    """The first ``n`` rows of ``x`` (a JAX or numpy array), sliced on the host."""
    return to_jax(np.asarray(x)[:n])


def bucket(n: int, smallest: int = 64) -> int:
    """The padded size for ``n`` rows: the next power of two, at least ``smallest``. A jitted
    function compiles once per padded shape, so inputs padded to their bucket share a few
    compiled programs (the GP's observations and candidates, validation's matrices, a space's
    encodings)."""
    return max(smallest, 1 << max(n - 1, 0).bit_length())


def pad_rows(x: np.ndarray, size: int) -> np.ndarray:
    """``x`` with zero rows appended up to ``size`` rows (``x`` itself when it has them)."""
    n = x.shape[0]
    if n == size:
        return x
    return np.concatenate([x, np.zeros((size - n, *x.shape[1:]), dtype=x.dtype)])


def on_buckets(program: Any, tree: Any) -> Any:
    """``program`` (a jitted function of a tree of arrays with one row per configuration) on
    ``tree`` padded with zero rows to its ``bucket``, the result cut back to the real rows on the
    host: one compile per bucket, not per batch size. From 65,536 rows on, the batch runs as it is
    (a program of its own size rather than a padding copy)."""
    n = int(np.shape(jax.tree_util.tree_leaves(tree)[0])[0])
    if n >= 1 << 16:
        return program(tree)
    out = program(jax.tree_util.tree_map(lambda v: pad_rows(np.asarray(v), bucket(n)), tree))
    return jax.tree_util.tree_map(lambda v: head(v, n), out)


def is_traced(tree: Any) -> bool:
    """Whether any leaf of ``tree`` is a tracer (inside ``jit``, ``grad`` or ``vmap``)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


YNN_OFF = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.lru_cache(maxsize=1)
def elementwise_compiler_options() -> dict:
    """``compiler_options`` for ``jax.jit`` that keep XLA:CPU from handing chains of elementwise
    operations and their reductions to YNNPACK fusions, for programs where those measured slower
    than XLA's own loop fusions (the MoE fast path's per-device times: one YNNPACK fusion over
    [8, 2048, 8] took 5.8 ms of a 17 ms call in a profile on this CPU; see
    ``perfjax.models.pim``). Empty when this jaxlib does not know the option (probed once by
    compiling a one-operation program), so an upgrade that drops it costs the speed, not the
    program. Other backends ignore it."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=YNN_OFF)(np.float32(1.0)).block_until_ready()
    except Exception:  # noqa: BLE001 - JaxRuntimeError "No such compile option" and the like
        return {}
    return dict(YNN_OFF)


def jit_elementwise(fun: Any = None, *, static_argnames: tuple = ()) -> Any:
    """``jax.jit(fun, static_argnames=...)`` compiled with ``elementwise_compiler_options``, the
    jitted function built at the first call (so importing a module that uses it probes and
    compiles nothing). Usable as ``@partial(jit_elementwise, static_argnames=(...))``."""
    if fun is None:
        return functools.partial(jit_elementwise, static_argnames=static_argnames)
    program = None

    @functools.wraps(fun)
    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal program
        if program is None:
            program = jax.jit(fun, static_argnames=static_argnames,
                              compiler_options=elementwise_compiler_options())
        return program(*args, **kwargs)

    return call


__all__ = ["to_jax", "head", "bucket", "pad_rows", "on_buckets", "is_traced",
           "elementwise_compiler_options", "jit_elementwise"]
