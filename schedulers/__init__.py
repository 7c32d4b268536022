"""perfjax.schedulers: search strategies (ask/tell) and domain schedulers.

Strategies: ``make_strategy(name, space, seed=..., **options)`` with "bo", "random" and
"exhaustive"; all speak the :class:`Strategy` protocol. Submodules load on first use, so importing
``perfjax.schedulers.partition`` does not pull in the Bayesian optimizer.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Strategy", "make_strategy", "RandomSearch", "ExhaustiveSearch", "BayesOpt"]

_LAZY = {"Strategy": "base", "make_strategy": "search", "RandomSearch": "search",
         "ExhaustiveSearch": "search", "BayesOpt": "bayesopt"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"perfjax.schedulers.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'perfjax.schedulers' has no attribute {name!r}")
