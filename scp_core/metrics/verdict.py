"""Numbers with 95 % intervals turned into sentences, by one rule.

The project's rule: settings measured on the same maps with the same seeds are paired, so one setting is
**better** or **worse** than another only where the 95 % interval of their **difference** excludes 0
(:mod:`scp_core.metrics.resampling`: the maps and the reference images resampled together); where it
includes 0 they are **not distinguishable** at the number of maps measured. A claim that one setting is
*no worse* than another needs a margin fixed before the run (:func:`non_inferiority`). Every verdict the
notebooks, index.md and the README print comes from this module, and each sentence names the interval it
used, so no sentence can say more than its numbers.
"""
from __future__ import annotations

from typing import Sequence

__all__ = ["relation_of_difference", "interval_text", "compare", "non_inferiority", "best_set", "best_text",
           "BETTER", "WORSE", "TIED", "PAIRED"]

BETTER, WORSE, TIED = "better", "worse", "not distinguishable"
PAIRED = "paired resampling of maps and reference images"


def _check(ci) -> tuple[float, float]:
    lo, hi = (float(v) for v in ci)
    if not lo <= hi:
        raise ValueError(f"an interval must be (low, high) with low <= high, got {ci!r}")
    return lo, hi


def relation_of_difference(diff_ci, lower_is_better: bool = True) -> str:
    """How ``a`` stands against ``b`` from the 95 % interval of ``a - b``: ``"better"`` / ``"worse"`` where it
    excludes 0 (an end exactly at 0 does not), else ``"not distinguishable"``."""
    lo, hi = _check(diff_ci)
    if hi < 0:
        return BETTER if lower_is_better else WORSE
    if lo > 0:
        return WORSE if lower_is_better else BETTER
    return TIED


def interval_text(ci, digits: int = 3) -> str:
    """``[lo, hi]`` with ``digits`` decimals."""
    lo, hi = _check(ci)
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def compare(a: str, value_a: float, ci_a, b: str, value_b: float, ci_b, *, diff_ci, n: int,
            lower_is_better: bool = True, digits: int = 3, scheme: str = PAIRED) -> str:
    """One sentence: ``a`` against ``b`` with both numbers and intervals, the difference's interval and ``n``;
    ``scheme`` names how the interval was resampled (default: maps with their reference images).

    ``compare("joint", 0.071, (0.065, 0.081), "normal", 0.212, (0.192, 0.233), diff_ci=(-0.16, -0.12), n=300)``
    gives "joint 0.071 [0.065, 0.081] is better than normal 0.212 [0.192, 0.233] (difference -0.141, 95 %
    interval [-0.160, -0.120], excludes 0; paired resampling of maps and reference images, n = 300)".
    """
    r = relation_of_difference(diff_ci, lower_is_better)
    left = f"{a} {value_a:.{digits}f} {interval_text(ci_a, digits)}"
    right = f"{b} {value_b:.{digits}f} {interval_text(ci_b, digits)}"
    why = (f"difference {value_a - value_b:+.{digits}f}, 95 % interval {interval_text(diff_ci, digits)}, "
           f"{'includes' if r == TIED else 'excludes'} 0; {scheme}, n = {n}")
    if r == TIED:
        return f"{left} is not distinguishable from {right} ({why})"
    return f"{left} is {r} than {right} ({why})"


def non_inferiority(a: str, b: str, diff: float, diff_ci, *, margin: float, n: int, metric: str,
                    lower_is_better: bool = True, digits: int = 3) -> tuple[bool, str]:
    """Is ``a`` no worse than ``b`` by more than ``margin`` (fixed before the run)? Yes only where the whole
    95 % interval of ``a - b`` lies on the good side of ``margin`` (below ``+margin`` for a distance, above
    ``-margin`` for a score). Returns ``(met, sentence)``."""
    if margin <= 0:
        raise ValueError(f"a non-inferiority margin must be positive, got {margin}")
    lo, hi = _check(diff_ci)
    met = hi < margin if lower_is_better else lo > -margin
    side = f"below +{margin:g}" if lower_is_better else f"above -{margin:g}"
    return met, (f"{metric}: {a} minus {b} = {diff:+.{digits}f}, 95 % interval {interval_text(diff_ci, digits)} "
                 f"({PAIRED}, n = {n}); the margin fixed before the run asks it to lie wholly {side}: "
                 + ("met" if met else "not met"))


def best_set(values: Sequence[float], diff_cis_to: Sequence, lower_is_better: bool = True) -> tuple[int, list[int]]:
    """The index of the best value and the indices not distinguishable from it (itself included).

    ``diff_cis_to(best)`` gives, for each entry ``i``, the 95 % interval of ``value_i - value_best`` from the
    paired draws (a sequence of such lists, one per possible best, or a callable). "Best" is the point
    estimate; the set says how much that choice is worth.
    """
    if not len(values):
        raise ValueError("need at least one value")
    pick = min if lower_is_better else max
    best = pick(range(len(values)), key=lambda i: float(values[i]))
    cis = diff_cis_to(best) if callable(diff_cis_to) else diff_cis_to[best]
    if len(cis) != len(values):
        raise ValueError(f"need as many difference intervals as values, got {len(cis)} and {len(values)}")
    ties = [i for i in range(len(values)) if i == best or relation_of_difference(cis[i], lower_is_better) == TIED]
    return best, ties


def best_text(names: Sequence[str], values: Sequence[float], cis: Sequence, diff_cis_to, *, n: int, metric: str,
              lower_is_better: bool = True, digits: int = 3) -> str:
    """"lowest FD-toy: mu = 0.8 (0.095 [0.083, 0.116]); not distinguishable from it (...): mu = 0.7"."""
    best, ties = best_set(values, diff_cis_to, lower_is_better)
    others = [names[i] for i in ties if i != best]
    head = (f"{'lowest' if lower_is_better else 'highest'} {metric}: {names[best]} "
            f"({float(values[best]):.{digits}f} {interval_text(cis[best], digits)})")
    if not others:
        return head + (f"; every other entry differs from it (95 % intervals of the differences exclude 0; {PAIRED}, "
                       f"n = {n})")
    return head + (f"; not distinguishable from it (95 % interval of the difference includes 0; {PAIRED}, "
                   f"n = {n}): ") + ", ".join(others)
