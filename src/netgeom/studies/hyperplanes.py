"""Hyperplane arrangements of trained conv nets: are filters biased towards the diagonal?

Weights only, no data. A conv layer with weight (N, C, k...) draws N hyperplanes in its
D = C*prod(k) dimensional input-patch space; filter row w_i (biases ignored) has

    raw projection         p_i = <w_i, 1_D>                   (the sum of the filter's weights)
    normalised projection  p_i = <w_i, 1_D> / (||w_i|| sqrt(D))  (cosine with the diagonal of the
                                                                positive orthant, where post-ReLU
                                                                inputs live; 0 for a zero filter)

Per layer: `mean` of the normalised projections (`mean_raw` of the raw ones) and `mass`, the
fraction with p_i <= 0 (a right-continuous ECDF at 0: exact zeros count as negative; 0.5 means
unbiased). Raw and normalised projections share their sign, so `mass` is one number. The
network-level row pools every analysed filter.

Symmetry tests (p-values per layer and pooled):
- `sign_pvalue`: exact two-sided sign test (scipy.stats.binomtest's p-value, p = 1/2) on the
  number of positive projections among the non-zero ones (ties dropped, the usual sign-test
  convention).
- `shift_pvalue`: two-sided Mann-Whitney U test (scipy.stats.mannwhitneyu's p-value) of the normalised
  projections against the same layer's at init, with `shift_auc` = U / (n n0), the probability
  that a trained projection exceeds an init one (0.5 = no shift). Mann-Whitney rather than
  Kolmogorov-Smirnov because the question is a *location* shift towards the diagonal: KS also
  fires when training only widens or narrows a still-symmetric distribution, which is not bias.
  The samples are the same filters at two times, so they are not independent; the p-value is a
  guide, not an exact level.
  Both tests are computed for every checkpoint of a layer at once (scipy's formulas: the exact
  binomial tail, the exact U distribution for samples of at most 8, else the normal approximation
  with continuity and tie corrections); the tests check them against scipy's own functions.
- With an init snapshot: `distance_fro` = ||W - W0||_F / ||W0||_F, `distance_max` =
  max|W - W0| / max|W0| (weights only, like the projections).

Which layers: every Conv1d/2d/3d except those whose kernel is all ones (1x1 convs: a single
pixel, no patch); nn.Linear only with `with_linear=True` (its rows are hyperplanes in the input
space of the layer). Each layer is keyed by its module path and the seed's (stage, block):
stage = number of max-pools before the layer, block = its index among the analysed layers of
its stage, both in forward order. The order comes from a torch.fx trace, not from module
registration order: the trace follows what forward() really does (a model may register modules
in any order, and call F.max_pool2d without a module), and stage is the largest number of
max-pools (nn.MaxPool*d modules or F.max_pool*d calls) on any path from the input to the
layer, which for chains (VGG, AlexNet, vgg8_maxpool, lenet) and residual nets is simply every
max-pool run before it. A module called twice is placed at its first call. A model that fx
cannot trace falls back to registration order (correct for nn.Sequential nets, which is how
torchvision VGG/AlexNet and the zoo's vgg8_maxpool/lenet are built anyway).
"""

from __future__ import annotations

from collections.abc import Mapping
import weakref
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd
import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from netgeom.errors import NetgeomError

StateDict = Mapping[str, Tensor]

_MAX_POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_MAX_POOL_FUNCTIONS = {
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.max_pool1d_with_indices, F.max_pool2d_with_indices,
    F.max_pool3d_with_indices, torch.max_pool1d, torch.max_pool2d, torch.max_pool3d,
}  # fmt: skip

LAYER_COLUMNS = ["layer", "kind", "stage", "block", "filters", "fan_in"]
STAT_COLUMNS = ["mean", "mean_raw", "mass", "positive", "zero", "sign_pvalue"]
INIT_COLUMNS = ["init_mean", "init_mass", "distance_fro", "distance_max", "shift_auc", "shift_pvalue"]


@dataclass(frozen=True)
class HyperplaneLayer:
    """An analysed layer: module path, 'conv' or 'linear', and the seed's (stage, block) key."""

    name: str
    kind: str
    stage: int
    block: int


def is_conv(module: nn.Module) -> bool:
    """A (non-transposed) Conv1d/2d/3d."""
    return isinstance(module, _ConvNd) and not module.transposed


def is_pointwise_conv(module: nn.Module) -> bool:
    return is_conv(module) and all(k == 1 for k in module.kernel_size)


def _layer_kind(module: nn.Module, with_linear: bool) -> str | None:
    if is_conv(module) and not is_pointwise_conv(module):
        return "conv"
    if with_linear and isinstance(module, nn.Linear):
        return "linear"
    return None


def trace(model: nn.Module) -> torch.fx.GraphModule | None:
    """torch.fx trace of `model`, or None when its forward cannot be traced symbolically."""
    try:
        return torch.fx.symbolic_trace(model)
    except Exception:  # fx raises many types (TraceError, TypeError, ...) on data-dependent code
        return None


def _is_max_pool(node: torch.fx.Node, modules: Mapping[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _MAX_POOL_MODULES)
    return node.op == "call_function" and node.target in _MAX_POOL_FUNCTIONS


def _layers_in_trace_order(gm: torch.fx.GraphModule) -> list[tuple[str, int]]:
    """(module path, max-pools on the longest path to it) for each called module, first call only."""
    modules = dict(gm.named_modules())
    pools_after: dict[torch.fx.Node, int] = {}  # max-pools on the longest path up to and including node
    seen: dict[str, int] = {}
    for node in gm.graph.nodes:
        before = max((pools_after[n] for n in node.all_input_nodes), default=0)
        pools_after[node] = before + _is_max_pool(node, modules)
        if node.op == "call_module" and node.target not in seen:
            seen[node.target] = before
    return list(seen.items())


def _layers_in_registration_order(model: nn.Module) -> list[tuple[str, int]]:
    out, pools = [], 0
    for name, module in model.named_modules():
        out.append((name, pools))
        pools += isinstance(module, _MAX_POOL_MODULES)
    return out


# The layer map is a property of the architecture, but fx tracing it costs more than every
# statistic of a small net: it is traced once per model object (a run's stage reuses one model
# for all its checkpoints) and forgotten with the model.
_LAYER_MAPS: weakref.WeakKeyDictionary[nn.Module, dict[bool, tuple[HyperplaneLayer, ...]]] = weakref.WeakKeyDictionary()


def hyperplane_layers(model: nn.Module, with_linear: bool = False) -> list[HyperplaneLayer]:
    """The analysed layers of `model` in forward order with their (stage, block) keys."""
    maps = _LAYER_MAPS.setdefault(model, {})
    if with_linear not in maps:
        maps[with_linear] = tuple(_find_layers(model, with_linear))
    return list(maps[with_linear])


def _find_layers(model: nn.Module, with_linear: bool) -> list[HyperplaneLayer]:
    gm = trace(model)
    ordered = _layers_in_trace_order(gm) if gm is not None else _layers_in_registration_order(model)
    modules = dict(model.named_modules())
    layers: list[HyperplaneLayer] = []
    blocks: dict[int, int] = {}
    for name, stage in ordered:
        kind = _layer_kind(modules[name], with_linear)
        if kind is None:
            continue
        layers.append(HyperplaneLayer(name, kind, stage, blocks.get(stage, 0)))
        blocks[stage] = blocks.get(stage, 0) + 1
    if not layers:
        hint = "" if with_linear else "; set with_linear to analyse its linear layers"
        raise NetgeomError("hyperplanes.with_linear", f"{type(model).__name__} has no conv layer with a kernel larger than 1{hint}")
    return layers


# --------------------------------------------------------------------------- projections and tests
# Everything below works on rows = checkpoints: one array operation per layer covers every
# checkpoint (a run has tens of them), which is what makes the tests affordable.


def filter_projections(weight: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(raw, normalised) projections of each row of `weight` (N, ...) on the all-ones direction."""
    raw, normalised = _stacked_projections(weight.unsqueeze(0))
    return raw[0], normalised[0]


def _stacked_projections(weights: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(raw, normalised), each (E, N), of E stacked weights (E, N, ...)."""
    rows = weights.detach().to("cpu", torch.float64).reshape(weights.shape[0], weights.shape[1], -1)
    raw = rows.sum(dim=-1)
    scale = torch.linalg.vector_norm(rows, dim=-1) * rows.shape[-1] ** 0.5
    # A zero filter has no direction; 0 keeps it on the "not positive" side, as its raw sum is.
    normalised = torch.where(scale > 0, raw / torch.where(scale > 0, scale, 1.0), 0.0)
    return raw.numpy(), normalised.numpy()


def negative_mass(p: np.ndarray) -> np.ndarray | float:
    """Fraction of projections <= 0 along the last axis (the ECDF at 0, right-continuous: zeros
    are negative)."""
    p = np.asarray(p)
    if p.shape[-1] == 0:
        return float("nan")
    mass = np.mean(p <= 0, axis=-1)
    return float(mass) if mass.ndim == 0 else mass


def sign_test_pvalue(p: np.ndarray) -> float:
    """Exact two-sided sign test of P(p > 0) = 1/2, zeros dropped; NaN when all are zero."""
    p = np.asarray(p)
    return float(sign_test_pvalues(np.sum(p > 0), np.sum(p != 0)))


def sign_test_pvalues(positive: np.ndarray, nonzero: np.ndarray) -> np.ndarray:
    """Two-sided exact binomial test of `positive` successes in `nonzero` trials at p = 1/2,
    elementwise: for p = 1/2 the two tails are mirror images, so scipy.stats.binomtest's p-value
    is 2 P(X <= min(k, n - k)), capped at 1 (the tests check the two against each other)."""
    from scipy.special import bdtr

    positive, nonzero = np.asarray(positive), np.asarray(nonzero)
    tail = np.minimum(positive, nonzero - positive)
    with np.errstate(invalid="ignore"):
        p = np.minimum(1.0, 2.0 * bdtr(tail, np.maximum(nonzero, 1), 0.5))
    p = np.where(2 * positive == nonzero, 1.0, p)
    return np.where(nonzero > 0, p, np.nan)


def shift_test(p: np.ndarray, p0: np.ndarray) -> tuple[float, float]:
    """(AUC = U / (n n0), two-sided Mann-Whitney p-value) of `p` against the init sample `p0`."""
    auc, pvalue = shift_tests(np.asarray(p)[None], p0)
    return float(auc[0]), float(pvalue[0])


def shift_tests(p: np.ndarray, p0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row by row, scipy.stats.mannwhitneyu(row, p0, alternative="two-sided"): (AUC = U1 / (n n0),
    p-value), each (E,). U1 counts the pairs a trained projection wins (ties half); without ties
    and with both samples above 8 scipy uses the normal approximation with continuity
    correction, otherwise (a sample of at most 8) the exact null distribution: both computed
    here for every row at once. Rows with ties go to scipy itself (its tie-corrected test)."""
    from scipy.special import ndtr

    p, p0 = np.asarray(p, dtype=np.float64), np.sort(np.asarray(p0, dtype=np.float64))
    n1, n0 = p.shape[-1], len(p0)
    below, upto = np.searchsorted(p0, p, "left"), np.searchsorted(p0, p, "right")
    u1 = (below + upto).sum(axis=-1) / 2
    tied = (upto != below).any(axis=-1) | (np.diff(np.sort(p, axis=-1), axis=-1) == 0).any(axis=-1) | bool((np.diff(p0) == 0).any())
    u = np.maximum(u1, n1 * n0 - u1)
    # scipy's tie correction: sum of t^3 - t over the groups of equal values in both samples
    # (a checkpoint at the init ties everywhere); rows with ties always take the normal approximation
    ties = np.zeros(len(p))
    for row in np.flatnonzero(tied):
        counts = np.unique(np.concatenate([p[row], p0]), return_counts=True)[1].astype(np.float64)
        ties[row] = np.sum(counts**3 - counts)
    n = n1 + n0
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (u - n1 * n0 / 2 - 0.5) / np.sqrt(n1 * n0 / 12 * ((n + 1) - ties / (n * (n - 1))))
    pvalue = np.clip(2 * ndtr(-z), 0.0, 1.0)
    if min(n1, n0) <= 8:
        exact = np.minimum(1.0, 2 * _exact_mwu_tail(n1, n0)[np.where(tied, 0, u).astype(int)])
        pvalue = np.where(tied, pvalue, exact)
    return u1 / (n1 * n0), pvalue


@cache
def _exact_mwu_tail(n1: int, n0: int) -> np.ndarray:
    """P(U >= u), u = 0 .. n1 n0, for samples of n1 and n0 without ties under the null: the
    counts of the orderings with statistic u follow f(m, n) = f(m - 1, n) shifted by n, plus
    f(m, n - 1) (the largest value belongs to the first sample or to the second)."""
    counts = {(0, n): np.ones(1) for n in range(n0 + 1)} | {(m, 0): np.ones(1) for m in range(n1 + 1)}
    for m in range(1, n1 + 1):
        for n in range(1, n0 + 1):
            f = np.zeros(m * n + 1)
            f[n : n + len(counts[m - 1, n])] += counts[m - 1, n]
            f[: len(counts[m, n - 1])] += counts[m, n - 1]
            counts[m, n] = f
    frequencies = counts[n1, n0]
    return np.cumsum(frequencies[::-1])[::-1] / frequencies.sum()


def init_distances(weight: Tensor, weight0: Tensor) -> tuple[float, float]:
    """(||W - W0||_F / ||W0||_F, max|W - W0| / max|W0|); inf when W0 is all zeros and W is not."""
    w = weight.detach().to("cpu", torch.float64)
    w0 = weight0.detach().to("cpu", torch.float64)
    diff = w - w0
    return _ratio(diff.norm().item(), w0.norm().item()), _ratio(diff.abs().max().item(), w0.abs().max().item())


def _ratio(a, b):
    """a / b elementwise; 0 where both are 0, inf where only b is."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(b > 0, a / np.where(b > 0, b, 1.0), np.where(a == 0, 0.0, np.inf))
    return float(out) if out.ndim == 0 else out


def _weight(state: StateDict, layer: HyperplaneLayer, what: str) -> Tensor:
    key = f"{layer.name}.weight"
    if key not in state:
        raise NetgeomError("hyperplanes.checkpoint", f"the {what} state dict has no {key!r} (is it from another architecture?)")
    return state[key]


def _statistics(raw: np.ndarray, normalised: np.ndarray) -> dict[str, np.ndarray]:
    positive = np.sum(normalised > 0, axis=-1)
    return {
        "mean": normalised.mean(axis=-1),
        "mean_raw": raw.mean(axis=-1),
        "mass": negative_mass(normalised),
        "positive": positive,
        "zero": np.sum(raw == 0, axis=-1),
        "sign_pvalue": sign_test_pvalues(positive, np.sum(normalised != 0, axis=-1)),
    }


def _init_statistics(normalised: np.ndarray, normalised0: np.ndarray) -> dict[str, np.ndarray]:
    auc, pvalue = shift_tests(normalised, normalised0)
    rows = len(normalised)
    return {"init_mean": np.full(rows, normalised0.mean()), "init_mass": np.full(rows, negative_mass(normalised0)), "shift_auc": auc, "shift_pvalue": pvalue}


# Checkpoints are stacked per layer up to this many bytes (float64): a VGG's 100M-weight linear
# layer is then taken one checkpoint at a time, a LeNet's layers all at once.
STACK_BYTES = 64 * 2**20


@dataclass
class _LayerArrays:
    """One layer at every checkpoint: projections (E, N) and, against the init, the init's own
    normalised projections (N,), the squared Frobenius distance, the largest entry of |W - W0|
    (E,) and the init's norms."""

    raw: np.ndarray
    normalised: np.ndarray
    normalised0: np.ndarray | None = None
    sq_distance: np.ndarray | None = None
    max_distance: np.ndarray | None = None
    sq_norm0: float = 0.0
    max0: float = 0.0


def _layer_arrays(weights: list[Tensor], weight0: Tensor | None) -> _LayerArrays:
    per_stack = max(1, STACK_BYTES // max(1, weights[0].numel() * 8))
    raws, normals, squares, maxima = [], [], [], []
    w0 = None if weight0 is None else weight0.detach().to("cpu", torch.float64)
    for start in range(0, len(weights), per_stack):
        chunk = weights[start : start + per_stack]
        stack = torch.empty((len(chunk), *chunk[0].shape), dtype=torch.float64)
        for slot, w in zip(stack, chunk):
            slot.copy_(w.detach())  # converts while copying: no float32 stack in between
        raw, normalised = _stacked_projections(stack)
        raws.append(raw)
        normals.append(normalised)
        if w0 is not None:
            diff = stack.sub_(w0).flatten(1)  # the stack is not needed after its projections
            squares.append(torch.linalg.vector_norm(diff, dim=1).numpy() ** 2)
            maxima.append(torch.maximum(diff.amax(dim=1), -diff.amin(dim=1)).numpy())  # max |diff|, the fastest way here
    arrays = _LayerArrays(np.concatenate(raws), np.concatenate(normals))
    if w0 is not None:
        arrays.sq_distance, arrays.max_distance = np.concatenate(squares), np.concatenate(maxima)
        arrays.sq_norm0, arrays.max0 = float(torch.linalg.vector_norm(w0)) ** 2, float(w0.abs().max())
        arrays.normalised0 = _stacked_projections(w0.unsqueeze(0))[1][0]
    return arrays


def _tables(
    model: nn.Module, states: list[StateDict], init_state: StateDict | None, with_linear: bool, epochs: list[int] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-layer table, pooled table) with rows = `states` in order (layers in forward order
    within a state), led by an `epoch` column when `epochs` names the states."""
    layers = hyperplane_layers(model, with_linear)
    arrays = [
        _layer_arrays([_weight(s, layer, "given") for s in states], None if init_state is None else _weight(init_state, layer, "init"))
        for layer in layers
    ]
    columns: dict[str, list[np.ndarray]] = {}
    for layer, a in zip(layers, arrays):
        weight = _weight(states[0], layer, "given")
        part = {"layer": np.full(len(states), layer.name, dtype=object), "kind": np.full(len(states), layer.kind, dtype=object),
                "stage": np.full(len(states), layer.stage), "block": np.full(len(states), layer.block),
                "filters": np.full(len(states), int(weight.shape[0])), "fan_in": np.full(len(states), int(weight[0].numel())),
                **_statistics(a.raw, a.normalised)}  # fmt: skip
        if init_state is not None:
            part |= _init_statistics(a.normalised, a.normalised0)
            part["distance_fro"] = _ratio(np.sqrt(a.sq_distance), np.sqrt(a.sq_norm0))
            part["distance_max"] = _ratio(a.max_distance, a.max0)
        for key, values in part.items():
            columns.setdefault(key, []).append(values)
    # rows by state, then forward order: interleave the per-layer columns
    order = LAYER_COLUMNS + STAT_COLUMNS + (INIT_COLUMNS if init_state is not None else [])
    lead = {} if epochs is None else {"epoch": np.repeat(np.asarray(epochs), len(layers))}
    per_layer = pd.DataFrame(lead | {key: np.stack(columns[key], axis=1).reshape(-1) for key in order})
    raw = np.concatenate([a.raw for a in arrays], axis=1)
    normalised = np.concatenate([a.normalised for a in arrays], axis=1)
    pooled = {"layers": np.full(len(states), len(layers)), "filters": np.full(len(states), raw.shape[1]), **_statistics(raw, normalised)}
    if init_state is not None:
        pooled |= _init_statistics(normalised, np.concatenate([a.normalised0 for a in arrays]))
        # the distances of all analysed weights as one vector
        pooled["distance_fro"] = _ratio(np.sqrt(sum(a.sq_distance for a in arrays)), np.sqrt(sum(a.sq_norm0 for a in arrays)))
        pooled["distance_max"] = _ratio(np.max([a.max_distance for a in arrays], axis=0), max(a.max0 for a in arrays))
    lead = {} if epochs is None else {"epoch": np.asarray(epochs)}
    network = pd.DataFrame(lead | {key: pooled[key] for key in ["layers", "filters"] + STAT_COLUMNS + (INIT_COLUMNS if init_state is not None else [])})
    return per_layer, network


# --------------------------------------------------------------------------- tables


def projection_table(model: nn.Module, state: StateDict, with_linear: bool = False) -> pd.DataFrame:
    """One row per filter: layer, kind, stage, block, filter (row index), raw, normalised."""
    frames = []
    for layer in hyperplane_layers(model, with_linear):
        raw, normalised = filter_projections(_weight(state, layer, "given"))
        frames.append(pd.DataFrame({
            "layer": layer.name, "kind": layer.kind, "stage": layer.stage, "block": layer.block,
            "filter": np.arange(len(raw)), "raw": raw, "normalised": normalised,
        }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def layer_statistics(model: nn.Module, state: StateDict, init_state: StateDict | None = None, with_linear: bool = False) -> pd.DataFrame:
    """One row per analysed layer, in forward order.

    Columns: layer (module path), kind ('conv'/'linear'), stage, block, filters (N), fan_in (D),
    mean (normalised), mean_raw, mass (fraction <= 0), positive (count > 0), zero (count == 0),
    sign_pvalue; with `init_state` also init_mean, init_mass, distance_fro, distance_max,
    shift_auc, shift_pvalue (see the module docstring).
    """
    return _tables(model, [state], init_state, with_linear)[0]


def network_statistics(model: nn.Module, state: StateDict, init_state: StateDict | None = None, with_linear: bool = False) -> pd.DataFrame:
    """One row pooling every analysed filter: layers, filters, then the columns of
    `layer_statistics` from `mean` on (distances over all analysed weights as one vector)."""
    return _tables(model, [state], init_state, with_linear)[1]


def _check_checkpoints(checkpoints: Mapping[int, StateDict], init_epoch: int | None) -> int:
    if not checkpoints:
        raise NetgeomError("hyperplanes.checkpoints", "no checkpoint given")
    if init_epoch is None:
        return min(checkpoints)
    if init_epoch not in checkpoints:
        raise NetgeomError("hyperplanes.init_epoch", f"no checkpoint at epoch {init_epoch}; have {sorted(checkpoints)}")
    return init_epoch


def evolution_tables(
    model: nn.Module, checkpoints: Mapping[int, StateDict], init_epoch: int | None = None, with_linear: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(`hyperplane_evolution`, `network_evolution`) from one pass over the checkpoints."""
    init = checkpoints[_check_checkpoints(checkpoints, init_epoch)]
    epochs = sorted(checkpoints)
    return _tables(model, [checkpoints[e] for e in epochs], init, with_linear, epochs)


def hyperplane_evolution(
    model: nn.Module, checkpoints: Mapping[int, StateDict], init_epoch: int | None = None, with_linear: bool = False
) -> pd.DataFrame:
    """`layer_statistics` of every checkpoint {epoch: state} against the one at `init_epoch`
    (default: the earliest), stacked: an `epoch` column first, rows by epoch then forward order."""
    return evolution_tables(model, checkpoints, init_epoch, with_linear)[0]


def network_evolution(
    model: nn.Module, checkpoints: Mapping[int, StateDict], init_epoch: int | None = None, with_linear: bool = False
) -> pd.DataFrame:
    """`network_statistics` of every checkpoint, one row per epoch (an `epoch` column first)."""
    return evolution_tables(model, checkpoints, init_epoch, with_linear)[1]
