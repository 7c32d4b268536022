"""Known constraints: parsed once, evaluated vectorized over whole batches.

A constraint is a Python/numexpr-style boolean expression over parameter names, e.g.
``"tuned_gs0 % tuned_ls0 == 0"`` or ``"(p_i0 < p_i2) & (cs > uf)"``. Permutation parameters expose
BaCO's variables: ``NAME_k`` is the item at position k, ``NAME_ik`` the position of item k.
Categorical parameters are their value's index (BaCO's convention); comparing one with a string
literal (``kind == "dynamic"``) compares with that value's index.

The same syntax tree is evaluated in two ways, both vectorized and traceable by JAX:
* exactly, over arrays of values (``evaluate``);
* over intervals (``evaluate_interval``): every variable is a ``[lo, hi]`` range and the result says
  whether the constraint is surely true, surely false or undecided. The sampler uses this to prune
  a value as soon as no completion of the partial configuration can satisfy a constraint (forward
  checking), which is what makes sampling fast where feasible points are astronomically rare.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import jax.numpy as jnp

from perfjax.errors import SpaceError

_FUNCTIONS = ("abs", "min", "max", "minimum", "maximum", "sqrt", "log", "log2", "log10", "exp",
              "floor", "ceil", "where", "sin", "cos", "tan")

_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "truediv",
           ast.FloorDiv: "floordiv", ast.Mod: "mod", ast.Pow: "pow", ast.BitAnd: "and_",
           ast.BitOr: "or_", ast.BitXor: "xor"}
_CMPOPS = {ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt", ast.GtE: "ge", ast.Eq: "eq", ast.NotEq: "ne"}
_PERM_VAR = re.compile(r"^(?P<base>.+)_(?P<inv>i?)(?P<idx>\d+)$")


@dataclass(frozen=True)
class Variable:
    """A name a constraint reads: a parameter, or one entry of a permutation parameter."""

    param: str
    kind: str  # "value", "item_at" (NAME_k) or "position_of" (NAME_ik)
    index: int = -1


@dataclass(frozen=True)
class Constraint:
    """One parsed constraint: its text, its syntax tree and the variables it reads."""

    text: str
    tree: ast.expr
    variables: Mapping[str, Variable]
    owner: str | None = None  # the parameter a scenario file listed it under, kept for round trips

    @property
    def params(self) -> frozenset[str]:
        return frozenset(v.param for v in self.variables.values())


def parse_constraint(text: str, params: Mapping[str, Any], owner: str | None = None) -> Constraint:
    """Parse ``text`` against the space's parameters; raise SpaceError naming the problem."""
    if not isinstance(text, str) or not text.strip():
        raise SpaceError(f"constraint {text!r}: a constraint must be a non-empty string")
    quoted = quote(text)
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise SpaceError(f"constraint {quoted} does not parse: {exc.msg}") from None
    except (RecursionError, MemoryError):  # the parser's own nesting limit
        raise SpaceError(f"constraint {quoted} is nested too deeply (at most {MAX_DEPTH} levels: "
                         "split it into several constraints)") from None
    depth = _depth(tree)
    if depth > MAX_DEPTH:
        raise SpaceError(f"constraint {quoted} is nested {depth} levels deep, more than {MAX_DEPTH} "
                         "(split it into several constraints)")
    variables: dict[str, Variable] = {}
    tree = _Resolver(text, params, variables).visit(tree)
    return Constraint(text=text, tree=tree, variables=variables, owner=owner)


# Constraint text (or any input) quoted in error messages is cut to this many characters.
QUOTE_LENGTH = 80


def quote(value: Any) -> str:
    """repr of a constraint (or other input) for a message, cut to QUOTE_LENGTH characters."""
    text = repr(value)
    if len(text) <= QUOTE_LENGTH:
        return text
    return f"{text[:QUOTE_LENGTH]}... ({len(text)} characters)"


# Deepest constraint syntax tree accepted: parsing, resolving and evaluating recurse once or a few
# times per level, and Python's default recursion limit is 1000 frames.
MAX_DEPTH = 100


def _depth(tree: ast.AST) -> int:
    """Nesting depth of a syntax tree's expressions, found without recursion."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node)
                     if isinstance(child, ast.expr))
    return deepest


class _Resolver(ast.NodeTransformer):
    """Checks every node is allowed, resolves names, and turns categorical string literals into indices."""

    def __init__(self, text: str, params: Mapping[str, Any], variables: dict[str, Variable]):
        self.text, self.params, self.variables = text, params, variables

    def fail(self, why: str) -> SpaceError:
        return SpaceError(f"constraint {self.text!r}: {why}")

    def visit_Name(self, node: ast.Name) -> ast.AST:
        self.variables[node.id] = self.resolve(node.id)
        return node

    def resolve(self, name: str) -> Variable:
        param = self.params.get(name)
        if param is not None:
            if param.kind == "permutation":
                raise self.fail(f"permutation {name!r} can only be used through {name}_k "
                                f"(item at position k) or {name}_ik (position of item k)")
            return Variable(name, "value")
        match = _PERM_VAR.match(name)
        if match:
            base = self.params.get(match["base"])
            if base is not None and base.kind == "permutation":
                index = int(match["idx"])
                if index >= base.n:
                    raise self.fail(f"{name!r} refers to index {index} of permutation "
                                    f"{match['base']!r}, which has {base.n} items")
                return Variable(match["base"], "position_of" if match["inv"] else "item_at", index)
        raise self.fail(f"unknown parameter {name!r}")

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if isinstance(node.value, bool) or isinstance(node.value, (int, float)):
            return node
        raise self.fail(f"literal {node.value!r} is not a number (strings may only be compared "
                        "with a categorical parameter)")

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        # Map `categorical == "value"` (either side) to the value's index before the generic walk.
        operands = [node.left, *node.comparators]
        for i, operand in enumerate(operands):
            if isinstance(operand, ast.Constant) and isinstance(operand.value, str):
                categorical = None
                for j in (i - 1, i + 1):
                    if 0 <= j < len(operands) and isinstance(operands[j], ast.Name):
                        param = self.params.get(operands[j].id)
                        if param is not None and param.kind == "categorical":
                            categorical = param
                if categorical is None:
                    raise self.fail(f"string {operand.value!r} must be compared with a categorical "
                                    "parameter")
                try:
                    index = categorical.index_of(operand.value)
                except SpaceError:
                    raise self.fail(f"{operand.value!r} is not a value of categorical parameter "
                                    f"{categorical.name!r}") from None
                operands[i] = ast.copy_location(ast.Constant(index), operand)
        for op in node.ops:
            if type(op) not in _CMPOPS:
                raise self.fail(f"comparison {type(op).__name__} is not supported")
        node.left, node.comparators = operands[0], operands[1:]
        return self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        if type(node.op) not in _BINOPS:
            raise self.fail(f"operator {type(node.op).__name__} is not supported")
        return self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        if not isinstance(node.op, (ast.USub, ast.UAdd, ast.Not, ast.Invert)):
            raise self.fail(f"operator {type(node.op).__name__} is not supported")
        return self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        return self.generic_visit(node)

    def visit_IfExp(self, node: ast.IfExp) -> ast.AST:
        return self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise self.fail(f"unknown function {name!r} (known: {', '.join(_FUNCTIONS)})")
        if node.keywords:
            raise self.fail(f"function {node.func.id!r} takes no keyword arguments")
        wanted = {"where": 3, "min": 2, "max": 2, "minimum": 2, "maximum": 2}.get(node.func.id, 1)
        if len(node.args) != wanted:
            raise self.fail(f"function {node.func.id!r} takes {wanted} argument(s)")
        node.args = [self.visit(a) for a in node.args]
        return node

    def generic_visit(self, node: ast.AST) -> ast.AST:
        allowed = (ast.Compare, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.IfExp, ast.Call, ast.Name,
                   ast.Constant, ast.Load, ast.And, ast.Or, *_BINOPS, *_CMPOPS, ast.USub, ast.UAdd,
                   ast.Not, ast.Invert)
        if not isinstance(node, allowed):
            raise self.fail(f"{type(node).__name__} expressions are not supported")
        return super().generic_visit(node)


# ----------------------------------------------------------------------------- exact evaluation

def evaluate(constraint: Constraint, lookup: Callable[[str], Any]) -> Any:
    """Evaluate exactly; ``lookup(name)`` returns the (broadcastable) array of a variable."""
    return jnp.asarray(_exact(constraint.tree, lookup), dtype=bool)


def _exact(node: ast.expr, lookup: Callable[[str], Any]) -> Any:
    if isinstance(node, ast.Name):
        return lookup(node.id)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.BinOp):
        a, b = _exact(node.left, lookup), _exact(node.right, lookup)
        return _EXACT_BINOPS[_BINOPS[type(node.op)]](a, b)
    if isinstance(node, ast.UnaryOp):
        a = _exact(node.operand, lookup)
        if isinstance(node.op, ast.USub):
            return -jnp.asarray(a)
        if isinstance(node.op, ast.UAdd):
            return a
        a = jnp.asarray(a)
        if isinstance(node.op, ast.Not) or a.dtype == bool:
            return jnp.logical_not(a)
        return jnp.bitwise_not(a)
    if isinstance(node, ast.Compare):
        result, left = True, _exact(node.left, lookup)
        for op, right_node in zip(node.ops, node.comparators):
            right = _exact(right_node, lookup)
            result = jnp.logical_and(result, _EXACT_CMP[_CMPOPS[type(op)]](left, right))
            left = right
        return result
    if isinstance(node, ast.BoolOp):
        combine = jnp.logical_and if isinstance(node.op, ast.And) else jnp.logical_or
        result = _exact(node.values[0], lookup)
        for value in node.values[1:]:
            result = combine(result, _exact(value, lookup))
        return result
    if isinstance(node, ast.IfExp):
        return jnp.where(_exact(node.test, lookup), _exact(node.body, lookup),
                         _exact(node.orelse, lookup))
    if isinstance(node, ast.Call):
        args = [_exact(a, lookup) for a in node.args]
        return _EXACT_FUNCS[node.func.id](*args)
    raise AssertionError(f"unresolved node {ast.dump(node)}")  # the resolver rejects all others


def _true_divide(a: Any, b: Any) -> Any:
    return jnp.true_divide(jnp.asarray(a, dtype=float), b)


def _bitwise(op: Callable) -> Callable:
    def apply(a: Any, b: Any) -> Any:
        a, b = jnp.asarray(a), jnp.asarray(b)
        if a.dtype == bool and b.dtype != bool:
            a = a.astype(b.dtype)
        elif b.dtype == bool and a.dtype != bool:
            b = b.astype(a.dtype)
        return op(a, b)
    return apply


_EXACT_BINOPS = {
    "add": jnp.add, "sub": jnp.subtract, "mul": jnp.multiply, "truediv": _true_divide,
    "floordiv": jnp.floor_divide, "mod": jnp.remainder, "pow": jnp.power,
    "and_": _bitwise(jnp.bitwise_and), "or_": _bitwise(jnp.bitwise_or),
    "xor": _bitwise(jnp.bitwise_xor),
}
_EXACT_CMP = {"lt": jnp.less, "le": jnp.less_equal, "gt": jnp.greater, "ge": jnp.greater_equal,
              "eq": jnp.equal, "ne": jnp.not_equal}
_EXACT_FUNCS = {
    "abs": jnp.abs, "min": jnp.minimum, "max": jnp.maximum, "minimum": jnp.minimum,
    "maximum": jnp.maximum, "sqrt": jnp.sqrt, "log": jnp.log, "log2": jnp.log2,
    "log10": jnp.log10, "exp": jnp.exp, "floor": jnp.floor, "ceil": jnp.ceil,
    "where": jnp.where, "sin": jnp.sin, "cos": jnp.cos, "tan": jnp.tan,
}


# -------------------------------------------------------------------------- interval evaluation

@dataclass(frozen=True)
class Interval:
    """A numeric range [lo, hi] (float arrays, infinities allowed)."""

    lo: Any
    hi: Any

    @staticmethod
    def exact(value: Any) -> "Interval":
        value = jnp.asarray(value, dtype=float)
        return Interval(value, value)


@dataclass(frozen=True)
class Truth:
    """A three-valued boolean: ``surely`` true, or ``possibly`` true (not possibly = surely false)."""

    surely: Any
    possibly: Any


def evaluate_interval(constraint: Constraint, lookup: Callable[[str], Interval]) -> Truth:
    """Evaluate over ranges; ``lookup(name)`` returns an Interval for each variable."""
    return _as_truth(_interval(constraint.tree, lookup))


_UNKNOWN = Interval(-jnp.inf, jnp.inf)


def _as_interval(x: Any) -> Interval:
    if isinstance(x, Interval):
        return x
    if isinstance(x, Truth):
        return Interval(jnp.asarray(x.surely, dtype=float), jnp.asarray(x.possibly, dtype=float))
    return Interval.exact(x)


def _as_truth(x: Any) -> Truth:
    if isinstance(x, Truth):
        return x
    x = _as_interval(x)  # a number is true where non-zero
    zero_possible = (x.lo <= 0) & (x.hi >= 0)
    surely_zero = (x.lo == 0) & (x.hi == 0)
    return Truth(~zero_possible, ~surely_zero)


def _is_exact(x: Interval) -> Any:
    return x.lo == x.hi


def _corners(op: Callable, a: Interval, b: Interval) -> Interval:
    values = [op(a.lo, b.lo), op(a.lo, b.hi), op(a.hi, b.lo), op(a.hi, b.hi)]
    lo = jnp.minimum(jnp.minimum(values[0], values[1]), jnp.minimum(values[2], values[3]))
    hi = jnp.maximum(jnp.maximum(values[0], values[1]), jnp.maximum(values[2], values[3]))
    return _nan_to_unknown(Interval(lo, hi))


def _nan_to_unknown(x: Interval) -> Interval:
    bad = jnp.isnan(x.lo) | jnp.isnan(x.hi)
    return Interval(jnp.where(bad, -jnp.inf, x.lo), jnp.where(bad, jnp.inf, x.hi))


def _exact_or(x: Interval, exact: Any, fallback: Interval) -> Interval:
    return Interval(jnp.where(exact, x.lo, fallback.lo), jnp.where(exact, x.hi, fallback.hi))


def _safe_mul(a: Any, b: Any) -> Any:
    # 0 * inf is 0 for ranges: a zero bound times an unbounded one contributes 0.
    return jnp.where((a == 0) | (b == 0), 0.0, a * b)


def _i_div(a: Interval, b: Interval, floor: bool) -> Interval:
    spans_zero = (b.lo <= 0) & (b.hi >= 0)
    out = _corners(jnp.true_divide, a, b)
    if floor:
        out = Interval(jnp.floor(out.lo), jnp.floor(out.hi))
    return Interval(jnp.where(spans_zero, -jnp.inf, out.lo), jnp.where(spans_zero, jnp.inf, out.hi))


def _i_mod(a: Interval, b: Interval) -> Interval:
    both_exact = _is_exact(a) & _is_exact(b)
    value = jnp.remainder(a.lo, jnp.where(b.lo == 0, 1.0, b.lo))
    exact = Interval(value, value)
    positive = b.lo > 0
    # 0 <= a % b < b for b > 0; and a % b == a when 0 <= a < b.
    small = positive & (a.lo >= 0) & (a.hi < b.lo)
    lo = jnp.where(small, a.lo, jnp.where(positive, 0.0, -jnp.inf))
    hi = jnp.where(small, a.hi, jnp.where(positive, b.hi, jnp.inf))
    return _exact_or(exact, both_exact & (b.lo != 0), Interval(lo, hi))


def _i_pow(a: Interval, b: Interval) -> Interval:
    exact = _is_exact(a) & _is_exact(b)
    value = jnp.power(a.lo, b.lo)
    # A positive base makes x**y monotone in each argument, so the corners bound it; a
    # non-negative base with a fixed non-negative exponent makes it increasing in x.
    corners = _corners(jnp.power, a, b)
    fixed_exponent = (a.lo >= 0) & _is_exact(b) & (b.lo >= 0)
    lo = jnp.where(exact, value, jnp.where(a.lo > 0, corners.lo,
                                           jnp.where(fixed_exponent, jnp.power(a.lo, b.lo), -jnp.inf)))
    hi = jnp.where(exact, value, jnp.where(a.lo > 0, corners.hi,
                                           jnp.where(fixed_exponent, jnp.power(a.hi, b.lo), jnp.inf)))
    return _nan_to_unknown(Interval(lo, hi))


def _interval_binop(name: str, a: Any, b: Any) -> Any:
    if name in ("and_", "or_") and isinstance(a, Truth) and isinstance(b, Truth):
        if name == "and_":
            return Truth(a.surely & b.surely, a.possibly & b.possibly)
        return Truth(a.surely | b.surely, a.possibly | b.possibly)
    a, b = _as_interval(a), _as_interval(b)
    if name == "add":
        return _nan_to_unknown(Interval(a.lo + b.lo, a.hi + b.hi))
    if name == "sub":
        return _nan_to_unknown(Interval(a.lo - b.hi, a.hi - b.lo))
    if name == "mul":
        return _corners(_safe_mul, a, b)
    if name in ("truediv", "floordiv"):
        return _i_div(a, b, floor=name == "floordiv")
    if name == "mod":
        return _i_mod(a, b)
    if name == "pow":
        return _i_pow(a, b)
    # Bitwise operators on numbers: exact when both operands are, otherwise unknown.
    op = _EXACT_BINOPS[name]
    exact = _is_exact(a) & _is_exact(b)
    value = op(jnp.asarray(a.lo, dtype=jnp.int64), jnp.asarray(b.lo, dtype=jnp.int64)).astype(float)
    return _exact_or(Interval(value, value), exact, _UNKNOWN)


def _interval_compare(name: str, a: Any, b: Any) -> Truth:
    a, b = _as_interval(a), _as_interval(b)
    if name == "lt":
        return Truth(a.hi < b.lo, a.lo < b.hi)
    if name == "le":
        return Truth(a.hi <= b.lo, a.lo <= b.hi)
    if name == "gt":
        return Truth(a.lo > b.hi, a.hi > b.lo)
    if name == "ge":
        return Truth(a.lo >= b.hi, a.hi >= b.lo)
    equal = _is_exact(a) & _is_exact(b) & (a.lo == b.lo)
    overlap = (a.lo <= b.hi) & (b.lo <= a.hi)
    if name == "eq":
        return Truth(equal, overlap)
    return Truth(~overlap, ~equal)


def _monotone(f: Callable) -> Callable:
    def apply(x: Interval) -> Interval:
        return _nan_to_unknown(Interval(f(x.lo), f(x.hi)))
    return apply


def _i_abs(x: Interval) -> Interval:
    lo = jnp.where(x.lo >= 0, x.lo, jnp.where(x.hi <= 0, -x.hi, 0.0))
    hi = jnp.maximum(jnp.abs(x.lo), jnp.abs(x.hi))
    return Interval(lo, hi)


def _i_bounded(f: Callable, lo: float, hi: float) -> Callable:
    def apply(x: Interval) -> Interval:
        value = f(x.lo)
        return _exact_or(Interval(value, value), _is_exact(x), Interval(jnp.asarray(lo), jnp.asarray(hi)))
    return apply


def _i_tan(x: Interval) -> Interval:
    value = jnp.tan(x.lo)
    return _exact_or(Interval(value, value), _is_exact(x), _UNKNOWN)


def _i_min(a: Any, b: Any) -> Interval:
    a, b = _as_interval(a), _as_interval(b)
    return Interval(jnp.minimum(a.lo, b.lo), jnp.minimum(a.hi, b.hi))


def _i_max(a: Any, b: Any) -> Interval:
    a, b = _as_interval(a), _as_interval(b)
    return Interval(jnp.maximum(a.lo, b.lo), jnp.maximum(a.hi, b.hi))


def _hull(cond: Truth, a: Any, b: Any) -> Any:
    if isinstance(a, Truth) and isinstance(b, Truth):
        surely = jnp.where(cond.surely, a.surely, jnp.where(~cond.possibly, b.surely, a.surely & b.surely))
        possibly = jnp.where(cond.surely, a.possibly,
                             jnp.where(~cond.possibly, b.possibly, a.possibly | b.possibly))
        return Truth(surely, possibly)
    a, b = _as_interval(a), _as_interval(b)
    lo = jnp.where(cond.surely, a.lo, jnp.where(~cond.possibly, b.lo, jnp.minimum(a.lo, b.lo)))
    hi = jnp.where(cond.surely, a.hi, jnp.where(~cond.possibly, b.hi, jnp.maximum(a.hi, b.hi)))
    return Interval(lo, hi)


_INTERVAL_FUNCS = {
    "abs": _i_abs, "sqrt": _monotone(jnp.sqrt), "log": _monotone(jnp.log),
    "log2": _monotone(jnp.log2), "log10": _monotone(jnp.log10), "exp": _monotone(jnp.exp),
    "floor": _monotone(jnp.floor), "ceil": _monotone(jnp.ceil),
    "sin": _i_bounded(jnp.sin, -1.0, 1.0), "cos": _i_bounded(jnp.cos, -1.0, 1.0), "tan": _i_tan,
}


def _interval(node: ast.expr, lookup: Callable[[str], Interval]) -> Any:
    if isinstance(node, ast.Name):
        return lookup(node.id)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool):
            return Truth(jnp.asarray(node.value), jnp.asarray(node.value))
        return Interval.exact(node.value)
    if isinstance(node, ast.BinOp):
        return _interval_binop(_BINOPS[type(node.op)], _interval(node.left, lookup),
                               _interval(node.right, lookup))
    if isinstance(node, ast.UnaryOp):
        a = _interval(node.operand, lookup)
        if isinstance(node.op, ast.USub):
            a = _as_interval(a)
            return Interval(-a.hi, -a.lo)
        if isinstance(node.op, ast.UAdd):
            return a
        if isinstance(node.op, ast.Not) or isinstance(a, Truth):
            t = _as_truth(a)
            return Truth(~t.possibly, ~t.surely)
        a = _as_interval(a)  # bitwise not of an integer: -x - 1
        return Interval(-a.hi - 1, -a.lo - 1)
    if isinstance(node, ast.Compare):
        surely, possibly = jnp.asarray(True), jnp.asarray(True)
        left = _interval(node.left, lookup)
        for op, right_node in zip(node.ops, node.comparators):
            right = _interval(right_node, lookup)
            t = _interval_compare(_CMPOPS[type(op)], left, right)
            surely, possibly = surely & t.surely, possibly & t.possibly
            left = right
        return Truth(surely, possibly)
    if isinstance(node, ast.BoolOp):
        truths = [_as_truth(_interval(v, lookup)) for v in node.values]
        surely, possibly = truths[0].surely, truths[0].possibly
        for t in truths[1:]:
            if isinstance(node.op, ast.And):
                surely, possibly = surely & t.surely, possibly & t.possibly
            else:
                surely, possibly = surely | t.surely, possibly | t.possibly
        return Truth(surely, possibly)
    if isinstance(node, ast.IfExp):
        return _hull(_as_truth(_interval(node.test, lookup)), _interval(node.body, lookup),
                     _interval(node.orelse, lookup))
    if isinstance(node, ast.Call):
        name = node.func.id
        args = [_interval(a, lookup) for a in node.args]
        if name == "where":
            return _hull(_as_truth(args[0]), args[1], args[2])
        if name in ("min", "minimum"):
            return _i_min(*args)
        if name in ("max", "maximum"):
            return _i_max(*args)
        return _INTERVAL_FUNCS[name](_as_interval(args[0]))
    raise AssertionError(f"unresolved node {ast.dump(node)}")
