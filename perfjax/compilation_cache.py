"""JAX's persistent compilation cache, for the ``perfjax`` command.

Most of a short ``perfjax`` command's time is XLA compiling the same programs it compiled last
time (the search-space samplers, the load-balance and MoE models): ``perfjax demo`` spends about
two thirds of its first section compiling. The command line therefore keeps JAX's persistent
compilation cache in ``~/.cache/perfjax/jax`` (``$PERFJAX_JAX_CACHE`` to move it, ``off`` to
disable it), so a second run reads those programs from disk. A cached program is the same
program: results do not change, only the time to the first one.

Library use (a notebook, a script) is left alone; call ``enable()`` there to get the same.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from perfjax.errors import PerfjaxWarning

ENV = "PERFJAX_JAX_CACHE"
OFF = ("off", "0", "no", "false", "none")
MAX_BYTES = 1 << 30  # least recently used programs are evicted beyond 1 GiB


def user_cache_dir(variable: str, name: str) -> Path | None:
    """A perfjax cache directory: $``variable``, else ~/.cache/perfjax/``name`` (None when
    $``variable`` says off)."""
    env = os.environ.get(variable, "").strip()
    if env and env.lower() in OFF:
        return None
    return Path(env).expanduser() if env else Path.home() / ".cache" / "perfjax" / name


def make_cache_dir(directory: Path, what: str, without: str, variable: str) -> Path | None:
    """``directory`` created (with its parents) and returned; one PerfjaxWarning and None when
    it cannot be, so the caller goes on ``without`` it (e.g. "compiling") instead of failing."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        warnings.warn(f"{what} {directory}: cannot create the directory "
                      f"({exc.strerror or exc}); {without} without it (set {variable}=off to "
                      "silence this)", PerfjaxWarning, stacklevel=3)
        return None
    return directory


def default_dir() -> Path | None:
    """Where ``enable()`` keeps the cache: $PERFJAX_JAX_CACHE, else ~/.cache/perfjax/jax (None
    when $PERFJAX_JAX_CACHE says off)."""
    return user_cache_dir(ENV, "jax")


def enable(path: str | os.PathLike | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache in ``path`` (default ``default_dir()``) for
    every program that takes any time to compile; returns the directory in use, or None.

    Nothing changes (and the directory already in use, if any, is returned) when JAX's own
    cache is configured, by ``JAX_COMPILATION_CACHE_DIR`` or ``jax_compilation_cache_dir``,
    since that is the user's choice. A directory that cannot be created is a PerfjaxWarning
    and no cache, never a failed command.
    """
    import jax

    configured = jax.config.jax_compilation_cache_dir or os.environ.get(
        "JAX_COMPILATION_CACHE_DIR")
    if configured:
        return Path(configured)
    directory = default_dir() if path is None else Path(path).expanduser()
    if directory is None or make_cache_dir(directory, "JAX compilation cache", "compiling",
                                           ENV) is None:
        return None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return directory
