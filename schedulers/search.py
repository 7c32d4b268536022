"""Model-free strategies: random search over feasible configurations and exhaustive enumeration."""

from __future__ import annotations

from typing import Any

import numpy as np

from perfjax.errors import SpaceError
from perfjax.schedulers.base import (batch_to_configs, check_count, check_tell, config_key,
                                     plain_config, untried_configs)

# Exhaustive search enumerates at most this many configurations (before constraints).
EXHAUSTIVE_LIMIT = 1_000_000


class RandomSearch:
    """Feasible configurations drawn at random, never repeating one already asked or told; once
    a small space has none left, ``ask`` returns fewer (or none) and ``tune`` stops early."""

    def __init__(self, space, *, seed: int = 0, use_prior: bool = False):
        self.space = space
        self.use_prior = use_prior
        self._rng = np.random.default_rng(seed)
        self._seen: set[tuple] = set()

    def ask(self, n: int) -> list[dict]:
        n = check_count(n)
        out: list[dict] = []
        for _ in range(8):  # redraw duplicates a few times; tiny spaces may run out of new points
            seed = int(self._rng.integers(0, 2**31 - 1))
            for config in batch_to_configs(self.space, self.space.sample(
                    max(2 * n, 16), seed=seed, use_prior=self.use_prior)):
                key = config_key(self.space, config)
                if key not in self._seen:
                    self._seen.add(key)
                    out.append(config)
                    if len(out) == n:
                        return out
        # Every draw repeated: a small space is enumerated for the configurations left; when
        # none is, fewer (or no) configurations come back and ``tune`` stops early.
        left = untried_configs(self.space, lambda batch: np.asarray(
            [config_key(self.space, c) in self._seen for c in batch_to_configs(self.space, batch)],
            dtype=bool))
        if left is not None:
            rows = self._rng.permutation(len(left[self.space.names[0]]))[:n - len(out)]
            for config in batch_to_configs(self.space, {k: v[rows] for k, v in left.items()}):
                self._seen.add(config_key(self.space, config))
                out.append(config)
            return out
        while len(out) < n:  # too large to enumerate: repeats are possible but unlikely
            seed = int(self._rng.integers(0, 2**31 - 1))
            for config in batch_to_configs(self.space, self.space.sample(
                    n - len(out), seed=seed, use_prior=self.use_prior)):
                self._seen.add(config_key(self.space, config))
                out.append(config)
        return out

    def tell(self, configs: list[dict], results: list[dict]) -> None:
        check_tell(configs, results, self.space)
        self._seen.update(config_key(self.space, plain_config(self.space, c)) for c in configs)


class ExhaustiveSearch:
    """Every feasible configuration once, in enumeration order; refuses spaces too large."""

    def __init__(self, space, *, seed: int = 0, limit: float = EXHAUSTIVE_LIMIT):
        size = space.enumerable_size()
        if size > limit:
            raise SpaceError(f"exhaustive search: space {space.name!r} has {size:.4g} configurations "
                             f"to enumerate, more than the limit {limit:.4g}")
        self.space = space
        self._chunks = space.enumerate()
        self._pending: list[dict] = []
        self._seen: set[tuple] = set()
        self.exhausted = False

    def ask(self, n: int) -> list[dict]:
        n = check_count(n)
        out: list[dict] = []
        while len(out) < n:
            if not self._pending:
                chunk = next(self._chunks, None)
                if chunk is None:
                    self.exhausted = True
                    break
                self._pending = batch_to_configs(self.space, chunk)[::-1]
            config = self._pending.pop()
            key = config_key(self.space, config)
            if key not in self._seen:
                self._seen.add(key)
                out.append(config)
        return out

    def tell(self, configs: list[dict], results: list[dict]) -> None:
        check_tell(configs, results, self.space)
        self._seen.update(config_key(self.space, plain_config(self.space, c)) for c in configs)


def make_strategy(name: str, space, *, seed: int = 0, **options: Any):
    """A strategy by name: "bo" (Bayesian optimization), "random" or "exhaustive"."""
    if name == "random":
        cls = RandomSearch
    elif name == "exhaustive":
        cls = ExhaustiveSearch
    elif name == "bo":
        from perfjax.schedulers.bayesopt import BayesOpt
        cls = BayesOpt
    else:
        raise SpaceError(f"unknown strategy {name!r} (known: bo, random, exhaustive)")
    import inspect
    accepted = set(inspect.signature(cls).parameters) - {"space", "seed"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise SpaceError(f"strategy {name!r}: unknown options {unknown} (known: {sorted(accepted)})")
    return cls(space, seed=seed, **options)
