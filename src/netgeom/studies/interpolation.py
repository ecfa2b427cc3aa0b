"""Loss and accuracy along straight lines in weight space: theta(t) = (1-t) theta_A + t theta_B.

One curve engine serves both seeds: init -> final (MLI) and model <-> model (star-domain
barriers). The module passed in is only a template: every point is evaluated with
`torch.func.functional_call` on freshly interpolated tensors, so nothing is deep-copied per t
and the caller's module is left as it was (its train/eval flags and BN momenta are restored).

BatchNorm modes (`bn=`):
- "interpolate":   every floating-point entry is interpolated, running statistics included.
- "recompute":     running statistics are reset and re-estimated at every point by one pass over
                   a fixed calibration subset (BN layers in train mode, everything else in eval
                   mode, under no_grad) with a cumulative average, then the point is evaluated
                   in eval mode. By default the endpoints are recalibrated too, so the curve's
                   endpoints are A and B *with recomputed statistics*; `endpoints="direct"`
                   evaluates t=0 and t=1 with their own stored statistics (star-domain protocol).
- "recompute_ema": the seeds' protocol (their `warm_bn`): reset, then `bn_batches` calibration
                   batches folded in with PyTorch's moving average of momentum `bn_momentum`
                   (default 0.1). Biased towards the reset values (0, 1) by (1 - momentum) **
                   batches and towards the last batches; kept to reproduce published curves and
                   to measure that bias. bn_momentum=None is the cumulative average, so
                   "recompute_ema" with None over one pass is exactly "recompute". The seeds put
                   the whole model in train mode; here only BN layers are (dropout stays off, so
                   the statistics stay deterministic).
- "endpoint_ema":  the starlight seed's protocol for barriers: at every point the BN statistics
                   start from endpoint A's running statistics (copied, not reset) and the
                   calibration batches are folded in with the moving average of `bn_momentum`
                   (as "recompute_ema" otherwise). It leans towards A's statistics by
                   (1 - momentum) ** batches; kept to reproduce its barriers and to measure
                   that bias next to the exact "recompute".
- "frozen":        weights are interpolated; all buffers come from the nearer endpoint (A's for
                   t < 0.5, B's for t >= 0.5), so both endpoints are exactly A and B.
Non-floating buffers (num_batches_tracked) always come from the nearer endpoint.

The cumulative average weights each calibration batch by its size (momentum n_k / (n_1+...+n_k)
for batch k); with equal-size batches this is exactly PyTorch's momentum=None. The running mean
is then the exact mean of the subset; the running variance is the size-weighted mean of the
per-batch unbiased variances (exact for a single batch).

`return_logits=True` also returns every evaluated sample's network output at every point.

Several t can be evaluated per pass (`points_per_pass > 1`) with stack_module_state-style
stacking and torch.func.vmap; on CPU a loop over t measured faster, so the default is 1.

Memory layout (`memory_format=`): "auto" runs conv nets on image batches in channels-last
layout (inputs and 4-D weights converted once per curve; see netgeom.memory_format).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from netgeom.batching import batch_spans
from netgeom.errors import NetgeomError
from netgeom.memory_format import MEMORY_FORMATS, in_format, preferred_format, state_in_format
from netgeom.modes import eval_mode
from netgeom.progress import progress as progress_bar
from netgeom.studies.weight_space import Plane, plane_grid, plane_point

StateDict = Mapping[str, Tensor]
EvalSets = Mapping[str, tuple[Tensor, Tensor]]
LossFn = Callable[[Tensor, Tensor], Tensor]  # (outputs, targets) -> per-sample losses

BN_MODES = ("interpolate", "recompute", "recompute_ema", "endpoint_ema", "frozen")
RECOMPUTE_MODES = ("recompute", "recompute_ema", "endpoint_ema")
ENDPOINT_MODES = ("curve", "direct")
SEEDS_BN_MOMENTUM = 0.1  # PyTorch's default, which the seeds' BN warm-up kept
BN_BATCH_SIZE = 256  # calibration batch size (samples per BN statistics update)
EVAL_BATCH_SIZE = 1024  # evaluation batch size (memory only: values do not depend on it)
_KEYS_SHOWN = 5  # differing state keys named in an architecture-mismatch error
NEARER_ENDPOINT_SWITCH = 0.5  # t below: A's non-interpolated entries; at or above: B's


def cross_entropy_per_sample(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(outputs, targets, reduction="none")


# --------------------------------------------------------------------------- validation


def _compare_states(reference: StateDict, other: StateDict, key: str, keys_problem: str, shapes_problem: str) -> None:
    if set(reference) != set(other):
        diff = sorted(set(reference) ^ set(other))[:_KEYS_SHOWN]
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


def check_model_state(model: nn.Module, state: StateDict, key: str = "interpolation.models") -> None:
    """`state` loads into `model` (same keys and shapes), or NetgeomError(key)."""
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
    near = state_a if t < NEARER_ENDPOINT_SWITCH else state_b
    return {k: torch.lerp(a, state_b[k], t) if a.is_floating_point() else near[k] for k, a in state_a.items()}


def bn_modules(model: nn.Module) -> dict[str, _BatchNorm]:
    """BatchNorm layers that keep running statistics, by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, _BatchNorm) and m.track_running_stats}


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


def _with_endpoint_bn_stats(model: nn.Module, state: StateDict, endpoint: StateDict, stack: int | None = None) -> dict[str, Tensor]:
    """Copy of `state` whose BN statistics are new tensors holding `endpoint`'s (stacked if asked)."""
    out = dict(state)
    for name in bn_modules(model):
        prefix = f"{name}." if name else ""
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            value = endpoint[prefix + key].clone()
            out[prefix + key] = value if stack is None else value.expand(stack, *value.shape).clone()
    return out


# --------------------------------------------------------------------------- module borrowing


@contextlib.contextmanager
def _borrowed(model: nn.Module):
    """Put the model in eval mode for the duration; restore every module's flag and BN momentum."""
    momenta = {m: m.momentum for m in bn_modules(model).values()}
    try:
        with eval_mode(model):
            yield model
    finally:
        for m, mom in momenta.items():
            m.momentum = mom


def _forward(model: nn.Module, state: StateDict, x: Tensor, stacked: bool) -> Tensor:
    if not stacked:
        return functional_call(model, state, (x,))
    return vmap(lambda p: functional_call(model, p, (x,)))(state)


# --------------------------------------------------------------------------- BN recalibration


@dataclass(frozen=True)
class Recalibration:
    """How BN statistics are re-estimated from a calibration subset.

    batch_size: calibration batch size. momentum: None for the size-weighted cumulative average
    (the exact statistics of the subset), else PyTorch's moving average with this momentum.
    batches: None for one pass over the subset; a count beyond one pass cycles through the
    subset's batches in order (the seeds' extra warm-up epochs, without their reshuffling).
    """

    batch_size: int = BN_BATCH_SIZE
    momentum: float | None = None
    batches: int | None = None

    def __post_init__(self):
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise NetgeomError("interpolation.bn_batch_size", f"must be an integer >= 1, got {self.batch_size!r}")
        if self.momentum is not None and not 0.0 < self.momentum <= 1.0:
            raise NetgeomError("interpolation.bn_momentum", f"must be in (0, 1] or null (cumulative average), got {self.momentum!r}")
        if self.batches is not None and (not isinstance(self.batches, int) or self.batches < 1):
            raise NetgeomError("interpolation.bn_batches", f"must be an integer >= 1 or null (one pass), got {self.batches!r}")

    def spans(self, n: int) -> list[tuple[int, int]]:
        """(lo, hi) of every calibration batch over a subset of n inputs, in the order they are used."""
        one_pass = list(batch_spans(n, self.batch_size))
        count = len(one_pass) if self.batches is None else self.batches
        return [one_pass[k % len(one_pass)] for k in range(count)]


def recalibration_for(bn: str, batch_size: int, momentum: float | None = SEEDS_BN_MOMENTUM, batches: int | None = None) -> Recalibration:
    """The protocol of a BN mode: "recompute" is always the exact one-pass cumulative average."""
    if bn in ("recompute_ema", "endpoint_ema"):
        return Recalibration(batch_size, momentum, batches)
    return Recalibration(batch_size)


def _recalibrate_in_place(model: nn.Module, state: dict[str, Tensor], inputs: Tensor, protocol: Recalibration, stacked: bool) -> None:
    """Fold calibration batches into `state`'s (already reset) BN tensors, under no_grad.

    Only BN layers run in train mode (dropout etc. stay in eval mode). Each batch's momentum is
    set explicitly: n_k / (n_1 + ... + n_k) for the cumulative average (equals momentum=None
    for equal batches and, unlike it, works under vmap: no .item()), or the fixed EMA momentum.
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
            for lo, hi in protocol.spans(inputs.shape[0]):
                seen += hi - lo
                for m in bns:
                    m.momentum = (hi - lo) / seen if protocol.momentum is None else protocol.momentum
                _forward(model, state, inputs[lo:hi], stacked)
    finally:
        for m in bns:
            m.eval()


def _check_calibration_inputs(inputs: Tensor | None, why: str) -> None:
    if inputs is None or inputs.shape[0] == 0:
        raise NetgeomError("calibration_inputs", f"{why} needs a non-empty subset of training inputs")


def recalibrate_bn(
    model: nn.Module,
    state: StateDict,
    inputs: Tensor,
    batch_size: int = BN_BATCH_SIZE,
    *,
    momentum: float | None = None,
    batches: int | None = None,
) -> dict[str, Tensor]:
    """Copy of `state` with BN running statistics re-estimated on `inputs` (see `Recalibration`).

    The defaults give the exact cumulative average of one pass; `momentum` and `batches` give
    the seeds' moving-average warm-up. The model is used as a template only; its own tensors and
    flags are unchanged.
    """
    protocol = Recalibration(batch_size, momentum, batches)
    check_model_state(model, state, "state")
    _check_calibration_inputs(inputs, "BN recalibration")
    new = _with_fresh_bn_stats(model, state)
    with _borrowed(model):
        _recalibrate_in_place(model, new, inputs, protocol, stacked=False)
    return new


# --------------------------------------------------------------------------- evaluation


@dataclass
class _Scores:
    """Per-state results on one evaluation set: mean losses, accuracies, outputs if kept."""

    losses: np.ndarray  # (n_states,)
    accuracies: np.ndarray  # (n_states,)
    outputs: Tensor | None  # (n_states, n_samples, *output shape)


def _evaluate_in_place(model, state, eval_sets: EvalSets, loss_fn: LossFn, batch_size: int, stacked: bool, n_states: int, keep_outputs: bool = False) -> dict[str, _Scores]:
    """{split: _Scores} averaged over samples, eval mode, no_grad."""
    out = {}
    with torch.no_grad():
        for split, (x, y) in eval_sets.items():
            loss_sum = torch.zeros(n_states, dtype=torch.float64)
            correct = torch.zeros(n_states, dtype=torch.float64)
            kept = []
            classify = not y.is_floating_point()
            for lo, hi in batch_spans(x.shape[0], batch_size):
                logits = _forward(model, state, x[lo:hi], stacked)
                if not stacked:
                    logits = logits.unsqueeze(0)
                if keep_outputs:
                    kept.append(logits.detach().cpu())
                yb = y[lo:hi]
                flat_y = yb.unsqueeze(0).expand(n_states, *yb.shape).reshape(-1, *yb.shape[1:])
                losses = loss_fn(logits.reshape(-1, *logits.shape[2:]), flat_y).reshape(n_states, -1)
                loss_sum += losses.double().sum(1).cpu()
                if classify and logits.ndim == 3:  # (states, samples, classes): class scores
                    correct += (logits.argmax(-1) == yb).double().sum(1).cpu()
            n = x.shape[0]
            acc = (correct / n).cpu().numpy() if classify else np.full(n_states, np.nan)
            out[split] = _Scores((loss_sum / n).cpu().numpy(), acc, torch.cat(kept, 1) if keep_outputs else None)
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
    batch_size: int = EVAL_BATCH_SIZE,
) -> dict[str, tuple[float, float]]:
    """{split: (mean loss, accuracy)} of `state` in eval mode (accuracy NaN for float targets)."""
    _check_eval_sets(eval_sets)
    with _borrowed(model):
        res = _evaluate_in_place(model, state, eval_sets, loss_fn, batch_size, stacked=False, n_states=1)
    return {k: (float(s.losses[0]), float(s.accuracies[0])) for k, s in res.items()}


# --------------------------------------------------------------------------- the curve


def _point_state(model, state_a, state_b, t: float, bn: str, buffer_keys: set[str]) -> dict[str, Tensor]:
    state = interpolate_state(state_a, state_b, t)
    if bn == "frozen":
        near = state_a if t < NEARER_ENDPOINT_SWITCH else state_b
        state.update({k: near[k] for k in buffer_keys if k in near})
    return state


def _alpha_grid(n: int, alphas: Sequence[float] | None) -> np.ndarray:
    if alphas is None:
        if not isinstance(n, int) or n < 2:
            raise NetgeomError("interpolation.points", f"n must be an integer >= 2 (both endpoints), got {n!r}")
        return np.linspace(0.0, 1.0, n)
    ts = np.asarray(alphas, dtype=np.float64).reshape(-1)
    if ts.size < 1:
        raise NetgeomError("interpolation.points", "alphas must not be empty")
    return ts


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
    batch_size: int = EVAL_BATCH_SIZE,
    bn_batch_size: int = BN_BATCH_SIZE,
    bn_momentum: float | None = SEEDS_BN_MOMENTUM,
    bn_batches: int | None = None,
    points_per_pass: int = 1,
    alphas: Sequence[float] | None = None,
    memory_format: str = "auto",
    return_logits: bool = False,
    progress: bool | None = None,
) -> pd.DataFrame | tuple[pd.DataFrame, dict[str, Tensor]]:
    """Loss and accuracy at t in linspace(0, 1, n) on every evaluation set.

    Returns a long DataFrame with columns t, split, loss, accuracy (rows ordered by t, then by
    the order of `eval_sets`). `alphas` replaces the grid when given (any values; n ignored).
    `bn_momentum` and `bn_batches` set the "recompute_ema" protocol (see the module docstring)
    and are read by that mode only. With `return_logits=True` returns (curve, logits):
    logits[split] is the network's output for every sample of that split at every point,
    shape (points, samples, *output shape), points in the order of the curve's t.
    `progress`: a bar over the points (None: see `netgeom.progress.shows_progress`; False: none).
    """
    check_same_architecture(state_a, state_b)
    check_model_state(model, state_a)
    _check_eval_sets(eval_sets)
    _choice(bn, BN_MODES, "interpolation.bn")
    _choice(endpoints, ENDPOINT_MODES, "interpolation.endpoints")
    _choice(memory_format, MEMORY_FORMATS, "interpolation.memory_format")
    ts = _alpha_grid(n, alphas)
    if points_per_pass < 1:
        raise NetgeomError("points_per_pass", f"must be >= 1, got {points_per_pass}")
    protocol = recalibration_for(bn, bn_batch_size, bn_momentum, bn_batches)
    recompute = bn in RECOMPUTE_MODES and bool(bn_modules(model))
    if recompute:
        _check_calibration_inputs(calibration_inputs, f"bn={bn!r}")

    layout = preferred_format(memory_format, model, next(iter(eval_sets.values()))[0])
    if layout != torch.contiguous_format:
        state_a, state_b = state_in_format(state_a, layout), state_in_format(state_b, layout)
        eval_sets = {k: (in_format(x, layout), y) for k, (x, y) in eval_sets.items()}
        if recompute:
            calibration_inputs = in_format(calibration_inputs, layout)
    buffers = _buffer_keys(model)
    direct = [i for i, t in enumerate(ts) if recompute and endpoints == "direct" and t in (0.0, 1.0)]
    calibrated = [i for i in range(ts.size) if i not in direct]
    results: dict[int, dict[str, tuple]] = {}

    def keep(indices, scores: dict[str, _Scores]) -> None:
        for j, i in enumerate(indices):
            results[i] = {k: (s.losses[j], s.accuracies[j], None if s.outputs is None else s.outputs[j]) for k, s in scores.items()}

    with _borrowed(model):
        for i in direct:  # endpoints with their own stored statistics
            state = state_a if ts[i] == 0.0 else state_b
            keep([i], _evaluate_in_place(model, state, eval_sets, loss_fn, batch_size, False, 1, return_logits))
        chunks = [calibrated[j : j + points_per_pass] for j in range(0, len(calibrated), points_per_pass)]
        for chunk in progress_bar(chunks, desc="interpolation", total=len(chunks), enabled=progress):
            states = [_point_state(model, state_a, state_b, float(ts[i]), bn, buffers) for i in chunk]
            stacked = len(states) > 1
            state = {k: torch.stack([s[k] for s in states]) for k in states[0]} if stacked else states[0]
            if recompute:
                stack = len(states) if stacked else None
                state = _with_endpoint_bn_stats(model, state, state_a, stack) if bn == "endpoint_ema" else _with_fresh_bn_stats(model, state, stack)
                _recalibrate_in_place(model, state, calibration_inputs, protocol, stacked)
            keep(chunk, _evaluate_in_place(model, state, eval_sets, loss_fn, batch_size, stacked, len(states), return_logits))
    rows = [
        {"t": float(ts[i]), "split": split, "loss": float(loss), "accuracy": float(acc)}
        for i in range(ts.size)
        for split, (loss, acc, _) in results[i].items()
    ]
    curve = pd.DataFrame(rows, columns=["t", "split", "loss", "accuracy"])
    if not return_logits:
        return curve
    return curve, {split: torch.stack([results[i][split][2] for i in range(ts.size)]) for split in eval_sets}


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
    """Curves from `repeats` fresh initialisations init_fn(r), r = 0..repeats-1, to the same theta_T
    (`curve_options`, `progress` included, go to `interpolation_curve`).

    `init_fn` owns the seeding (e.g. `lambda r: create_model(..., seed=r).state_dict()`). Returns
    the concatenated curves with an extra column `init` = r.
    """
    if repeats < 1:
        raise NetgeomError("repeats", f"must be >= 1, got {repeats}")
    if curve_options.get("return_logits"):
        raise NetgeomError("return_logits", "random_init_curves returns curves only; call interpolation_curve per init for logits")
    frames = [interpolation_curve(model, init_fn(r), state_T, eval_sets, **curve_options).assign(init=r) for r in range(repeats)]
    return pd.concat(frames, ignore_index=True)


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
    batch_size: int = EVAL_BATCH_SIZE,
    bn_batch_size: int = BN_BATCH_SIZE,
    bn_momentum: float | None = SEEDS_BN_MOMENTUM,
    bn_batches: int | None = None,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Loss and accuracy on a grid over the plane (columns x, y, split, loss, accuracy).

    The grid covers the plane's three points (and `trajectory` coordinates, e.g. from
    `project_onto_plane`) with a margin. Non-weight entries come from `buffers_from` (usually
    theta_T); with bn="recompute" (or "recompute_ema") BN statistics are re-estimated at every
    grid point instead ("endpoint_ema": starting from `buffers_from`'s). `progress` as
    `interpolation_curve`.
    """
    _choice(bn, ("frozen", *RECOMPUTE_MODES), "interpolation.bn")
    check_model_state(model, buffers_from)
    _check_eval_sets(eval_sets)
    protocol = recalibration_for(bn, bn_batch_size, bn_momentum, bn_batches)
    recompute = bn in RECOMPUTE_MODES and bool(bn_modules(model))
    if recompute:
        _check_calibration_inputs(calibration_inputs, f"bn={bn!r}")
    xs, ys = plane_grid(plane, resolution, margin, trajectory)
    rows = []
    with _borrowed(model):
        grid = [(x, y) for y in ys for x in xs]
        for x, y in progress_bar(grid, desc="plane", total=len(grid), enabled=progress):
            state = plane_point(plane, float(x), float(y), like=buffers_from)
            if recompute:
                state = _with_endpoint_bn_stats(model, state, buffers_from) if bn == "endpoint_ema" else _with_fresh_bn_stats(model, state)
                _recalibrate_in_place(model, state, calibration_inputs, protocol, stacked=False)
            res = _evaluate_in_place(model, state, eval_sets, loss_fn, batch_size, False, 1)
            rows += [{"x": float(x), "y": float(y), "split": k, "loss": float(s.losses[0]), "accuracy": float(s.accuracies[0])} for k, s in res.items()]
    return pd.DataFrame(rows, columns=["x", "y", "split", "loss", "accuracy"])
