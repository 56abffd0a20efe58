"""Numbers with 95 % intervals turned into sentences, by one rule.

The project's rule: settings measured on the same maps with the same seeds are paired, so one setting is
**better** or **worse** than another only where the 95 % interval of their **difference** excludes 0
(:mod:`scp_core.metrics.resampling`: the maps and the reference images resampled together); where it
includes 0 they are **not distinguishable** at the number of maps measured. A claim that one setting is
*no worse* than another needs a margin fixed before the run (:func:`non_inferiority`); with a smallest effect of
interest (a margin), two settings can also be **equivalent within the margin** (:func:`relation_with_margin`: two
one-sided tests). Every verdict the notebooks, index.md and the README print comes from this module, and each
sentence names the interval it used, so no sentence can say more than its numbers.

Two degenerate cases are never a verdict. Two arms that are **the same start** (the same start
distribution and seeds: the caller's ``same=True``, or a paired difference that is exactly 0 on every resample, an
interval ``[0, 0]``) are reported as "the same start: not a test". An interval of width 0 elsewhere (one
difference on every resample) is "a constant difference: not a test". And a difference's interval is printed with
as many decimals as it takes to show its width and, where it excludes 0, ends that are not 0, so no sentence says
"excludes 0" about an interval that reads ``[0.0, 0.0]`` or ``[-1.0, -0.0]`` (:func:`degenerate_claims` finds any
that do).
"""
from __future__ import annotations

import re
from typing import Sequence

__all__ = ["relation_of_difference", "relation_with_margin", "interval_text", "difference_format", "compare",
           "non_inferiority", "best_set", "best_text", "degenerate_claims", "BETTER", "WORSE", "TIED", "EQUIVALENT",
           "SAME", "CONSTANT", "NOT_A_TEST", "PAIRED"]

BETTER, WORSE, TIED = "better", "worse", "not distinguishable"
EQUIVALENT = "equivalent within the margin"
SAME, CONSTANT = "the same start: not a test", "a constant difference: not a test"
NOT_A_TEST = (SAME, CONSTANT)
PAIRED = "paired resampling of maps and reference images"
MAX_DIGITS = 12


def _check(ci) -> tuple[float, float]:
    lo, hi = (float(v) for v in ci)
    if not lo <= hi:
        raise ValueError(f"an interval must be (low, high) with low <= high, got {ci!r}")
    return lo, hi


def relation_of_difference(diff_ci, lower_is_better: bool = True, same: bool = False) -> str:
    """How ``a`` stands against ``b`` from the 95 % interval of ``a - b``: ``"better"`` / ``"worse"`` where it
    excludes 0 (an end exactly at 0 does not), else ``"not distinguishable"``.

    Never a verdict: :data:`SAME` where the caller says the arms are the same start (``same``: the same start
    distribution and seeds, whatever rounding left in the images) or the interval is ``[0, 0]`` (the difference is
    0 on every resample); :data:`CONSTANT` for any other interval of width 0."""
    lo, hi = _check(diff_ci)
    if same or lo == hi == 0:
        return SAME
    if lo == hi:
        return CONSTANT
    if hi < 0:
        return BETTER if lower_is_better else WORSE
    if lo > 0:
        return WORSE if lower_is_better else BETTER
    return TIED


def relation_with_margin(diff_ci, margin: float, *, diff_ci90=None, lower_is_better: bool = True,
                         same: bool = False) -> str:
    """How ``a`` stands against ``b`` given a smallest effect of interest ``margin`` (fixed before the run).

    :data:`EQUIVALENT` where the 90 % interval of ``a - b`` (``diff_ci90``; two one-sided tests at 5 % each) lies
    strictly inside ``[-margin, margin]``, whether or not the 95 % interval ``diff_ci`` excludes 0 (a difference
    smaller than the margin is of no interest); without ``diff_ci90`` the 95 % interval stands in for it (stricter).
    Otherwise :func:`relation_of_difference` on ``diff_ci``: better, worse or not distinguishable (then neither a
    difference nor an equivalence is shown), or not a test (:data:`SAME`, :data:`CONSTANT`)."""
    if not margin > 0:
        raise ValueError(f"a margin must be positive, got {margin}")
    base = relation_of_difference(diff_ci, lower_is_better, same)
    if base in NOT_A_TEST:
        return base
    lo, hi = _check(diff_ci if diff_ci90 is None else diff_ci90)
    return EQUIVALENT if -margin < lo and hi < margin else base


def difference_format(ci, digits: int) -> str:
    """The format of a difference and its interval ``ci``: ``".{d}f"`` with the fewest decimals ``d >= digits``
    (up to :data:`MAX_DIGITS`) that print ``ci`` with a visible width and, where it excludes 0, with no end that
    reads as 0 (``[0.0001, 0.0066]``, not ``[0.0, 0.0]``); scientific notation (``".{k}e"``) where none does."""
    lo, hi = _check(ci)

    def shows(spec: str) -> bool:
        a, b = float(format(lo, spec)), float(format(hi, spec))
        return (a != b or lo == hi) and (not (lo > 0 or hi < 0) or (a != 0 and b != 0))
    specs = [f".{d}f" for d in range(max(int(digits), 0), MAX_DIGITS + 1)] + [f".{k}e" for k in range(1, 17)]
    return next((spec for spec in specs if shows(spec)), ".16e")


def interval_text(ci, digits: int | str = 3) -> str:
    """``[lo, hi]`` with ``digits`` decimals (or in the format ``digits`` names, e.g. ``".3e"``)."""
    lo, hi = _check(ci)
    spec = digits if isinstance(digits, str) else f".{digits}f"
    return f"[{lo:{spec}}, {hi:{spec}}]"


_NUMBER = r"(-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)"
_CLAIM = re.compile(rf"\[{_NUMBER}, {_NUMBER}\], excludes 0")


def degenerate_claims(text: str) -> list[str]:
    """The intervals in ``text`` said to exclude 0 that read with width 0 or with an end at 0 (``[0.0, 0.0],
    excludes 0``, ``[-1.0, -0.0], excludes 0``): sentences :func:`compare` no longer writes."""
    return [m.group(0) for m in _CLAIM.finditer(text)
            if float(m.group(1)) == float(m.group(2)) or 0.0 in (float(m.group(1)), float(m.group(2)))]


def compare(a: str, value_a: float, ci_a, b: str, value_b: float, ci_b, *, diff_ci, n: int,
            lower_is_better: bool = True, digits: int = 3, scheme: str = PAIRED, same: bool = False,
            margin: float | None = None, diff_ci90=None) -> str:
    """One sentence: ``a`` against ``b`` with both numbers and intervals, the difference's interval and ``n``;
    ``scheme`` names how the interval was resampled (default: maps with their reference images).

    ``compare("joint", 0.071, (0.065, 0.081), "normal", 0.212, (0.192, 0.233), diff_ci=(-0.16, -0.12), n=300)``
    gives "joint 0.071 [0.065, 0.081] is better than normal 0.212 [0.192, 0.233] (difference -0.141, 95 %
    interval [-0.160, -0.120], excludes 0; paired resampling of maps and reference images, n = 300)".

    The difference and its interval get more decimals than ``digits`` where ``digits`` would hide the interval's
    width or print an end at 0 (:func:`difference_format`). ``same``: the caller knows both arms are the same start;
    that, or an interval of width 0, gives "... : the same start: not a test (...)" or "... : a constant
    difference: not a test (...)", never a verdict (:func:`relation_of_difference`). ``margin``: a smallest effect
    of interest fixed before the run; the sentence then reads :func:`relation_with_margin` and quotes the interval
    its two one-sided tests used (``diff_ci90``, else the 95 % interval).
    """
    r = (relation_of_difference(diff_ci, lower_is_better, same) if margin is None else
         relation_with_margin(diff_ci, margin, diff_ci90=diff_ci90, lower_is_better=lower_is_better, same=same))
    left = f"{a} {value_a:.{digits}f} {interval_text(ci_a, digits)}"
    right = f"{b} {value_b:.{digits}f} {interval_text(ci_b, digits)}"
    spec = difference_format(diff_ci, digits)
    diff = f"difference {value_a - value_b:+{spec}}, 95 % interval {interval_text(diff_ci, spec)}"
    tail = f"{scheme}, n = {n}"
    if r in NOT_A_TEST:
        return f"{left} against {right}: {r} ({diff}{'' if r == SAME else ' on every resample'}; {tail})"
    lo, hi = _check(diff_ci)
    why = f"{diff}, {'excludes' if lo > 0 or hi < 0 else 'includes'} 0"
    if margin is not None:
        tost = diff_ci if diff_ci90 is None else diff_ci90
        inside = "inside" if r == EQUIVALENT else "not inside"
        why += (f"; {'95 % interval (for want of the 90 %)' if diff_ci90 is None else '90 % interval'} "
                f"{interval_text(tost, difference_format(tost, digits))} {inside} [-{margin:g}, {margin:g}]")
    why += f"; {tail}"
    if r == EQUIVALENT:
        return f"{left} is equivalent to {right} within the margin {margin:g} ({why})"
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


def _best_and_cis(values: Sequence[float], diff_cis_to, lower_is_better: bool) -> tuple[int, Sequence]:
    if not len(values):
        raise ValueError("need at least one value")
    pick = min if lower_is_better else max
    best = pick(range(len(values)), key=lambda i: float(values[i]))
    cis = diff_cis_to(best) if callable(diff_cis_to) else diff_cis_to[best]
    if len(cis) != len(values):
        raise ValueError(f"need as many difference intervals as values, got {len(cis)} and {len(values)}")
    return best, cis


def best_set(values: Sequence[float], diff_cis_to: Sequence, lower_is_better: bool = True) -> tuple[int, list[int]]:
    """The index of the best value and the indices not shown to differ from it (itself included): those not
    distinguishable from it and those no test can tell from it (an interval of width 0, :data:`NOT_A_TEST`).

    ``diff_cis_to(best)`` gives, for each entry ``i``, the 95 % interval of ``value_i - value_best`` from the
    paired draws (a sequence of such lists, one per possible best, or a callable). "Best" is the point
    estimate; the set says how much that choice is worth.
    """
    best, cis = _best_and_cis(values, diff_cis_to, lower_is_better)
    return best, [i for i in range(len(values)) if i == best
                  or relation_of_difference(cis[i], lower_is_better) in (TIED, *NOT_A_TEST)]


def best_text(names: Sequence[str], values: Sequence[float], cis: Sequence, diff_cis_to, *, n: int, metric: str,
              lower_is_better: bool = True, digits: int = 3) -> str:
    """"lowest FD-toy: mu = 0.8 (0.095 [0.083, 0.116]); not distinguishable from it (...): mu = 0.7"; entries whose
    difference from the best has an interval of width 0 are listed apart, as no test."""
    best, to_best = _best_and_cis(values, diff_cis_to, lower_is_better)
    relations = [relation_of_difference(ci, lower_is_better) for ci in to_best]
    tied = [names[i] for i, r in enumerate(relations) if i != best and r == TIED]
    untested = [names[i] for i, r in enumerate(relations) if i != best and r in NOT_A_TEST]
    head = (f"{'lowest' if lower_is_better else 'highest'} {metric}: {names[best]} "
            f"({float(values[best]):.{digits}f} {interval_text(cis[best], digits)})")
    parts = ([f"not distinguishable from it (95 % interval of the difference includes 0; {PAIRED}, n = {n}): "
              + ", ".join(tied)] if tied else []) + (
        ["not a test against it (the difference's interval has width 0: the same start, or one value on every "
         "resample): " + ", ".join(untested)] if untested else [])
    if not parts:
        return head + (f"; every other entry differs from it (95 % intervals of the differences exclude 0; {PAIRED}, "
                       f"n = {n})")
    return "; ".join([head, *parts])
