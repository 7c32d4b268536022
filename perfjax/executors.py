"""Executors for ``perfjax.tune(..., executor=...)`` beyond the standard library's pools.

``tune`` takes any ``concurrent.futures.Executor``: thread and process pools, loky, Dask's
``client.get_executor()`` and mpi4py's ``MPIPoolExecutor`` work as they are. Ray has no such
executor, so ``RayExecutor`` wraps its tasks: each ``submit`` is one Ray task (the objective and
the configuration travel by cloudpickle, so closures and lambdas work), returned as a
``concurrent.futures.Future`` through ``ObjectRef.future()``. A worker that dies raises Ray's
error from ``result()``, which ``tune`` records as that evaluation's failure; Ray starts another
worker and the run goes on.

    import ray
    from perfjax.executors import RayExecutor

    ray.init(address="auto")              # or ray.init() for the local machine
    perfjax.tune(space, objective, batch=16, executor=RayExecutor(num_cpus=1))

Install with ``pip install -e '.[ray]'``.
"""

from __future__ import annotations

import threading
from concurrent.futures import Executor, Future
from concurrent.futures import wait as futures_wait
from typing import Any, Callable

from perfjax.errors import PerfjaxError

__all__ = ["RayExecutor"]


def _import_ray():
    try:
        import ray
    except ImportError:
        raise PerfjaxError("RayExecutor needs Ray: pip install -e '.[ray]' (or pip install ray)") \
            from None
    return ray


class RayExecutor(Executor):
    """``concurrent.futures.Executor`` over Ray tasks; ``options`` are Ray's task options
    (``num_cpus``, ``num_gpus``, ``memory``, ``max_retries``, ...). Starts a local Ray
    (``ray.init()``) on the first ``submit`` unless Ray is initialized already, and shuts it down
    on ``shutdown`` only if it started it."""

    def __init__(self, **options: Any):
        self._ray = _import_ray()
        self._options = dict(options)
        self._remote: dict[Callable, Any] = {}  # one Ray remote function per callable
        self._pending: set[Future] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._started_ray = False
        if options:  # a bad option name or value fails here, not on the first evaluation
            try:
                self._ray.remote(**self._options)(_identity)
            except (TypeError, ValueError) as exc:
                raise PerfjaxError(f"RayExecutor: bad Ray task options {self._options}: {exc}") \
                    from None

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if not self._ray.is_initialized():
                self._ray.init()
                self._started_ray = True
            remote = self._remote.get(fn)
            if remote is None:
                remote = self._ray.remote(**self._options)(fn) if self._options \
                    else self._ray.remote(fn)
                self._remote[fn] = remote
        future = remote.remote(*args, **kwargs).future()
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future) -> None:
        with self._lock:
            self._pending.discard(future)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            pending = list(self._pending)
        if cancel_futures:
            for future in pending:
                future.cancel()
        if wait:
            futures_wait(pending)
        with self._lock:
            if self._started_ray and self._ray.is_initialized():
                self._ray.shutdown()
                self._started_ray = False


def _identity(x: Any) -> Any:
    return x
