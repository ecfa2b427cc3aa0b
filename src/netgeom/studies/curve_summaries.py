"""Summaries of loss and accuracy curves along a line in weight space (MLI seed, star-domain barriers).

Curves are sequences of values on an increasing grid `alphas` (t in the star-domain papers)
from 0 to 1, endpoints included. Nothing here evaluates a network.

Non-finite curves: a NaN or inf anywhere in a curve (a diverged point, an overflow) makes every
numeric summary NaN (largest_rise, loss_barrier, accuracy_barrier, a bump's height and width),
never a clean 0 that would read as "monotone, no barrier". The predicate `is_monotone` stays a
bool and answers False (monotonicity cannot be certified; a NaN would be truthy in an `if`).
`curve_is_finite` is the flag a stage records next to the summaries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from netgeom.errors import NetgeomError

MIN_BARRIER_POINTS = 3  # both endpoints and at least one interior point


def _curve(values, name: str = "curve") -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size < 2:
        raise NetgeomError(name, f"needs at least 2 points, got {arr.size}")
    return arr


def _grid(alphas, values, name: str = "values") -> tuple[np.ndarray, np.ndarray]:
    a, v = _curve(alphas, "alphas"), _curve(values, name)
    if a.shape != v.shape:
        raise NetgeomError("alphas", f"must have one value per point ({v.size}), got {a.size}")
    if not np.isfinite(a).all():
        raise NetgeomError("alphas", "must be finite (the grid is an input, not a measurement)")
    return a, v


def curve_is_finite(values) -> bool:
    """True when no value is NaN or +-inf: only then are this module's summaries numbers."""
    return bool(np.isfinite(np.asarray(values, dtype=np.float64)).all())


# --------------------------------------------------------------------------- monotonicity


def largest_rise(losses) -> float:
    """Delta = max(0, max over i<j of L_j - L_i): the largest bump above the running minimum.

    Unlike the seed, a rise that ends at the last point counts ([3, 2, 1, 1.5] -> 0.5).
    NaN when the curve holds a NaN or inf.
    """
    arr = _curve(losses, "losses")
    if not curve_is_finite(arr):
        return math.nan
    running_min = np.minimum.accumulate(arr)
    return float(max(0.0, np.max(arr[1:] - running_min[:-1])))


def is_monotone(losses, tol: float = 0.0) -> bool:
    """True when the curve never rises by more than `tol` (paper: 0 for CNNs, 1e-3 for MLPs).

    False for a curve with NaN or inf (see the module docstring).
    """
    rise = largest_rise(losses)
    return bool(rise <= tol)  # NaN <= tol is False


@dataclass(frozen=True)
class Bump:
    """One excursion of the curve above its running minimum.

    start: index of the running minimum the curve leaves; end: first index where the curve is back
    within `tol` of that minimum (or the last index); peak: index of the highest excess.
    """

    start: int
    peak: int
    end: int
    width: float  # alphas[end] - alphas[start]
    height: float  # L[peak] - running minimum


def _undetermined_bump(arr: np.ndarray) -> Bump:
    """A non-finite curve's bumps cannot be told apart: one bump over the whole curve, NaN sized."""
    first_bad = int(np.flatnonzero(~np.isfinite(arr))[0])
    return Bump(0, first_bad, arr.size - 1, math.nan, math.nan)


def bumps(alphas, losses, tol: float = 0.0) -> list[Bump]:
    """All bumps higher than `tol`, in order; max(height) over them equals `largest_rise`.

    A curve with NaN or inf gives one bump spanning the curve, its peak at the first non-finite
    point, with NaN width and height.
    """
    a, arr = _grid(alphas, losses, "losses")
    if not curve_is_finite(arr):
        return [_undetermined_bump(arr)]
    excess = arr - np.minimum.accumulate(arr)
    out: list[Bump] = []
    i = 1
    while i < arr.size:
        if excess[i] <= tol:
            i += 1
            continue
        start = i - 1
        while start > 0 and excess[start] > 0:  # back to where the minimum was attained
            start -= 1
        end = i
        while end < arr.size - 1 and excess[end] > tol:
            end += 1
        run = excess[i : end + 1] if excess[end] > tol else excess[i:end]
        peak = i + int(np.argmax(run))
        out.append(Bump(start, peak, end, float(a[end] - a[start]), float(excess[peak])))
        i = end + 1
    return out


# --------------------------------------------------------------------------- barriers


def _chord_gap(alphas, values) -> np.ndarray | None:
    """values - chord between the endpoints at interior points; None when a value is not finite."""
    a, v = _grid(alphas, values)
    if a.size < MIN_BARRIER_POINTS:
        raise NetgeomError("alphas", f"a barrier needs at least one interior point (n >= {MIN_BARRIER_POINTS})")
    if not curve_is_finite(v):
        return None
    chord = (1 - a) * v[0] + a * v[-1]
    return (v - chord)[1:-1]


def loss_barrier(alphas, losses) -> float:
    """max(0, max over interior t of L(t) - ((1-t) L_A + t L_B)); NaN for a curve with NaN or inf."""
    gap = _chord_gap(alphas, losses)
    return math.nan if gap is None else float(max(0.0, np.max(gap)))


def accuracy_barrier(alphas, accuracies) -> float:
    """min(0, min over interior t of Acc(t) - ((1-t) Acc_A + t Acc_B)) (<= 0); NaN for NaN or inf."""
    gap = _chord_gap(alphas, accuracies)
    return math.nan if gap is None else float(min(0.0, np.min(gap)))


# --------------------------------------------------------------------------- across runs


def non_monotonic_fraction(
    runs: pd.DataFrame,
    by: Sequence[str],
    *,
    delta: str = "delta",
    final_loss: str = "final_train_loss",
    max_final_loss: float | str = 1.0,
    tol: float | str = 0.0,
) -> pd.DataFrame:
    """Per config group: how many runs converged, and how many of those are non-monotonic.

    `runs` has one row per trained model with its Delta and final training loss. Runs whose
    final loss exceeds `max_final_loss` (a number, or the name of a per-row column; the MLI paper
    uses 0.1 for MLPs, 1.0 on CIFAR-10, 2.0 on CIFAR-100) are dropped; a converged run is
    non-monotonic when Delta > tol (a number or a column). A converged run whose Delta is NaN
    (its curve held a NaN or inf) is neither: it is counted in n_non_finite and left out of the
    fraction. Returns one row per group with n_runs, n_converged, n_non_finite,
    n_non_monotonic, frac_non_monotonic (over the converged finite runs) and
    mean_delta_non_monotonic (NaN when none).
    """
    missing = [c for c in (*by, delta, final_loss) if c not in runs.columns]
    missing += [c for c in (max_final_loss, tol) if isinstance(c, str) and c not in runs.columns]
    if missing:
        raise NetgeomError("runs", f"missing columns {missing}; has {list(runs.columns)}")
    limit = runs[max_final_loss] if isinstance(max_final_loss, str) else max_final_loss
    tolerance = runs[tol] if isinstance(tol, str) else tol
    converged = runs[final_loss] <= limit
    finite = pd.Series(np.isfinite(runs[delta].to_numpy(dtype=np.float64)), index=runs.index)
    frame = runs.assign(
        _converged=converged,
        _non_finite=converged & ~finite,
        _non_monotonic=converged & finite & (runs[delta] > tolerance),
    )
    frame = frame.assign(_delta_nm=frame[delta].where(frame._non_monotonic))
    out = frame.groupby(list(by), dropna=False).agg(
        n_runs=(delta, "size"),
        n_converged=("_converged", "sum"),
        n_non_finite=("_non_finite", "sum"),
        n_non_monotonic=("_non_monotonic", "sum"),
        mean_delta_non_monotonic=("_delta_nm", "mean"),
    )
    counted = out.n_converged - out.n_non_finite
    out["frac_non_monotonic"] = out.n_non_monotonic / counted.where(counted > 0)
    columns = ["n_runs", "n_converged", "n_non_finite", "n_non_monotonic", "frac_non_monotonic", "mean_delta_non_monotonic"]
    return out[columns].reset_index()
