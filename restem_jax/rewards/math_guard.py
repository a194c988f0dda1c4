"""Sizing a math answer before sympy evaluates it, and comparing structurally.

sympy evaluates whatever it is handed, and math-verify hands it answers such
as 2^{3^{4^{5}}}, (10^{100})! or (x+y+z+w)^{200}, whose evaluation, expansion
or the primality tests simplify runs on their integers take minutes and
gigabytes, much of it in C that math-verify's alarm cannot interrupt.
`examine` walks the parsed, unevaluated tree once and bounds, at every node,
the digits of the numbers its evaluation produces and the monomials of its
expansion; an answer over the bounds is refused: math-verify never compares
it.

The same walk builds a canonical form in which the subtrees cheap enough to
evaluate are evaluated and the rest kept as structure, so that 2^{10^{5}} and
2^{100000} compare equal without either being evaluated.

latex2sympy itself evaluates some constructs while parsing; `examine_latex`
sizes answers that use them from an unevaluated parse first.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import sympy

# When it compares larger numbers, sympy's simplify runs primality tests and
# root extraction in C, out of reach of any alarm (bench_rewards.py --costs);
# exact numbers this large still compare, through their canonical forms.
MAX_DIGITS = 300
# simplify expands polynomials monomial by monomial; this many stay well within
# a step's time limit.
MAX_TERMS = 200
# Digits the canonical form may evaluate per answer: powers, factorials and
# binomials this large are quick to compute exactly, so large equal numbers
# written differently still compare equal.
EVAL_DIGITS = 10_000
# sympy factors the radicand of a root, at a cost that grows steeply with it.
ROOT_DIGITS = 100

_LOG10_MAX_TERMS = math.log10(MAX_TERMS)
_LOG10_2 = math.log10(2)
_LN10 = math.log(10)
# Nodes sympy evaluates on construction, at a cost bounded by their size.
_EVALUATED = (sympy.Add, sympy.Mul, sympy.Pow, sympy.factorial,
              sympy.factorial2, sympy.binomial, sympy.gamma)
_FACTORIALS = (sympy.factorial, sympy.factorial2, sympy.gamma)

# latex2sympy evaluates binomials, Gamma and n-th roots on construction, gcd and
# lcm through nsimplify, bars (x|_{x=a}) through subs, and builds matrices of
# the sizes it reads; answers using them are sized from a parse that evaluates
# nothing.
_PARSE_TIME = re.compile(
    r"binom|choose|Gamma|gamma|gcd|lcm|\|\s*_|zeros|ones|eye|sqrt\s*\[")
# gcd and lcm ignore evaluate(False); max keeps their arguments, whose sizes
# are what matters.
_GCD_LCM = re.compile(r"\\operatorname\{\s*(?:gcd|lcm)\s*\}|\\(?:gcd|lcm)\b")
_MATRIX = re.compile(r"\\operatorname\{\s*(?:zeros|ones|eye)\s*\}")
_SMALL_SHAPE = re.compile(r"\s*\(\s*\d{1,2}\s*(?:,\s*\d{1,2}\s*)?\)")


@dataclasses.dataclass(frozen=True)
class Examined:
  """An answer's canonical form, and why it is refused (None if it is not)."""
  canonical: Any
  refusal: str | None


@dataclasses.dataclass(frozen=True)
class _Size:
  digits: float  # log10 of the largest integer evaluating the node produces
  terms: float  # log10 of the number of monomials of its expansion
  degree: float  # its polynomial degree
  frozen: bool = False  # it, or a node below it, stays unevaluated
  root: bool = False  # it contains a root of a number (sympy factors those)


def examine(expr: Any) -> Examined:
  """Sizes a parsed answer without evaluating it; see the module docstring."""
  walker = _Walker()
  try:
    canonical, _ = walker.visit(expr)
  except RecursionError:  # deeper than sympy's own recursion goes either
    return Examined(None, "an expression nested too deep to size")
  return Examined(canonical, walker.refusal())


def examine_latex(latex: str) -> Examined | None:
  """`examine` of an answer latex2sympy would evaluate while parsing, else None.

  None also when the unevaluated parse fails: math-verify's own parse then
  decides.
  """
  if not _PARSE_TIME.search(latex):
    return None
  for match in _MATRIX.finditer(latex):
    if not _SMALL_SHAPE.match(latex, match.end()):
      return Examined(None, "a matrix of a shape other than small numbers")
  from latex2sympy2_extended import latex2sympy  # heavy, like math_verify
  from math_verify.parser import LatexExtractionConfig
  text = _GCD_LCM.sub(r"\\max", latex).strip().strip("$")
  try:
    with sympy.evaluate(False):
      tree = latex2sympy(text, normalization_config=(
          LatexExtractionConfig().normalization_config))
  except Exception:  # latex2sympy raises bare Exceptions on syntax
    return None
  return examine(tree)


class _Walker:
  """One bottom-up pass: sizes, refusal and canonical form."""

  def __init__(self):
    self.budget = float(EVAL_DIGITS)
    self.max_digits = 0.0
    self.max_terms = 0.0
    self.bound: dict[sympy.Symbol, float] = {}  # digits of summation indices

  def refusal(self) -> str | None:
    if self.max_digits > MAX_DIGITS:
      return f"a number of {_approx(math.log10(self.max_digits))} digits"
    if self.max_terms > _LOG10_MAX_TERMS:
      return f"an expansion of {_approx(self.max_terms)} terms"
    return None

  def visit(self, expr: Any) -> tuple[Any, _Size]:
    if isinstance(expr, sympy.MatrixBase) and not isinstance(expr, sympy.Basic):
      return self._matrix(expr)
    if not isinstance(expr, sympy.Basic):
      return expr, _Size(0.0, 0.0, 0.0)
    if isinstance(expr, (sympy.Sum, sympy.Product)):
      return self._note(*self._series(expr))
    if not expr.args:
      return self._note(expr, self._atom(expr))
    children = [self.visit(arg) for arg in expr.args]
    args = [arg for arg, _ in children]
    sizes = [size for _, size in children]
    size = self._clamp(expr, self._size(expr, args, sizes))
    return self._note(*self._rebuild(expr, args, size))

  def _note(self, expr: Any, size: _Size) -> tuple[Any, _Size]:
    self.max_digits = max(self.max_digits, size.digits)
    self.max_terms = max(self.max_terms, size.terms)
    return expr, size

  def _atom(self, expr: sympy.Basic) -> _Size:
    if expr.is_Integer:
      return _Size(_log10_abs(expr.p), 0.0, 0.0)
    if expr.is_Rational:
      return _Size(max(_log10_abs(expr.p), _log10_abs(expr.q)), 0.0, 0.0)
    if expr.is_Float:
      _, mantissa, exponent, bits = expr._mpf_  # pylint: disable=protected-access
      return _Size(abs(exponent + bits) * _LOG10_2 if mantissa else 0.0, 0.0, 0.0)
    if expr.is_Symbol:
      return _Size(self.bound.get(expr, 0.0), 0.0, 1.0)
    return _Size(1.0, 0.0, 0.0)  # pi, E, I, oo: small, but not 1 under powers

  def _size(self, expr: sympy.Basic, args: list, sizes: list[_Size]) -> _Size:
    frozen = any(s.frozen for s in sizes)
    root = any(s.root for s in sizes)
    if isinstance(expr, sympy.Add):
      return _Size(max(s.digits for s in sizes) + math.log10(len(sizes)),
                   _log10_sum(s.terms for s in sizes),
                   max(s.degree for s in sizes), frozen, root)
    if isinstance(expr, sympy.Mul):
      return _Size(sum(s.digits for s in sizes), sum(s.terms for s in sizes),
                   sum(s.degree for s in sizes), frozen, root)
    if isinstance(expr, sympy.Pow):
      return self._pow(args, sizes, frozen, root)
    if isinstance(expr, _FACTORIALS):
      n = _magnitude(args[0], sizes[0])
      return _Size(_log10_factorial(n), 0.0, sizes[0].degree, frozen, root)
    if isinstance(expr, sympy.binomial):
      return _Size(_binomial_digits(args, sizes), 0.0,
                   max(s.degree for s in sizes), frozen, root)
    return _Size(max(s.digits for s in sizes), _log10_sum(s.terms for s in sizes),
                 max(s.degree for s in sizes), frozen, root)

  def _pow(self, args: list, sizes: list[_Size], frozen: bool,
           root: bool) -> _Size:
    (base, exp), (sb, se) = args, sizes
    times = max(_magnitude(exp, se), 1.0)
    digits = _times(sb.digits, times)
    terms = sb.terms
    if sb.terms and not exp.free_symbols:  # an expansion: C(n + t - 1, t - 1)
      t = _exp10(sb.terms)
      terms = _log10_comb(times + t - 1, t - 1)
    is_root = base.is_Number and exp.is_Rational and not exp.is_Integer
    return _Size(digits, terms, _times(sb.degree, times), frozen,
                 root or is_root)

  def _clamp(self, expr: sympy.Basic, size: _Size) -> _Size:
    # Products of sums over-count the monomials of an expansion in few
    # variables: (x+1)(x+2)...(x+9) has 10, not 2^9.
    if size.terms <= _LOG10_MAX_TERMS:
      return size
    n_vars = len(expr.free_symbols)
    terms = min(size.terms, _log10_comb(size.degree + n_vars, n_vars))
    return dataclasses.replace(size, terms=terms)

  def _series(self, expr: sympy.Basic) -> tuple[Any, _Size]:
    # Never evaluated (summation is not bounded by size); the index is bound
    # to its range, so the terms are sized at its largest value.
    saved = dict(self.bound)
    limits, log_count = [], 0.0
    for var, *ends in expr.limits:
      visited = [self.visit(end) for end in ends]
      self.bound[var] = max((s.digits for _, s in visited), default=0.0)
      log_count += _log10_count([end for end, _ in visited],
                                [s for _, s in visited])
      limits.append((var, *(end for end, _ in visited)))
    body, sb = self.visit(expr.function)
    self.bound = saved
    count = _exp10(log_count)
    if isinstance(expr, sympy.Sum):
      size = _Size(sb.digits + log_count, sb.terms + log_count, sb.degree, True)
    else:
      size = _Size(_times(sb.digits, count), _times(sb.terms, count),
                   _times(sb.degree, count), True)
    with sympy.evaluate(False):
      return expr.func(body, *limits), size

  def _matrix(self, matrix: sympy.MatrixBase) -> tuple[Any, _Size]:
    cells = [self.visit(cell) for cell in matrix]
    sizes = [size for _, size in cells] or [_Size(0.0, 0.0, 0.0)]
    # Frozen: matrices are compared cell by cell, never evaluated as a whole.
    size = _Size(max(s.digits for s in sizes), _log10_sum(s.terms for s in sizes),
                 max(s.degree for s in sizes), True)
    return sympy.ImmutableMatrix(matrix.rows, matrix.cols,
                                 [cell for cell, _ in cells]), size

  def _rebuild(self, expr: sympy.Basic, args: list,
               size: _Size) -> tuple[Any, _Size]:
    if isinstance(expr, _EVALUATED) and not size.frozen:
      limit = ROOT_DIGITS if size.root else self.budget
      if size.digits <= limit:
        self.budget -= size.digits
        try:
          return expr.func(*args), size
        except Exception:  # sympy refuses some rebuilt argument lists
          pass
      size = dataclasses.replace(size, frozen=True)
    if all(new is old for new, old in zip(args, expr.args)):
      return expr, size
    try:
      with sympy.evaluate(False):
        return expr.func(*args), size
    except Exception:
      return expr, size


def _log10_abs(n: int) -> float:
  return math.log10(abs(n)) if abs(n) > 1 else 0.0


def _times(a: float, b: float) -> float:
  """a * b, where a zero size stays zero under an unbounded factor."""
  return a * b if a else 0.0


def _exp10(x: float) -> float:
  return math.inf if x > 300 else 10.0 ** x


def _approx(log10: float) -> str:
  return f"~{10 ** log10:.3g}" if log10 <= 300 else "over 1e300"


def _magnitude(expr: Any, size: _Size) -> float:
  """An upper bound of |expr|."""
  if isinstance(expr, sympy.Basic) and expr.is_Number and size.digits <= 300:
    return float(abs(expr))
  return _exp10(size.digits)


def _log10_sum(logs) -> float:
  logs = list(logs)
  return max(logs) + math.log10(len(logs)) if logs else 0.0


def _log10_factorial(n: float) -> float:
  return math.lgamma(n + 1) / _LN10 if n < math.inf else math.inf


def _log10_comb(n: float, k: float) -> float:
  if n == math.inf or k == math.inf:
    return math.inf
  k = min(k, n - k)
  if k <= 0:
    return 0.0
  return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / _LN10


def _binomial_digits(args: list, sizes: list[_Size]) -> float:
  (n, k), (sn, sk) = args, sizes
  if n.is_Integer and k.is_Integer and n >= 0:
    # sympy multiplies the smaller of k and n - k factors.
    smaller = min(k, n - k) if 0 <= k <= n else sympy.Integer(0)
    m = _magnitude(smaller, _Size(_log10_abs(smaller.p), 0.0, 0.0))
  else:
    m = _magnitude(k, sk)
  return _times(m, max(sn.digits, 1.0))


def _log10_count(ends: list, sizes: list[_Size]) -> float:
  if len(ends) == 2 and all(end.is_Integer for end in ends):
    return _log10_abs(max(int(ends[1]) - int(ends[0]) + 1, 0))
  return max((s.digits for s in sizes), default=0.0) + _LOG10_2
