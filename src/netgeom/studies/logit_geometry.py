"""Geometry of the logit path z(alpha) = f(x; theta(alpha)) along a line in weight space (MLI seed).

Three measures of how far the logit path is from a straight line:
- `gauss_length`: the average Gauss length, integral over alpha of |d/dalpha (z'/|z'|)|, the
  rate at which the unit tangent turns (0 for a straight path, pi for a semicircle). Both
  derivatives are exact (nested forward-mode AD along the line, torch.func.jvp) at each alpha
  and the integral uses Simpson's rule. It is a *pointwise* measure: for a ReLU network the path
  is piecewise polynomial in alpha and the tangent jumps where a unit switches on or off; those
  jumps have measure zero and are ignored (the seed's measure ignores them too).
- `polyline_turning`: the total turning of the sampled path, the sum of the angles between
  successive chords z(a_{i+1}) - z(a_i). It sees the kinks (a kink of angle phi adds phi) and
  tends to the Gauss length plus the kinks' angles as the grid refines; it costs only forward
  passes (`sample_path`, or the curve engine's `return_logits`).
- `logit_linearity`: the mean squared distance of z(alpha) - z(0) from the line through z(1) - z(0).

The network's path, `logit_path(..., bn=)`, comes in two BatchNorm variants (BN-free networks
give the same path under both):
- "interpolate": every floating entry is interpolated, running statistics included, and the
  derivative flows through the interpolated statistics (eval-mode BN written out so forward AD
  passes through them). One smooth path.
- "recompute" / "recompute_ema": the MLI seed's BN variant. At each alpha the statistics are
  re-estimated at theta(alpha) (the curve engine's protocols) and then *held constant* while
  differentiating in alpha: the tangent of the path with fixed statistics through that point,
  not the tangent of the path of recomputed statistics (which would also carry d stats/d alpha).

Speed: the derivatives are taken with respect to the weights along the fixed direction
theta_B - theta_A (no per-alpha arithmetic on weights under AD), and several alphas can share
one pass under torch.func.vmap (`alphas_per_pass`); on CPU that helps dense nets and hurts conv
nets (vmap turns a conv with per-alpha weights into a grouped conv), so the path's default is
as many alphas per pass as fit DENSE_PASS_BYTES of stacked weights without convolutions and 1
with them. Conv nets on image batches run in
channels-last layout under memory_format="auto" (as the curve engine; 1.5-2.5x faster on CPU
here). bench/gauss_length.py compares this with the seed's double-backward implementation.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from netgeom.errors import NetgeomError
from netgeom.memory_format import MEMORY_FORMATS, in_format, preferred_format, state_in_format
from netgeom.studies.interpolation import (
    BN_BATCH_SIZE,
    NEARER_ENDPOINT_SWITCH,
    SEEDS_BN_MOMENTUM,
    bn_modules,
    check_model_state,
    check_same_architecture,
    recalibrate_bn,
    recalibration_for,
)
from netgeom.studies.weight_space import is_bn_statistic

StateDict = Mapping[str, Tensor]
Point = Tensor | Mapping[str, Tensor]  # where the path is: alpha itself, or the weights at alpha

PATH_BN_MODES = ("interpolate", "recompute", "recompute_ema")
MIN_GAUSS_POINTS = 3  # Simpson's rule needs two intervals
# Dense nets: alphas per vmapped pass until their stacked weights fill this budget (small nets pay
# functorch's per-op overhead once per pass; 4..51 alphas measured within noise of each other for
# a 400k-parameter MLP on CPU, see bench/gauss_length.py).
DENSE_PASS_BYTES = 64 * 2**20
MAX_ALPHAS_PER_PASS = 64


def _combine(fn: Callable[[Tensor, Tensor], Tensor], a: Point, b: Point) -> Point:
    return fn(a, b) if isinstance(a, Tensor) else {k: fn(v, b[k]) for k, v in a.items()}


@dataclass(frozen=True)
class LogitPath:
    """z(alpha) = fn(start + alpha * direction, held(alpha)), a curve with a known tangent input.

    `start` and `direction` are a tensor or a dict of tensors (for a network: the weights at
    alpha = 0 and theta_B - theta_A). `held(alpha)` (optional) gives per-alpha tensors that
    enter `fn` but are not differentiated (for a network: BN statistics recomputed at alpha).
    `alphas_per_pass`: how many alphas `gauss_rates` evaluates in one vmapped pass by default.
    Calling the path evaluates z at one alpha.
    """

    fn: Callable[[Point, Any], Tensor]
    start: Point
    direction: Point
    held: Callable[[float], Mapping[str, Tensor]] | None = None
    alphas_per_pass: int = 1

    def point(self, alpha: float | Tensor) -> Point:
        return _combine(lambda s, d: s + torch.as_tensor(alpha, dtype=s.dtype) * d, self.start, self.direction)

    def points(self, alphas: Tensor) -> Point:
        """Points at several alphas, stacked along a new leading axis."""
        return _combine(lambda s, d: s + alphas.to(s.device, s.dtype).reshape(-1, *[1] * s.ndim) * d, self.start, self.direction)

    def held_at(self, alphas: list[float]) -> Mapping[str, Tensor] | None:
        if self.held is None:
            return None
        parts = [self.held(a) for a in alphas]
        return {k: torch.stack([p[k] for p in parts]) for k in parts[0]}

    def __call__(self, alpha: float | Tensor) -> Tensor:
        held = None if self.held is None else self.held(float(alpha))
        return self.fn(self.point(alpha), held)


def as_logit_path(path: LogitPath | Callable[[Tensor], Tensor], dtype: torch.dtype = torch.float64) -> LogitPath:
    """A plain alpha -> z callable as a LogitPath (alpha is a 0-dim tensor of `dtype`)."""
    if isinstance(path, LogitPath):
        return path
    return LogitPath(lambda alpha, _held: path(alpha), torch.zeros((), dtype=dtype), torch.ones((), dtype=dtype))


# --------------------------------------------------------------------------- Gauss length


def simpson(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Composite Simpson's rule of y over x along axis 0, as scipy.integrate.simpson (scipy >= 1.11).

    Written out for the uniform grids the stages use because importing scipy.integrate costs
    about 0.5 s of every stage process; other grids go to scipy. An even number of points adds
    Cartwright's parabolic segment over the last interval (scipy's rule); two points are a
    trapezoid.
    """
    y, x = np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64)
    steps = np.diff(x)
    if x.size < 2 or not np.allclose(steps, steps[0], rtol=1e-12, atol=0.0):
        from scipy.integrate import simpson as scipy_simpson

        return scipy_simpson(y, x=x, axis=0)
    h = steps[0]
    if x.size == 2:
        return 0.5 * h * (y[0] + y[1])
    odd = y if x.size % 2 else y[:-1]
    total = h / 3.0 * (odd[0:-1:2] + 4.0 * odd[1::2] + odd[2::2]).sum(axis=0)
    if x.size % 2 == 0:
        total = total + h * (5.0 * y[-1] + 8.0 * y[-2] - y[-3]) / 12.0
    return total




def _velocity_and_acceleration(path: LogitPath, point: Point, held) -> tuple[Tensor, Tensor]:
    """(z', z'') at `point`: nested forward-mode AD along the path's (constant) direction."""

    def z(p):
        return path.fn(p, held)

    def velocity(p, d):
        return jvp(z, (p,), (d,))[1]

    # The direction enters the outer level as a primal with a zero tangent: then no operation
    # of the inner tangent's computation mixes a dual and a plain tensor, which torch routes
    # through its Python reference kernels (and a 2 s import of torch._dynamo) on first use.
    still = _combine(lambda d, _: torch.zeros_like(d), path.direction, path.direction)
    return jvp(velocity, (point, path.direction), (path.direction, still))


def _turning_rate(v: Tensor, acc: Tensor) -> Tensor:
    """|d/dalpha (v/|v|)| = |(I - u u^T) acc| / |v| over the last axis, flattened to (-1,).

    0 where the path stands still (no direction to turn); NaN where v or acc is not finite.
    """
    v, acc = v.detach().double(), acc.detach().double()
    speed = v.norm(dim=-1, keepdim=True)
    moving = speed > 0
    safe = torch.where(moving, speed, torch.ones_like(speed))
    u = v / safe
    normal = acc - (acc * u).sum(-1, keepdim=True) * u
    rate = torch.where(moving, normal.norm(dim=-1, keepdim=True) / safe, torch.zeros_like(speed))
    finite = torch.isfinite(v).all(-1, keepdim=True) & torch.isfinite(acc).all(-1, keepdim=True)
    return torch.where(finite, rate, torch.full_like(rate, math.nan)).reshape(-1)


def gauss_rates(path: LogitPath | Callable[[Tensor], Tensor], alphas, *, alphas_per_pass: int | None = None) -> Tensor:
    """The Gauss-length integrand |d/dalpha (z'/|z'|)| at each alpha: shape (len(alphas), samples).

    `path` is a LogitPath or a plain alpha -> z callable (z of shape (K,) or (N, K): one curve per
    sample, the last axis is the space the curve lives in). `alphas_per_pass` overrides the
    path's default number of alphas per vmapped pass.
    """
    path = as_logit_path(path)
    per_pass = path.alphas_per_pass if alphas_per_pass is None else alphas_per_pass
    if not isinstance(per_pass, int) or per_pass < 1:
        raise NetgeomError("interpolation.gauss_alphas_per_pass", f"must be an integer >= 1, got {per_pass!r}")
    grid = [float(a) for a in np.asarray(alphas, dtype=np.float64).reshape(-1)]
    rates = []
    for lo in range(0, len(grid), per_pass):
        chunk = grid[lo : lo + per_pass]
        held = path.held_at(chunk)
        if per_pass == 1:
            v, acc = _velocity_and_acceleration(path, path.point(chunk[0]), None if held is None else {k: h[0] for k, h in held.items()})
            rates.append(_turning_rate(v, acc)[None])
            continue
        in_dims = (0, None if held is None else 0)
        v, acc = vmap(lambda p, h: _velocity_and_acceleration(path, p, h), in_dims=in_dims)(path.points(torch.tensor(chunk, dtype=torch.float64)), held)
        rates += [_turning_rate(v[j], acc[j])[None] for j in range(len(chunk))]
    return torch.cat(rates)


def gauss_length(
    path: LogitPath | Callable[[Tensor], Tensor],
    n_points: int = 101,
    per_sample: bool = False,
    *,
    alphas_per_pass: int | None = None,
):
    """Average Gauss length of z(alpha), alpha in [0, 1]: integral of |d/dalpha (z'/|z'|)|.

    The integrand (`gauss_rates`) is integrated with Simpson's rule on linspace(0, 1, n_points);
    points where the path stands still contribute 0; a NaN or inf in the path gives NaN. Pointwise:
    the turning at ReLU kinks is not counted (see the module docstring and `polyline_turning`).
    Returns the mean over samples (or the per-sample lengths).
    """
    if n_points < MIN_GAUSS_POINTS:
        raise NetgeomError("interpolation.gauss_points", f"must be >= {MIN_GAUSS_POINTS}, got {n_points}")
    alphas = np.linspace(0.0, 1.0, n_points)
    rates = gauss_rates(path, alphas, alphas_per_pass=alphas_per_pass)
    lengths = simpson(rates.cpu().numpy(), alphas)
    return lengths if per_sample else float(np.mean(lengths))


# --------------------------------------------------------------------------- sampled paths


def sample_path(path: LogitPath | Callable[[Tensor], Tensor], alphas, dtype=torch.float64) -> Tensor:
    """Stack path(alpha) over a grid: shape (len(alphas), *z.shape)."""
    with torch.no_grad():
        return torch.stack([path(torch.as_tensor(a, dtype=dtype)).detach() for a in alphas])


def _as_curves(logits) -> Tensor:
    """(points, samples, K) float64 from (points, K) or (points, N, K) or (points, N, ..., K)."""
    z = (logits if isinstance(logits, Tensor) else torch.as_tensor(np.asarray(logits))).detach().double()
    if z.ndim < 2:
        raise NetgeomError("logits", f"needs shape (points, K) or (points, samples, K), got {tuple(z.shape)}")
    return z.reshape(z.shape[0], -1, z.shape[-1])


def _angle_between(u: Tensor, w: Tensor) -> Tensor:
    """Angle between unit vectors, accurate at 0 and pi as well (Kahan: 2 atan2(|u-w|, |u+w|))."""
    return 2 * torch.atan2((u - w).norm(dim=-1), (u + w).norm(dim=-1))


def polyline_turning(logits, per_sample: bool = False):
    """Total turning of the sampled path: sum of the angles between successive chords.

    `logits` has shape (points, K) or (points, samples, K), points in path order. A chord of
    length 0 (the path stands still between two points) has no direction and is skipped: the
    angle is taken to the last chord that moved. A sample with a NaN or inf gives NaN. A closed
    regular polygon (with the first edge repeated at the end) turns by 2 pi; a semicircle
    sampled at n points by pi (n - 2) / (n - 1).
    """
    z = _as_curves(logits)
    if z.shape[0] < MIN_GAUSS_POINTS:
        raise NetgeomError("logits", f"a turning needs at least {MIN_GAUSS_POINTS} points, got {z.shape[0]}")
    chords = z[1:] - z[:-1]  # (points - 1, samples, K)
    length = chords.norm(dim=-1)  # (points - 1, samples)
    moved = length > 0
    units = chords / torch.where(moved, length, torch.ones_like(length)).unsqueeze(-1)
    index = torch.arange(chords.shape[0], device=chords.device).unsqueeze(1).expand_as(moved)
    last_moved = torch.cummax(torch.where(moved, index, torch.full_like(index, -1)), dim=0).values
    previous = last_moved[:-1]  # the last chord that moved before chord i (i >= 1)
    counted = moved[1:] & (previous >= 0)
    before = torch.gather(units, 0, previous.clamp_min(0).unsqueeze(-1).expand_as(units[1:]))
    angles = torch.where(counted, _angle_between(before, units[1:]), torch.zeros_like(length[1:]))
    totals = angles.sum(0)
    totals = torch.where(torch.isfinite(z).all(-1).all(0), totals, torch.full_like(totals, math.nan)).cpu().numpy()
    return totals if per_sample else float(np.mean(totals))


def logit_linearity(alphas, logits) -> float:
    """Integral over alpha of the mean squared distance of z(alpha) - z(0) from the line through z(1) - z(0).

    `logits` has shape (len(alphas), K) or (len(alphas), N, K); the mean is over samples, the
    integral uses Simpson's rule. 0 for any path that stays on the line (whatever its speed).
    """
    a = np.asarray(alphas, dtype=np.float64).reshape(-1)
    z = _as_curves(logits)
    if z.shape[0] != a.size or a.size < 2:
        raise NetgeomError("logits", f"first axis must match alphas ({a.size} >= 2 points), got {z.shape[0]}")
    d = z - z[0]
    w = z[-1] - z[0]
    ww = (w * w).sum(-1, keepdim=True)
    along = ww > 0
    coef = torch.where(along, (d * w).sum(-1, keepdim=True) / torch.where(along, ww, torch.ones_like(ww)), torch.zeros_like(ww))
    sq = ((d - coef * w) ** 2).sum(-1)
    return float(simpson(sq.mean(1).cpu().numpy(), a))


# --------------------------------------------------------------------------- the network's path


class _DifferentiableEvalBatchNorm(nn.Module):
    """Eval-mode BatchNorm written out, so forward-mode AD can flow through running statistics.

    (torch.batch_norm refuses tangents on running_mean/var.) Same parameter and buffer names as
    the BN layer it replaces, so state dicts load unchanged.
    """

    def __init__(self, bn: _BatchNorm):
        super().__init__()
        self.eps = bn.eps
        self.weight = bn.weight
        self.bias = bn.bias
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked)

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        y = (x - self.running_mean.reshape(shape)) / torch.sqrt(self.running_var.reshape(shape) + self.eps)
        if self.weight is not None:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y


def _with_differentiable_bn(model: nn.Module) -> nn.Module:
    """The (copied) model with every BN layer replaced by `_DifferentiableEvalBatchNorm`."""
    for name, bn in list(bn_modules(model).items()):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _DifferentiableEvalBatchNorm(bn))
    return model


def _default_alphas_per_pass(model: nn.Module, moving: Mapping[str, Tensor]) -> int:
    if any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules()):
        return 1
    size = sum(v.numel() * v.element_size() for v in moving.values())
    return max(1, min(MAX_ALPHAS_PER_PASS, DENSE_PASS_BYTES // max(size, 1)))


def logit_path(
    model: nn.Module,
    state_a: StateDict,
    state_b: StateDict,
    x: Tensor,
    *,
    bn: str = "interpolate",
    calibration_inputs: Tensor | None = None,
    bn_batch_size: int = BN_BATCH_SIZE,
    bn_momentum: float | None = SEEDS_BN_MOMENTUM,
    bn_batches: int | None = None,
    memory_format: str = "auto",
) -> LogitPath:
    """alpha -> f(x; theta(alpha)) in eval mode, for `gauss_length` and `sample_path`.

    bn="interpolate": BN statistics interpolated (and differentiated); "recompute" /
    "recompute_ema": re-estimated on `calibration_inputs` at each alpha and held constant in the
    derivative (the MLI seed's BN variant; protocols as in `interpolation_curve`). The model is a
    template: it is copied once, never modified. `memory_format` as in `interpolation_curve`.
    """
    check_same_architecture(state_a, state_b)
    check_model_state(model, state_a)
    if bn not in PATH_BN_MODES:
        raise NetgeomError("interpolation.gauss_bn", f"unknown value {bn!r}; allowed: {', '.join(PATH_BN_MODES)}")
    protocol = recalibration_for(bn, bn_batch_size, bn_momentum, bn_batches)
    recompute = bn != "interpolate" and bool(bn_modules(model))
    if recompute and (calibration_inputs is None or calibration_inputs.shape[0] == 0):
        raise NetgeomError("calibration_inputs", f"bn={bn!r} needs a non-empty subset of training inputs")
    if memory_format not in MEMORY_FORMATS:
        raise NetgeomError("interpolation.memory_format", f"unknown value {memory_format!r}; allowed: {', '.join(MEMORY_FORMATS)}")
    layout = preferred_format(memory_format, model, x)
    state_a, state_b, x = state_in_format(state_a, layout), state_in_format(state_b, layout), in_format(x, layout)
    if recompute:
        calibration_inputs = in_format(calibration_inputs, layout)
    net = copy.deepcopy(model).eval()
    if bn == "interpolate":
        net = _with_differentiable_bn(net)
    statistics = {k for k, v in state_a.items() if recompute and is_bn_statistic(k) and v.is_floating_point()}
    moving = [k for k, v in state_a.items() if v.is_floating_point() and k not in statistics]
    fixed = {k: v for k, v in state_a.items() if k not in moving and k not in statistics}
    start = {k: state_a[k].detach() for k in moving}
    direction = {k: (state_b[k] - state_a[k]).detach() for k in moving}

    def fn(point: Mapping[str, Tensor], held: Mapping[str, Tensor] | None) -> Tensor:
        return functional_call(net, {**fixed, **point, **(held or {})}, (x,))

    def held(alpha: float) -> dict[str, Tensor]:
        near = state_a if alpha < NEARER_ENDPOINT_SWITCH else state_b
        state = {**near, **{k: torch.lerp(state_a[k], state_b[k], alpha) for k in moving}}
        fresh = recalibrate_bn(
            model, state, calibration_inputs, protocol.batch_size, momentum=protocol.momentum, batches=protocol.batches
        )
        return {k: fresh[k] for k in statistics}

    return LogitPath(fn, start, direction, held if recompute else None, _default_alphas_per_pass(model, start))
