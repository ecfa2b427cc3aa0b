"""Weight space as a vector space: which state entries are weights, distances, and planes.

A state dict mixes weights with BatchNorm running statistics (state the network estimates, not
parameters it learns). Distances, training progress and the MLI 2-D landscape plane are taken
over the weights only; the statistics ride along wherever a full state is rebuilt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from netgeom.errors import NetgeomError

StateDict = Mapping[str, Tensor]

BN_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")

# theta_0' closer to the line through theta_0 and theta_T than this (relative to |theta_T -
# theta_0|) spans no plane that float64 can orthonormalise reliably.
_COLLINEAR_RTOL = 1e-12
# A grid axis over coinciding points still needs a non-zero span to put margins around.
_MIN_AXIS_SPAN = 1e-12


def is_bn_statistic(key: str) -> bool:
    """BatchNorm running statistics and batch counters: state, not weights."""
    return key.rsplit(".", 1)[-1] in BN_STATISTICS


def weight_keys(state: StateDict) -> list[str]:
    """Keys of the floating-point weights (BN running statistics excluded), in state order."""
    return [k for k, v in state.items() if v.is_floating_point() and not is_bn_statistic(k)]


# --------------------------------------------------------------------------- distances


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
    if n2 <= _COLLINEAR_RTOL * max(n1, 1.0):
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
        raise NetgeomError("interpolation.landscape.resolution", f"must be >= 2 per axis, got {(nx, ny)}")
    if margin < 0:
        raise NetgeomError("interpolation.landscape.margin", f"must be >= 0, got {margin}")
    pts = np.array(list(plane.points.values()))
    if extra is not None and len(extra):
        pts = np.vstack([pts, np.asarray(extra, dtype=np.float64).reshape(-1, 2)])
    lo, hi = pts.min(0), pts.max(0)
    span = np.maximum(hi - lo, _MIN_AXIS_SPAN)
    lo, hi = lo - margin * span, hi + margin * span
    return np.linspace(lo[0], hi[0], nx), np.linspace(lo[1], hi[1], ny)
