"""Typed search spaces with known constraints, feasible sampling and encodings."""

from perfjax.space.params import Categorical, Integer, Ordinal, Parameter, Permutation, Real
from perfjax.space.space import Batch, Space

__all__ = ["Space", "Batch", "Parameter", "Real", "Integer", "Ordinal", "Categorical",
           "Permutation"]
