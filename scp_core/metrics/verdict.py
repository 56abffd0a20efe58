"""Numbers with 95 % intervals turned into sentences, by one rule.

The project's rule: one result is **better** or **worse** than another only where their 95 %
intervals are disjoint; overlapping intervals are **not distinguishable** at the number of maps
measured (more maps might separate them, fewer never will). Every verdict the notebooks, index.md
and the README print comes from :func:`relation`, :func:`compare` or :func:`best_set`, so no
sentence can say more than its intervals.
"""
from __future__ import annotations

from typing import Sequence

__all__ = ["relation", "interval_text", "compare", "best_set", "best_text"]

BETTER, WORSE, TIED = "better", "worse", "not distinguishable"


def _check(ci) -> tuple[float, float]:
    lo, hi = (float(v) for v in ci)
    if not lo <= hi:
        raise ValueError(f"an interval must be (low, high) with low <= high, got {ci!r}")
    return lo, hi


def relation(ci_a, ci_b, lower_is_better: bool = True) -> str:
    """``"better"``, ``"worse"`` or ``"not distinguishable"``: how ``a`` stands against ``b``.

    ``better`` only where the intervals are disjoint on the good side (for a distance, ``a``'s upper
    end below ``b``'s lower end); touching intervals (equal ends) are not distinguishable.
    """
    (a_lo, a_hi), (b_lo, b_hi) = _check(ci_a), _check(ci_b)
    if a_hi < b_lo:
        return BETTER if lower_is_better else WORSE
    if a_lo > b_hi:
        return WORSE if lower_is_better else BETTER
    return TIED


def interval_text(ci, digits: int = 3) -> str:
    """``[lo, hi]`` with ``digits`` decimals."""
    lo, hi = _check(ci)
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def compare(a: str, value_a: float, ci_a, b: str, value_b: float, ci_b, *, n: int,
            lower_is_better: bool = True, digits: int = 3) -> str:
    """One sentence: ``a`` against ``b`` with both numbers, both intervals and ``n``.

    >>> compare("joint", 0.071, (0.065, 0.081), "normal", 0.212, (0.192, 0.233), n=300)
    'joint 0.071 [0.065, 0.081] is better than normal 0.212 [0.192, 0.233] (disjoint 95 % intervals, n = 300)'
    """
    r = relation(ci_a, ci_b, lower_is_better)
    left = f"{a} {value_a:.{digits}f} {interval_text(ci_a, digits)}"
    right = f"{b} {value_b:.{digits}f} {interval_text(ci_b, digits)}"
    if r == TIED:
        return f"{left} is not distinguishable from {right} (95 % intervals overlap at n = {n})"
    return f"{left} is {r} than {right} (disjoint 95 % intervals, n = {n})"


def best_set(values: Sequence[float], cis: Sequence, lower_is_better: bool = True) -> tuple[int, list[int]]:
    """The index of the best value and the indices not distinguishable from it (itself included).

    "Best" is the point estimate; the set says how much that choice is worth: every entry whose
    interval overlaps the best one's could be the best at more maps.
    """
    if not len(values) or len(values) != len(cis):
        raise ValueError(f"need as many intervals as values, at least one; got {len(values)} and {len(cis)}")
    pick = min if lower_is_better else max
    best = pick(range(len(values)), key=lambda i: float(values[i]))
    ties = [i for i in range(len(values)) if relation(cis[i], cis[best], lower_is_better) == TIED]
    return best, ties


def best_text(names: Sequence[str], values: Sequence[float], cis: Sequence, *, n: int, metric: str,
              lower_is_better: bool = True, digits: int = 3) -> str:
    """"lowest FD-toy: mu = 0.8 (0.095 [0.083, 0.116]); not distinguishable from it at n = 120: mu = 0.7, 0.9"."""
    best, ties = best_set(values, cis, lower_is_better)
    others = [names[i] for i in ties if i != best]
    head = (f"{'lowest' if lower_is_better else 'highest'} {metric}: {names[best]} "
            f"({float(values[best]):.{digits}f} {interval_text(cis[best], digits)})")
    if not others:
        return head + f"; every other entry is distinguishable from it (disjoint 95 % intervals, n = {n})"
    return head + f"; not distinguishable from it at n = {n}: " + ", ".join(others)
