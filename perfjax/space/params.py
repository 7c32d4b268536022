"""Typed parameters of a search space.

A parameter knows its domain, its default, its prior and how one of its values is stored in a
batch column (the struct-of-arrays pytree a Space produces):

=============  =====================================  ==============================
type           batch column                           plain-dict value
=============  =====================================  ==============================
Real           float64 [N]                            float
Integer        int64 [N]                              int
Ordinal        the value itself, int64/float64 [N]    one of ``values``
Categorical    index into ``values``, int64 [N]       one of ``values`` (any JSON value)
Permutation    int64 [N, n]; column k = item at k     list of n ints
=============  =====================================  ==============================

Parameters are created without a name (``Real(0, 1)``) and named by the Space that holds them.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from perfjax.errors import SpaceError

# Finite domains up to this many values are enumerated (filtered against constraints value by
# value); larger ones are sampled through random candidates like real parameters.
ENUMERATE_LIMIT = 1 << 16
INTEGER_LIMIT = 2**62  # integer bounds: hi - lo + 1 must fit the int64 sampler

_PRIOR_NAMES = ("uniform", "gaussian", "exponential", "decay", "estimate", "custom_gaussian")


def _prior_parameters(owner: "Parameter", value: Any) -> tuple:
    """``prior_parameters`` as a tuple of finite numbers (SpaceError naming the parameter if not)."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise owner.fail(f"prior_parameters must be a list of numbers, got {value!r}")
    values = tuple(value)
    for v in values:
        _number(owner, v, "every prior parameter")
    return values


def _check_prior(owner: "Parameter", size: int | None) -> None:
    prior = owner.prior
    if prior is None or isinstance(prior, str) and prior == "uniform":
        return
    if isinstance(prior, str):
        if prior not in _PRIOR_NAMES:
            raise owner.fail(f"unknown prior {prior!r} (known: {', '.join(_PRIOR_NAMES)} or a list "
                             "of probabilities)")
        # HyperMapper files may give "gaussian" without [mean, std]; such a prior says nothing
        # we can use, so it is kept for round trips and sampling stays uniform.
        if prior == "gaussian" and owner.prior_parameters:
            if len(owner.prior_parameters) != 2 or not float(owner.prior_parameters[1]) > 0:
                raise owner.fail("a gaussian prior needs prior_parameters [mean, std] with std > 0, "
                                 f"got {list(owner.prior_parameters)!r}")
        return
    if not isinstance(prior, (list, tuple, np.ndarray)):
        raise owner.fail(f"prior must be a prior name or a list of probabilities, got {prior!r}")
    if size is None:
        raise owner.fail("a list prior needs a finite parameter")
    try:
        weights = np.asarray(prior, dtype=float)
    except (TypeError, ValueError):
        raise owner.fail(f"prior must be {size} non-negative probabilities, got {list(prior)!r}") from None
    if weights.shape != (size,) or not np.all(np.isfinite(weights)) or np.any(weights < 0) \
            or weights.sum() <= 0:
        raise owner.fail(f"prior must be {size} non-negative probabilities, got {list(prior)!r}")


@dataclass(frozen=True)
class Parameter:
    """Base class; subclasses define the domain."""

    kind: ClassVar[str] = ""
    default: Any = None
    prior: Any = None
    prior_parameters: tuple = ()
    name: str = field(default="", compare=False)

    def fail(self, why: str) -> SpaceError:
        label = f"parameter {self.name!r}" if self.name else f"{type(self).__name__} parameter"
        return SpaceError(f"{label}: {why}")

    def named(self, name: str) -> "Parameter":
        named = copy.copy(self)
        object.__setattr__(named, "name", name)
        return named

    # Overridden by subclasses -------------------------------------------------------------
    dtype: ClassVar[Any] = np.float64

    def size(self) -> float:
        """Number of values (inf for reals)."""
        raise NotImplementedError

    def values_array(self) -> np.ndarray | None:
        """Every value as batch entries, or None when the domain is too large to enumerate."""
        return None

    def bounds(self) -> tuple[float, float]:
        """Smallest and largest batch entry (used for interval reasoning)."""
        raise NotImplementedError

    def to_entry(self, value: Any) -> Any:
        """Plain value -> batch entry, raising SpaceError when the value is outside the domain."""
        raise NotImplementedError

    def from_entry(self, entry: Any) -> Any:
        """Batch entry -> plain Python value."""
        raise NotImplementedError

    def default_value(self) -> Any:
        raise NotImplementedError

    def contains(self, column: Any) -> Any:
        """Vectorized domain membership of a batch column (numpy or jax arrays)."""
        raise NotImplementedError

    def base_weights(self) -> np.ndarray | None:
        """Probability of each enumerated value under the space's base (uniform) measure."""
        values = self.values_array()
        return None if values is None else np.full(len(values), 1.0 / len(values))

    def prior_weights(self) -> np.ndarray | None:
        """Probability of each enumerated value under the prior (the base measure if none)."""
        values = self.values_array()
        if values is None:
            return None
        if isinstance(self.prior, (list, tuple)):
            weights = np.asarray(self.prior, dtype=float)
            return weights / weights.sum()
        if self.prior == "gaussian" and self.prior_parameters:
            mean, std = self.prior_parameters
            # In log space, relative to the largest: a mean far outside the values still puts the
            # mass on the values nearest to it (exp(-z^2/2) would underflow to 0 everywhere).
            log_weights = -0.5 * ((values.astype(float) - mean) / std) ** 2
            weights = np.exp(log_weights - log_weights.max())
            return weights / weights.sum()
        return self.base_weights()


def _whole(column: Any) -> Any:
    """Vectorized "holds a whole number" for an index or integer column: True (no work at all)
    for integer dtypes, the usual case; a float column must hold integral values."""
    dtype = getattr(column, "dtype", None)
    if dtype is None or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.bool_):
        return True
    import jax.numpy as jnp
    xp = np if isinstance(column, np.ndarray) else jnp
    return xp.floor(column) == column


def _number(owner: Parameter, value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise owner.fail(f"{what} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise owner.fail(f"{what} must be finite, got {value!r}")
    return value


@dataclass(frozen=True)
class Real(Parameter):
    """A real number in [lo, hi]; ``log=True`` samples and encodes it on a log scale."""

    kind: ClassVar[str] = "real"
    dtype: ClassVar[Any] = np.float64
    lo: float = 0.0
    hi: float = 1.0
    log: bool = False

    def __init__(self, lo: float, hi: float, log: bool = False, default: Any = None,
                 prior: Any = None, prior_parameters: Sequence[float] = (), name: str = ""):
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)
        object.__setattr__(self, "log", bool(log))
        object.__setattr__(self, "default", default)
        object.__setattr__(self, "prior", prior)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "prior_parameters", _prior_parameters(self, prior_parameters))
        self.validate()

    def validate(self) -> None:
        lo, hi = _number(self, self.lo, "lo"), _number(self, self.hi, "hi")
        if lo > hi:
            raise self.fail(f"min {lo} > max {hi}")
        if not math.isfinite(float(hi) - float(lo)):  # sampling and encodings scale by hi - lo
            raise self.fail(f"range [{lo}, {hi}] is too wide: its width hi - lo overflows to inf")
        if self.log and lo <= 0:
            raise self.fail(f"log transform needs a positive range, got [{lo}, {hi}]")
        if self.default is not None:
            self.to_entry(self.default)
        _check_prior(self, None)

    def size(self) -> float:
        return 1.0 if self.lo == self.hi else math.inf

    def bounds(self) -> tuple[float, float]:
        return float(self.lo), float(self.hi)

    def to_entry(self, value: Any) -> float:
        value = float(_number(self, value, "value"))
        if not self.lo <= value <= self.hi:
            raise self.fail(f"value {value} is outside [{self.lo}, {self.hi}]")
        return value

    def from_entry(self, entry: Any) -> float:
        return float(entry)

    def default_value(self) -> float:
        if self.default is not None:
            return float(self.default)
        return math.sqrt(self.lo * self.hi) if self.log else (self.lo + self.hi) / 2

    def contains(self, column: Any) -> Any:
        return (column >= self.lo) & (column <= self.hi)


@dataclass(frozen=True)
class Integer(Parameter):
    """An integer in [lo, hi]; ``log=True`` samples it log-uniformly and encodes it on a log scale."""

    kind: ClassVar[str] = "integer"
    dtype: ClassVar[Any] = np.int64
    lo: int = 0
    hi: int = 1
    log: bool = False

    def __init__(self, lo: int, hi: int, log: bool = False, default: Any = None,
                 prior: Any = None, prior_parameters: Sequence[float] = (), name: str = ""):
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)
        object.__setattr__(self, "log", bool(log))
        object.__setattr__(self, "default", default)
        object.__setattr__(self, "prior", prior)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "prior_parameters", _prior_parameters(self, prior_parameters))
        self.validate()

    def validate(self) -> None:
        for what, v in (("min", self.lo), ("max", self.hi)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) and not (
                    isinstance(v, (float, np.floating)) and float(v).is_integer()):
                raise self.fail(f"{what} must be an integer, got {v!r}")
        object.__setattr__(self, "lo", int(self.lo))
        object.__setattr__(self, "hi", int(self.hi))
        if max(abs(self.lo), abs(self.hi)) > INTEGER_LIMIT:
            raise self.fail(f"bounds [{self.lo}, {self.hi}] exceed +-2^62 (64-bit sampling)")
        if self.lo > self.hi:
            raise self.fail(f"min {self.lo} > max {self.hi}")
        if self.log and self.lo <= 0:
            raise self.fail(f"log transform needs a positive range, got [{self.lo}, {self.hi}]")
        if self.default is not None:
            self.to_entry(self.default)
        _check_prior(self, self.hi - self.lo + 1 if self.hi - self.lo < ENUMERATE_LIMIT else None)

    def size(self) -> float:
        return float(self.hi - self.lo + 1)

    def values_array(self) -> np.ndarray | None:
        if self.hi - self.lo + 1 > ENUMERATE_LIMIT:
            return None
        return np.arange(self.lo, self.hi + 1, dtype=np.int64)

    def base_weights(self) -> np.ndarray | None:
        values = self.values_array()
        if values is None or not self.log:
            return super().base_weights()
        # Log-uniform mass of each integer k: the share of [lo - 1/2, hi + 1/2] in log space.
        edges = np.log(np.concatenate([values - 0.5, [values[-1] + 0.5]]))
        mass = np.diff(edges)
        return mass / mass.sum()

    def bounds(self) -> tuple[float, float]:
        return float(self.lo), float(self.hi)

    def to_entry(self, value: Any) -> int:
        _number(self, value, "value")
        if float(value) != int(value):
            raise self.fail(f"value {value!r} is not an integer")
        value = int(value)
        if not self.lo <= value <= self.hi:
            raise self.fail(f"value {value} is outside [{self.lo}, {self.hi}]")
        return value

    def from_entry(self, entry: Any) -> int:
        return int(entry)

    def default_value(self) -> int:
        if self.default is not None:
            return int(self.default)
        if self.log:
            return int(round(math.sqrt(self.lo * self.hi)))
        return (self.lo + self.hi) // 2

    def contains(self, column: Any) -> Any:
        return (column >= self.lo) & (column <= self.hi) & _whole(column)


@dataclass(frozen=True)
class Ordinal(Parameter):
    """One of an ordered list of numbers (tile sizes, thread counts); ``log`` encodes on a log scale."""

    kind: ClassVar[str] = "ordinal"
    values: tuple = ()
    log: bool = False

    def __init__(self, values: Sequence[Any], default: Any = None, log: bool = False,
                 prior: Any = None, prior_parameters: Sequence[float] = (), name: str = ""):
        object.__setattr__(self, "default", default)
        object.__setattr__(self, "prior", prior)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "prior_parameters", _prior_parameters(self, prior_parameters))
        object.__setattr__(self, "log", bool(log))
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise self.fail(f"values must be a list of numbers, got {values!r}")
        values = list(values)
        if not values:
            raise self.fail("an ordinal needs at least one value")
        numbers = [_number(self, v, "every value") for v in values]
        if len(set(float(v) for v in numbers)) != len(numbers):
            raise self.fail(f"values repeat: {values!r}")
        ordered = sorted(numbers, key=float)
        too_big = [v for v in ordered
                   if isinstance(v, (int, np.integer)) and abs(int(v)) > INTEGER_LIMIT]
        if too_big:
            raise self.fail(f"value {too_big[0]} exceeds +-2^62 (values are stored as 64-bit numbers)")
        if all(float(v).is_integer() and abs(float(v)) <= INTEGER_LIMIT for v in ordered):
            ordered = [int(v) for v in ordered]
        else:
            ordered = [float(v) for v in ordered]
        object.__setattr__(self, "values", tuple(ordered))
        if self.log and ordered[0] <= 0:
            raise self.fail(f"log transform needs positive values, got {ordered[0]}")
        if default is not None:
            self.to_entry(default)
        _check_prior(self, len(ordered))

    @property
    def dtype(self) -> Any:  # type: ignore[override]
        return np.int64 if isinstance(self.values[0], int) else np.float64

    def size(self) -> float:
        return float(len(self.values))

    def values_array(self) -> np.ndarray:
        return np.asarray(self.values, dtype=self.dtype)

    def bounds(self) -> tuple[float, float]:
        return float(self.values[0]), float(self.values[-1])

    def to_entry(self, value: Any) -> Any:
        _number(self, value, "value")
        for v in self.values:
            if float(v) == float(value):
                return v
        raise self.fail(f"value {value!r} is not one of {list(self.values)}")

    def from_entry(self, entry: Any) -> Any:
        return self.to_entry(entry.item() if hasattr(entry, "item") else entry)

    def index_of(self, column: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.values_array(), np.asarray(column))

    def default_value(self) -> Any:
        return self.to_entry(self.default) if self.default is not None else self.values[0]

    def contains(self, column: Any) -> Any:
        import jax.numpy as jnp
        xp = np if isinstance(column, np.ndarray) else jnp
        return xp.isin(column, xp.asarray(self.values_array()))


@dataclass(frozen=True)
class Categorical(Parameter):
    """One of an unordered list of values (strings or numbers); stored as the value's index."""

    kind: ClassVar[str] = "categorical"
    dtype: ClassVar[Any] = np.int64
    values: tuple = ()

    def __init__(self, values: Sequence[Any], default: Any = None, prior: Any = None,
                 prior_parameters: Sequence[float] = (), name: str = ""):
        object.__setattr__(self, "default", default)
        object.__setattr__(self, "prior", prior)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "prior_parameters", _prior_parameters(self, prior_parameters))
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise self.fail(f"values must be a list, got {values!r}")
        values = tuple(values)
        if not values:
            raise self.fail("a categorical needs at least one value")
        if len(set(map(repr, values))) != len(values):
            raise self.fail(f"values repeat: {list(values)!r}")
        object.__setattr__(self, "values", values)
        if default is not None:
            self.index_of(default)
        _check_prior(self, len(values))

    def index_of(self, value: Any) -> int:
        for i, v in enumerate(self.values):
            if v == value and type(v) is type(value) or repr(v) == repr(value):
                return i
        # Scenario files write categorical values as strings; accept the string form of a value.
        for i, v in enumerate(self.values):
            if str(v) == str(value):
                return i
        raise self.fail(f"value {value!r} is not one of {list(self.values)}")

    def size(self) -> float:
        return float(len(self.values))

    def values_array(self) -> np.ndarray:
        return np.arange(len(self.values), dtype=np.int64)

    def bounds(self) -> tuple[float, float]:
        return 0.0, float(len(self.values) - 1)

    def to_entry(self, value: Any) -> int:
        return self.index_of(value)

    def from_entry(self, entry: Any) -> Any:
        return self.values[int(entry)]

    def default_value(self) -> Any:
        return self.values[self.index_of(self.default)] if self.default is not None else self.values[0]

    def contains(self, column: Any) -> Any:
        return (column >= 0) & (column < len(self.values)) & _whole(column)


PERMUTATION_PARAMETRIZATIONS = ("spearman", "kendall", "hamming", "naive")
# Largest permutation: relax/round/soften and the hamming embedding hold n x n float64 numbers per
# configuration (kendall n(n-1)/2); relax + round of 256 rows of 512 items peaked at 1.3 GB RSS.
PERMUTATION_LIMIT = 512


@dataclass(frozen=True)
class Permutation(Parameter):
    """An ordering of the items 0..n-1 (a loop order); stored as the item at each position.

    ``parametrization`` picks the default feature embedding for surrogates: "spearman" (position of
    each item), "kendall" (pairwise order) or "hamming" (one-hot position of each item; BaCO's
    "naive" one-hot over all n! orders is mapped to it, since n! features is what perfjax avoids).
    """

    kind: ClassVar[str] = "permutation"
    dtype: ClassVar[Any] = np.int64
    n: int = 0
    parametrization: str = "spearman"

    def __init__(self, n: int, default: Sequence[int] | None = None,
                 parametrization: str = "spearman", name: str = ""):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "prior", None)
        object.__setattr__(self, "prior_parameters", ())
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise self.fail(f"a permutation needs a positive item count, got {n!r}")
        if n > PERMUTATION_LIMIT:
            raise self.fail(f"a permutation of {n} items is too large (at most {PERMUTATION_LIMIT}: "
                            "its relaxation and encodings hold n x n numbers per configuration)")
        object.__setattr__(self, "n", int(n))
        parametrization = str(parametrization).lower()
        if parametrization not in PERMUTATION_PARAMETRIZATIONS:
            raise self.fail(f"unknown parametrization {parametrization!r} (known: "
                            f"{', '.join(PERMUTATION_PARAMETRIZATIONS)})")
        object.__setattr__(self, "parametrization", parametrization)
        object.__setattr__(self, "default", None if default is None else tuple(self.to_entry(default)))

    def size(self) -> float:
        return float(math.factorial(self.n)) if self.n <= 170 else math.inf  # 171! > max float

    def bounds(self) -> tuple[float, float]:
        return 0.0, float(self.n - 1)

    def to_entry(self, value: Any) -> list[int]:
        if isinstance(value, str):  # tables write loop orders as "(0, 2, 1)"
            value = [v for v in value.strip("()[] ").replace(",", " ").split()]
        try:
            items = [int(v) for v in value]
            if any(float(v) != int(v) for v in value):
                raise ValueError
        except (TypeError, ValueError):
            raise self.fail(f"value {value!r} is not a list of item indices") from None
        if sorted(items) != list(range(self.n)):
            raise self.fail(f"value {list(value)!r} is not a permutation of 0..{self.n - 1}")
        return items

    def from_entry(self, entry: Any) -> list[int]:
        return [int(v) for v in entry]

    def default_value(self) -> list[int]:
        return list(self.default) if self.default is not None else list(range(self.n))

    def contains(self, column: Any) -> Any:
        import jax.numpy as jnp
        xp = np if isinstance(column, np.ndarray) else jnp
        if self.n > 32:  # the one-hot count below needs n x n cells a row: sort instead
            return xp.all(xp.sort(column, axis=-1) == xp.arange(self.n), axis=-1)
        # Every item appears exactly once (a one-hot count: far cheaper than sorting rows on CPU).
        counts = (column[..., :, None] == xp.arange(self.n)).sum(axis=-2)
        return xp.all(counts == 1, axis=-1)


def positions(perm: Any) -> Any:
    """Inverse permutations: ``positions(perm)[..., i]`` is the position of item i.

    Computed from one-hot matches rather than argsort: several times faster on CPU for the small
    n of loop orders, and exact for valid permutations.
    """
    import jax.numpy as jnp
    n = perm.shape[-1]
    if n > 32:
        return jnp.argsort(perm, axis=-1)
    match = perm[..., :, None] == jnp.arange(n)  # [..., position, item]
    return jnp.sum(jnp.where(match, jnp.arange(n)[:, None], 0), axis=-2)
