"""Loss and accuracy along straight lines in weight space: theta(t) = (1-t) theta_A + t theta_B.

One curve engine serves both seeds: init -> final (MLI) and model <-> model (star-domain
barriers). The module passed in is only a template: every point is evaluated with
`torch.func.functional_call` on freshly interpolated tensors, so nothing is deep-copied per t
and the caller's module is left as it was (its train/eval flags and BN momenta are restored).

BatchNorm modes (`bn=`):
- "interpolate": every floating-point entry is interpolated, running statistics included.
- "recompute":   running statistics are reset and re-estimated at every point by one pass over
                 a fixed calibration subset (BN layers in train mode, everything else in eval
                 mode, under no_grad) with a cumulative average, then the point is evaluated in
                 eval mode. By default the endpoints are recalibrated too, so the curve's
                 endpoints are A and B *with recomputed statistics*; `endpoints="direct"`
                 evaluates t=0 and t=1 with their own stored statistics (star-domain protocol).
- "frozen":      weights are interpolated; all buffers come from the nearer endpoint (A's for
                 t < 0.5, B's for t >= 0.5), so both endpoints are exactly A and B.
Non-floating buffers (num_batches_tracked) always come from the nearer endpoint.

The cumulative average weights each calibration batch by its size (momentum n_k / (n_1+...+n_k)
for batch k); with equal-size batches this is exactly PyTorch's momentum=None. The running mean
is then the exact mean of the subset; the running variance is the size-weighted mean of the
per-batch unbiased variances (exact for a single batch).

Several t can be evaluated per pass (`points_per_pass > 1`) with stack_module_state-style
stacking and torch.func.vmap; on CPU a loop over t measured faster, so the default is 1.

Memory layout (`memory_format=`): "auto" runs conv nets on image batches in channels-last
layout (inputs and 4-D weights converted once per curve; see netgeom.memory_format).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from netgeom.errors import NetgeomError
from netgeom.memory_format import MEMORY_FORMATS, in_format, preferred_format, state_in_format
from netgeom.progress import progress
from netgeom.studies.curve_summaries import Plane, plane_grid, plane_point

StateDict = Mapping[str, Tensor]
EvalSets = Mapping[str, tuple[Tensor, Tensor]]
LossFn = Callable[[Tensor, Tensor], Tensor]  # (outputs, targets) -> per-sample losses

BN_MODES = ("interpolate", "recompute", "frozen")
ENDPOINT_MODES = ("curve", "direct")


def cross_entropy_per_sample(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(outputs, targets, reduction="none")


# --------------------------------------------------------------------------- validation


def _compare_states(reference: StateDict, other: StateDict, key: str, keys_problem: str, shapes_problem: str) -> None:
    if set(reference) != set(other):
        diff = sorted(set(reference) ^ set(other))[:5]
        raise NetgeomError(key, f"{keys_problem}; differing keys {diff}")
    for k, v in reference.items():
        if v.shape != other[k].shape:
            raise NetgeomError(key, f"{shapes_problem}; {k}: {tuple(v.shape)} vs {tuple(other[k].shape)}")


def check_same_architecture(state_a: StateDict, state_b: StateDict, key: str = "interpolation.models") -> None:
    """Same keys and shapes, or NetgeomError(key) naming the first difference."""
    _compare_states(
        state_a, state_b, key,
        "state dicts must have the same keys (same architecture)", "state dicts must have equal shapes (same width)",
    )


def _check_model(model: nn.Module, state: StateDict, key: str = "interpolation.models") -> None:
    _compare_states(
        model.state_dict(), state, key,
        "state dicts must match the model's keys", "state dicts must match the model's shapes",
    )


def _choice(value: str, allowed: Sequence[str], key: str) -> str:
    if value not in allowed:
        raise NetgeomError(key, f"unknown value {value!r}; allowed: {', '.join(allowed)}")
    return value


# --------------------------------------------------------------------------- states


def interpolate_state(state_a: StateDict, state_b: StateDict, t: float) -> dict[str, Tensor]:
    """(1-t) A + t B for floating entries; non-floating entries from the nearer endpoint.

    t = 0 and t = 1 return A's and B's tensors themselves (no rounding).
    """
    if t == 0.0:
        return dict(state_a)
    if t == 1.0:
        return dict(state_b)
    near = state_a if t < 0.5 else state_b
    return {k: torch.lerp(a, state_b[k], t) if a.is_floating_point() else near[k] for k, a in state_a.items()}


def bn_modules(model: nn.Module) -> dict[str, _BatchNorm]:
    """BatchNorm layers that keep running statistics, by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, _BatchNorm) and m.track_running_stats}


def _bn_keys(model: nn.Module) -> list[str]:
    keys = []
    for name in bn_modules(model):
        prefix = f"{name}." if name else ""
        keys += [prefix + "running_mean", prefix + "running_var", prefix + "num_batches_tracked"]
    return keys


def _buffer_keys(model: nn.Module) -> set[str]:
    return {n for n, _ in model.named_buffers()}


def _with_fresh_bn_stats(model: nn.Module, state: StateDict, stack: int | None = None) -> dict[str, Tensor]:
    """Copy of `state` whose BN statistics are new tensors reset to (0, 1, 0) (stacked if asked)."""
    out = dict(state)
    for name, bn in bn_modules(model).items():
        prefix = f"{name}." if name else ""
        lead = () if stack is None else (stack,)
        like = state[prefix + "running_mean"]
        out[prefix + "running_mean"] = torch.zeros(*lead, *like.shape[-1:], dtype=like.dtype, device=like.device)
        out[prefix + "running_var"] = torch.ones(*lead, *like.shape[-1:], dtype=like.dtype, device=like.device)
        out[prefix + "num_batches_tracked"] = torch.zeros(lead, dtype=torch.long, device=like.device)
    return out


# --------------------------------------------------------------------------- module borrowing


@contextlib.contextmanager
def _borrowed(model: nn.Module):
    """Put the model in eval mode for the duration; restore every module's flag and BN momentum."""
    flags = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in bn_modules(model).values()}
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags.items():
            m.training = flag
        for m, mom in momenta.items():
            m.momentum = mom


def _forward(model: nn.Module, state: StateDict, x: Tensor, stacked: bool) -> Tensor:
    if not stacked:
        return functional_call(model, state, (x,))
    return vmap(lambda p: functional_call(model, p, (x,)))(state)


def _batches(n: int, batch_size: int):
    for lo in range(0, n, batch_size):
        yield lo, min(n, lo + batch_size)


def _recalibrate_in_place(model: nn.Module, state: dict[str, Tensor], inputs: Tensor, batch_size: int, stacked: bool) -> None:
    """Cumulative-average BN statistics over `inputs` into `state`'s (already reset) BN tensors.

    Only BN layers run in train mode (dropout etc. stay in eval mode). The momentum of batch k is
    set explicitly to n_k / (n_1 + ... + n_k): a size-weighted cumulative average that equals
    momentum=None for equal batches and, unlike it, works under vmap (no .item()).
    Caller holds `_borrowed(model)`.
    """
    bns = list(bn_modules(model).values())
    if not bns:
        return
    for m in bns:
        m.train()
    seen = 0
    try:
        with torch.no_grad():
            for lo, hi in _batches(inputs.shape[0], batch_size):
                seen += hi - lo
                for m in bns:
                    m.momentum = (hi - lo) / seen
                _forward(model, state, inputs[lo:hi], stacked)
    finally:
        for m in bns:
            m.eval()


def recalibrate_bn(model: nn.Module, state: StateDict, inputs: Tensor, batch_size: int = 256) -> dict[str, Tensor]:
    """Copy of `state` with BN running statistics re-estimated on `inputs` (see module docstring).

    The model is used as a template only; its own tensors and flags are unchanged.
    """
    _check_model(model, state, "state")
    if inputs is None or inputs.shape[0] == 0:
        raise NetgeomError("inputs", "BN recalibration needs a non-empty tensor of training inputs")
    new = _with_fresh_bn_stats(model, state)
    with _borrowed(model):
        _recalibrate_in_place(model, new, inputs, batch_size, stacked=False)
    return new


# --------------------------------------------------------------------------- evaluation


def _evaluate_in_place(model, state, eval_sets: EvalSets, loss_fn: LossFn, batch_size: int, stacked: bool, n_states: int):
    """{split: (losses (n_states,), accuracies (n_states,))}, mean over samples, eval mode, no_grad."""
    out = {}
    with torch.no_grad():
        for split, (x, y) in eval_sets.items():
            loss_sum = torch.zeros(n_states, dtype=torch.float64)
            correct = torch.zeros(n_states, dtype=torch.float64)
            classify = not y.is_floating_point()
            for lo, hi in _batches(x.shape[0], batch_size):
                logits = _forward(model, state, x[lo:hi], stacked)
                if not stacked:
                    logits = logits.unsqueeze(0)
                yb = y[lo:hi]
                flat_y = yb.unsqueeze(0).expand(n_states, *yb.shape).reshape(-1, *yb.shape[1:])
                losses = loss_fn(logits.reshape(-1, *logits.shape[2:]), flat_y).reshape(n_states, -1)
                loss_sum += losses.double().sum(1).cpu()
                if classify and logits.ndim == 3:
                    correct += (logits.argmax(-1) == yb).double().sum(1).cpu()
            n = x.shape[0]
            acc = (correct / n).numpy() if classify else np.full(n_states, np.nan)
            out[split] = ((loss_sum / n).numpy(), acc)
    return out


def _check_eval_sets(eval_sets: EvalSets) -> None:
    if not eval_sets:
        raise NetgeomError("eval_sets", "needs at least one evaluation set {name: (inputs, targets)}")
    for name, pair in eval_sets.items():
        if len(pair) != 2 or pair[0].shape[0] != pair[1].shape[0] or pair[0].shape[0] == 0:
            raise NetgeomError("eval_sets", f"{name!r} must be a non-empty (inputs, targets) pair of equal length")


def evaluate_state(
    model: nn.Module,
    state: StateDict,
    eval_sets: EvalSets,
    loss_fn: LossFn = cross_entropy_per_sample,
    batch_size: int = 1024,
) -> dict[str, tuple[float, float]]:
    """{split: (mean loss, accuracy)} of `state` in eval mode (accuracy NaN for float targets)."""
    _check_eval_sets(eval_sets)
    with _borrowed(model):
        res = _evaluate_in_place(model, state, eval_sets, loss_fn, batch_size, stacked=False, n_states=1)
    return {k: (float(l[0]), float(a[0])) for k, (l, a) in res.items()}


# --------------------------------------------------------------------------- the curve


def _point_state(model, state_a, state_b, t: float, bn: str, buffer_keys: set[str]) -> dict[str, Tensor]:
    state = interpolate_state(state_a, state_b, t)
    if bn == "frozen":
        near = state_a if t < 0.5 else state_b
        state.update({k: near[k] for k in buffer_keys if k in near})
    return state


def interpolation_curve(
    model: nn.Module,
    state_a: StateDict,
    state_b: StateDict,
    eval_sets: EvalSets,
    *,
    n: int = 50,
    bn: str = "recompute",
    calibration_inputs: Tensor | None = None,
    endpoints: str = "curve",
    loss_fn: LossFn = cross_entropy_per_sample,
    batch_size: int = 1024,
    bn_batch_size: int = 256,
    points_per_pass: int = 1,
    alphas: Sequence[float] | None = None,
    memory_format: str = "auto",
) -> pd.DataFrame:
    """Loss and accuracy at t in linspace(0, 1, n) on every evaluation set.

    Returns a long DataFrame with columns t, split, loss, accuracy (rows ordered by t, then by
    the order of `eval_sets`). `alphas` replaces the grid when given (any values; n ignored).
    """
    check_same_architecture(state_a, state_b)
    _check_model(model, state_a)
    _check_eval_sets(eval_sets)
    _choice(bn, BN_MODES, "interpolation.bn")
    _choice(endpoints, ENDPOINT_MODES, "interpolation.endpoints")
    _choice(memory_format, MEMORY_FORMATS, "interpolation.memory_format")
    if alphas is None:
        if not isinstance(n, int) or n < 2:
            raise NetgeomError("interpolation.points", f"n must be an integer >= 2 (both endpoints), got {n!r}")
        ts = np.linspace(0.0, 1.0, n)
    else:
        ts = np.asarray(alphas, dtype=np.float64).reshape(-1)
        if ts.size < 1:
            raise NetgeomError("interpolation.points", "alphas must not be empty")
    if points_per_pass < 1:
        raise NetgeomError("points_per_pass", f"must be >= 1, got {points_per_pass}")
    recompute = bn == "recompute" and bool(bn_modules(model))
    if recompute and (calibration_inputs is None or calibration_inputs.shape[0] == 0):
        raise NetgeomError("calibration_inputs", "bn='recompute' needs a non-empty subset of training inputs")

    layout = preferred_format(memory_format, model, next(iter(eval_sets.values()))[0])
    if layout != torch.contiguous_format:
        state_a, state_b = state_in_format(state_a, layout), state_in_format(state_b, layout)
        eval_sets = {k: (in_format(x, layout), y) for k, (x, y) in eval_sets.items()}
        if recompute:
            calibration_inputs = in_format(calibration_inputs, layout)
    buffers = _buffer_keys(model)
    direct = [i for i, t in enumerate(ts) if recompute and endpoints == "direct" and t in (0.0, 1.0)]
    calibrated = [i for i in range(ts.size) if i not in direct]
    results: dict[int, dict] = {}
    with _borrowed(model):
        for i in direct:  # endpoints with their own stored statistics
            state = state_a if ts[i] == 0.0 else state_b
            res = _evaluate_in_place(model, state, eval_sets, loss_fn, batch_size, False, 1)
            results[i] = {k: (l[0], a[0]) for k, (l, a) in res.items()}
        chunks = [calibrated[j : j + points_per_pass] for j in range(0, len(calibrated), points_per_pass)]
        for chunk in progress(chunks, desc="interpolation", total=len(chunks)):
            states = [_point_state(model, state_a, state_b, float(ts[i]), bn, buffers) for i in chunk]
            stacked = len(states) > 1
            state = {k: torch.stack([s[k] for s in states]) for k in states[0]} if stacked else states[0]
            if recompute:
                state = _with_fresh_bn_stats(model, state, stack=len(states) if stacked else None)
                _recalibrate_in_place(model, state, calibration_inputs, bn_batch_size, stacked)
            res = _evaluate_in_place(model, state, eval_sets, loss_fn, batch_size, stacked, len(states))
            for j, i in enumerate(chunk):
                results[i] = {k: (l[j], a[j]) for k, (l, a) in res.items()}
    rows = [
        {"t": float(ts[i]), "split": split, "loss": float(loss), "accuracy": float(acc)}
        for i in range(ts.size)
        for split, (loss, acc) in results[i].items()
    ]
    return pd.DataFrame(rows, columns=["t", "split", "loss", "accuracy"])


def curve_values(curve: pd.DataFrame, split: str, metric: str = "loss") -> tuple[np.ndarray, np.ndarray]:
    """(t, values) of one split of a curve DataFrame, ordered by t."""
    part = curve[curve.split == split].sort_values("t", kind="stable")
    if part.empty:
        raise NetgeomError("split", f"unknown split {split!r}; have {sorted(curve.split.unique())}")
    return part.t.to_numpy(), part[metric].to_numpy()


# --------------------------------------------------------------------------- MLI extras


def random_init_curves(
    model: nn.Module,
    init_fn: Callable[[int], StateDict],
    state_T: StateDict,
    eval_sets: EvalSets,
    repeats: int = 10,
    **curve_options,
) -> pd.DataFrame:
    """Curves from `repeats` fresh initialisations init_fn(r), r = 0..repeats-1, to the same theta_T.

    `init_fn` owns the seeding (e.g. `lambda r: create_model(..., seed=r).state_dict()`). Returns
    the concatenated curves with an extra column `init` = r.
    """
    if repeats < 1:
        raise NetgeomError("repeats", f"must be >= 1, got {repeats}")
    frames = [interpolation_curve(model, init_fn(r), state_T, eval_sets, **curve_options).assign(init=r) for r in range(repeats)]
    return pd.concat(frames, ignore_index=True)


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


def _forward_ad_copy(model: nn.Module) -> nn.Module:
    """A structural copy (one per path, not per point) whose BN layers accept forward-mode tangents."""
    clone = copy.deepcopy(model)
    for name, bn in list(bn_modules(clone).items()):
        parent_name, _, child = name.rpartition(".")
        parent = clone.get_submodule(parent_name) if parent_name else clone
        setattr(parent, child, _DifferentiableEvalBatchNorm(bn))
    return clone.eval()


def logit_path(model: nn.Module, state_a: StateDict, state_b: StateDict, x: Tensor) -> Callable[[Tensor], Tensor]:
    """alpha -> f(x; theta(alpha)) in eval mode with every floating entry interpolated (BN "interpolate").

    Differentiable in alpha with forward-mode AD (torch.func.jvp), for `gauss_length`.
    """
    check_same_architecture(state_a, state_b)
    _check_model(model, state_a)
    net = _forward_ad_copy(model) if bn_modules(model) else model

    def path(alpha: Tensor) -> Tensor:
        state = {}
        for k, a in state_a.items():
            state[k] = a + alpha.to(a.dtype) * (state_b[k] - a) if a.is_floating_point() else a
        with _borrowed(net):
            return functional_call(net, state, (x,))

    return path


def plane_landscape(
    model: nn.Module,
    plane: Plane,
    eval_sets: EvalSets,
    buffers_from: StateDict,
    *,
    resolution: int | tuple[int, int] = 21,
    margin: float = 0.2,
    trajectory: np.ndarray | None = None,
    bn: str = "frozen",
    calibration_inputs: Tensor | None = None,
    loss_fn: LossFn = cross_entropy_per_sample,
    batch_size: int = 1024,
    bn_batch_size: int = 256,
) -> pd.DataFrame:
    """Loss and accuracy on a grid over the plane (columns x, y, split, loss, accuracy).

    The grid covers the plane's three points (and `trajectory` coordinates, e.g. from
    `project_onto_plane`) with a margin. Non-weight entries come from `buffers_from` (usually
    theta_T); with bn="recompute" BN statistics are re-estimated at every grid point instead.
    """
    _choice(bn, ("frozen", "recompute"), "interpolation.bn")
    _check_model(model, buffers_from)
    _check_eval_sets(eval_sets)
    recompute = bn == "recompute" and bool(bn_modules(model))
    if recompute and (calibration_inputs is None or calibration_inputs.shape[0] == 0):
        raise NetgeomError("calibration_inputs", "bn='recompute' needs a non-empty subset of training inputs")
    xs, ys = plane_grid(plane, resolution, margin, trajectory)
    rows = []
    with _borrowed(model):
        grid = [(x, y) for y in ys for x in xs]
        for x, y in progress(grid, desc="plane", total=len(grid)):
            state = plane_point(plane, float(x), float(y), like=buffers_from)
            if recompute:
                state = _with_fresh_bn_stats(model, state)
                _recalibrate_in_place(model, state, calibration_inputs, bn_batch_size, stacked=False)
            res = _evaluate_in_place(model, state, eval_sets, loss_fn, batch_size, False, 1)
            rows += [{"x": float(x), "y": float(y), "split": k, "loss": float(l[0]), "accuracy": float(a[0])} for k, (l, a) in res.items()]
    return pd.DataFrame(rows, columns=["x", "y", "split", "loss", "accuracy"])
