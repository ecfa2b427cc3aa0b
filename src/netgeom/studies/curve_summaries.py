"""Pure summaries of weight-space interpolation curves (MLI seed, star-domain barriers).

Everything here works on numbers, tensors and state dicts only; nothing evaluates a network
except `gauss_length`, which calls the path it is given. Curves are sequences of values on an
increasing grid `alphas` (t in the star-domain papers) from 0 to 1, endpoints included.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.integrate import simpson
from torch import Tensor
from torch.func import jvp

from netgeom.errors import NetgeomError

StateDict = Mapping[str, Tensor]

# Final-train-loss thresholds the MLI paper uses before counting non-monotonic runs.
CONVERGENCE_THRESHOLDS = {"mlp": 0.1, "cifar10": 1.0, "cifar100": 2.0}

_BN_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def _curve(values, name: str = "curve") -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size < 2:
        raise NetgeomError(name, f"needs at least 2 points, got {arr.size}")
    return arr


# --------------------------------------------------------------------------- monotonicity


def largest_rise(losses) -> float:
    """Delta = max(0, max over i<j of L_j - L_i): the largest bump above the running minimum.

    Unlike the seed, a rise that ends at the last point counts ([3, 2, 1, 1.5] -> 0.5).
    """
    arr = _curve(losses, "losses")
    running_min = np.minimum.accumulate(arr)
    return float(max(0.0, np.max(arr[1:] - running_min[:-1])))


def is_monotone(losses, tol: float = 0.0) -> bool:
    """True when the curve never rises by more than `tol` (paper: 0 for CNNs, 1e-3 for MLPs)."""
    return largest_rise(losses) <= tol


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


def bumps(alphas, losses, tol: float = 0.0) -> list[Bump]:
    """All bumps higher than `tol`, in order; max(height) over them equals `largest_rise`."""
    a, arr = _curve(alphas, "alphas"), _curve(losses, "losses")
    if a.shape != arr.shape:
        raise NetgeomError("alphas", f"must have one value per loss ({arr.size}), got {a.size}")
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


def _chord_gap(alphas, values) -> np.ndarray:
    a, v = _curve(alphas, "alphas"), _curve(values, "values")
    if a.shape != v.shape:
        raise NetgeomError("alphas", f"must have one value per point ({v.size}), got {a.size}")
    if a.size < 3:
        raise NetgeomError("alphas", "a barrier needs at least one interior point (n >= 3)")
    chord = (1 - a) * v[0] + a * v[-1]
    return (v - chord)[1:-1]


def loss_barrier(alphas, losses) -> float:
    """max(0, max over interior t of L(t) - ((1-t) L_A + t L_B))."""
    return float(max(0.0, np.max(_chord_gap(alphas, losses))))


def accuracy_barrier(alphas, accuracies) -> float:
    """min(0, min over interior t of Acc(t) - ((1-t) Acc_A + t Acc_B)) (<= 0)."""
    return float(min(0.0, np.min(_chord_gap(alphas, accuracies))))


# --------------------------------------------------------------------------- distances


def is_bn_statistic(key: str) -> bool:
    """BatchNorm running statistics and batch counters: state, not weights."""
    return key.rsplit(".", 1)[-1] in _BN_STATISTICS


def weight_keys(state: StateDict) -> list[str]:
    """Keys of the floating-point weights (BN running statistics excluded), in state order."""
    return [k for k, v in state.items() if v.is_floating_point() and not is_bn_statistic(k)]


def _sq_norm(state: StateDict, keys, other: StateDict | None = None) -> float:
    total = 0.0
    for k in keys:
        v = state[k].detach().double()
        if other is not None:
            v = v - other[k].detach().double()
        total += float((v * v).sum())
    return total


def weight_distance(theta_a: StateDict, theta_b: StateDict) -> float:
    """||theta_b - theta_a|| over the weights (BN running statistics excluded)."""
    keys = weight_keys(theta_a)
    if set(keys) != set(weight_keys(theta_b)):
        raise NetgeomError("theta_b", "must have the same weights as theta_a")
    return _sq_norm(theta_b, keys, theta_a) ** 0.5


def normalised_weight_distance(theta_0: StateDict, theta_T: StateDict) -> float:
    """||theta_T - theta_0|| / ||theta_0||."""
    return weight_distance(theta_0, theta_T) / _sq_norm(theta_0, weight_keys(theta_0)) ** 0.5


def training_progress(checkpoints: Sequence[StateDict], theta_T: StateDict, theta_0: StateDict | None = None) -> np.ndarray:
    """1 - ||theta_k - theta_T|| / ||theta_0 - theta_T|| per checkpoint (theta_0 defaults to the first)."""
    if not checkpoints:
        raise NetgeomError("checkpoints", "needs at least one checkpoint")
    start = checkpoints[0] if theta_0 is None else theta_0
    total = weight_distance(start, theta_T)
    if total == 0:
        raise NetgeomError("theta_T", "equals theta_0; progress is undefined")
    return np.array([1.0 - weight_distance(c, theta_T) / total for c in checkpoints])


# --------------------------------------------------------------------------- logit-path geometry


def gauss_length(path: Callable[[Tensor], Tensor], n_points: int = 101, per_sample: bool = False, dtype=torch.float64):
    """Average Gauss length of z(alpha), alpha in [0, 1]: integral of ||d/dalpha (z'/||z'||)||.

    `path(alpha)` maps a 0-dim tensor to z of shape (K,) or (N, K) (one curve per sample, the
    last axis is the space the curve lives in). Both derivatives come from forward-mode AD:
    v = z' and v' = z'' from a jvp of a jvp, and d/dalpha (v/|v|) = (I - u u^T) v' / |v|.
    The integrand is integrated with Simpson's rule on linspace(0, 1, n_points); points where
    the path stands still (|v| = 0) contribute 0. Returns the mean over samples (or per sample).
    """
    if n_points < 3:
        raise NetgeomError("n_points", f"must be >= 3, got {n_points}")
    one = torch.ones((), dtype=dtype)

    def velocity(a):
        return jvp(path, (a,), (one,))[1]

    alphas = torch.linspace(0, 1, n_points, dtype=dtype)
    rates = []
    for a in alphas:
        v, acc = jvp(velocity, (a,), (one,))
        v, acc = v.detach().double(), acc.detach().double()
        speed = v.norm(dim=-1, keepdim=True)
        u = torch.where(speed > 0, v / speed.clamp_min(1e-300), torch.zeros_like(v))
        normal = acc - (acc * u).sum(-1, keepdim=True) * u
        rate = torch.where(speed > 0, normal.norm(dim=-1, keepdim=True) / speed.clamp_min(1e-300), 0.0)
        rates.append(rate.squeeze(-1).reshape(-1))
    lengths = simpson(torch.stack(rates).numpy(), x=alphas.numpy(), axis=0)
    return lengths if per_sample else float(np.mean(lengths))


def sample_path(path: Callable[[Tensor], Tensor], alphas, dtype=torch.float64) -> Tensor:
    """Stack path(alpha) over a grid: shape (len(alphas), *z.shape)."""
    with torch.no_grad():
        return torch.stack([path(torch.as_tensor(a, dtype=dtype)).detach() for a in alphas])


def logit_linearity(alphas, logits) -> float:
    """Integral over alpha of the mean squared distance of z(alpha) - z(0) from the line through z(1) - z(0).

    `logits` has shape (len(alphas), K) or (len(alphas), N, K); the mean is over samples, the
    integral uses Simpson's rule. 0 for any path that stays on the line (whatever its speed).
    """
    a = _curve(alphas, "alphas")
    z = torch.as_tensor(np.asarray(logits) if not isinstance(logits, Tensor) else logits).double()
    if z.shape[0] != a.size:
        raise NetgeomError("logits", f"first axis must match alphas ({a.size}), got {z.shape[0]}")
    d = z - z[0]
    w = z[-1] - z[0]
    ww = (w * w).sum(-1, keepdim=True)
    coef = torch.where(ww > 0, (d * w).sum(-1, keepdim=True) / ww.clamp_min(1e-300), 0.0)
    sq = ((d - coef * w) ** 2).sum(-1)
    mean_sq = sq.reshape(a.size, -1).mean(1).numpy()
    return float(simpson(mean_sq, x=a))


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
    final loss exceeds `max_final_loss` (a number, or the name of a per-row column, see
    CONVERGENCE_THRESHOLDS) are dropped; a converged run is non-monotonic when Delta > tol
    (a number or a column). Returns one row per group with n_runs, n_converged,
    n_non_monotonic, frac_non_monotonic and mean_delta_non_monotonic (NaN when none).
    """
    missing = [c for c in (*by, delta, final_loss) if c not in runs.columns]
    missing += [c for c in (max_final_loss, tol) if isinstance(c, str) and c not in runs.columns]
    if missing:
        raise NetgeomError("runs", f"missing columns {missing}; has {list(runs.columns)}")
    limit = runs[max_final_loss] if isinstance(max_final_loss, str) else max_final_loss
    tolerance = runs[tol] if isinstance(tol, str) else tol
    frame = runs.assign(
        _converged=runs[final_loss] <= limit,
        _non_monotonic=(runs[final_loss] <= limit) & (runs[delta] > tolerance),
    )
    frame = frame.assign(_delta_nm=frame[delta].where(frame._non_monotonic))
    out = frame.groupby(list(by), dropna=False).agg(
        n_runs=(delta, "size"),
        n_converged=("_converged", "sum"),
        n_non_monotonic=("_non_monotonic", "sum"),
        mean_delta_non_monotonic=("_delta_nm", "mean"),
    )
    out.insert(3, "frac_non_monotonic", out.n_non_monotonic / out.n_converged.where(out.n_converged > 0))
    return out.reset_index()


# --------------------------------------------------------------------------- 2-D plane


@dataclass(frozen=True)
class Plane:
    """The plane through (theta_0, theta_0', theta_T) in flattened weight space.

    origin = theta_0; e1 is the unit vector towards theta_T, e2 the Gram-Schmidt unit vector
    towards theta_0'. Only weights (BN running statistics excluded) span the plane; tensors are
    float64. `points` holds the plane coordinates of the three defining states.
    """

    origin: dict[str, Tensor]
    e1: dict[str, Tensor]
    e2: dict[str, Tensor]
    points: dict[str, tuple[float, float]]


def _dot(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    return float(sum((a[k] * b[k]).sum() for k in a))


def _weights64(state: StateDict, keys) -> dict[str, Tensor]:
    return {k: state[k].detach().double() for k in keys}


def plane_through(theta_0: StateDict, theta_0_other: StateDict, theta_T: StateDict) -> Plane:
    """Orthonormal basis (Gram-Schmidt) of the plane through two initialisations and a solution."""
    keys = weight_keys(theta_T)
    for name, s in (("theta_0", theta_0), ("theta_0_other", theta_0_other)):
        if set(weight_keys(s)) != set(keys) or any(s[k].shape != theta_T[k].shape for k in keys):
            raise NetgeomError(name, "must have the same weights (keys and shapes) as theta_T")
    o = _weights64(theta_0, keys)
    d1 = {k: theta_T[k].double() - o[k] for k in keys}
    d2 = {k: theta_0_other[k].double() - o[k] for k in keys}
    n1 = _dot(d1, d1) ** 0.5
    if n1 == 0:
        raise NetgeomError("theta_T", "equals theta_0; the plane is undefined")
    e1 = {k: v / n1 for k, v in d1.items()}
    r = {k: d2[k] - _dot(d2, e1) * e1[k] for k in keys}
    n2 = _dot(r, r) ** 0.5
    if n2 <= 1e-12 * max(n1, 1.0):
        raise NetgeomError("theta_0_other", "is on the line through theta_0 and theta_T; the plane is undefined")
    e2 = {k: v / n2 for k, v in r.items()}
    points = {"theta_0": (0.0, 0.0), "theta_0_other": (_dot(d2, e1), n2), "theta_T": (n1, 0.0)}
    return Plane(o, e1, e2, points)


def plane_point(plane: Plane, x: float, y: float, like: StateDict | None = None) -> dict[str, Tensor]:
    """Weights at plane coordinates (x, y); cast to the dtypes of `like` and merged into it when given."""
    point = {k: plane.origin[k] + x * plane.e1[k] + y * plane.e2[k] for k in plane.origin}
    if like is None:
        return point
    merged = dict(like)
    merged.update({k: v.to(like[k].dtype) for k, v in point.items()})
    return merged


def project_onto_plane(plane: Plane, states: Sequence[StateDict]) -> np.ndarray:
    """Plane coordinates (k, 2) of each state's orthogonal projection (e.g. a training trajectory)."""
    coords = []
    for s in states:
        d = {k: s[k].detach().double() - plane.origin[k] for k in plane.origin}
        coords.append((_dot(d, plane.e1), _dot(d, plane.e2)))
    return np.array(coords, dtype=np.float64).reshape(-1, 2)


def plane_grid(plane: Plane, resolution: int | tuple[int, int] = 21, margin: float = 0.2, extra: np.ndarray | None = None):
    """Grid axes (xs, ys) covering the three defining points (and `extra` coordinates) plus a margin.

    The margin is a fraction of each axis span added on both sides.
    """
    nx, ny = (resolution, resolution) if isinstance(resolution, int) else resolution
    if nx < 2 or ny < 2:
        raise NetgeomError("resolution", f"must be >= 2 per axis, got {(nx, ny)}")
    if margin < 0:
        raise NetgeomError("margin", f"must be >= 0, got {margin}")
    pts = np.array(list(plane.points.values()))
    if extra is not None and len(extra):
        pts = np.vstack([pts, np.asarray(extra, dtype=np.float64).reshape(-1, 2)])
    lo, hi = pts.min(0), pts.max(0)
    span = np.maximum(hi - lo, 1e-12)
    lo, hi = lo - margin * span, hi + margin * span
    return np.linspace(lo[0], hi[0], nx), np.linspace(lo[1], hi[1], ny)
