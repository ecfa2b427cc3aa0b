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
- `sign_pvalue`: exact two-sided sign test (scipy.stats.binomtest, p = 1/2) on the number of
  positive projections among the non-zero ones (ties dropped, the usual sign-test convention).
- `shift_pvalue`: two-sided Mann-Whitney U test (scipy.stats.mannwhitneyu) of the normalised
  projections against the same layer's at init, with `shift_auc` = U / (n n0), the probability
  that a trained projection exceeds an init one (0.5 = no shift). Mann-Whitney rather than
  Kolmogorov-Smirnov because the question is a *location* shift towards the diagonal: KS also
  fires when training only widens or narrows a still-symmetric distribution, which is not bias.
  The samples are the same filters at two times, so they are not independent; the p-value is a
  guide, not an exact level.
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
from dataclasses import dataclass

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


def hyperplane_layers(model: nn.Module, with_linear: bool = False) -> list[HyperplaneLayer]:
    """The analysed layers of `model` in forward order with their (stage, block) keys."""
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


# --------------------------------------------------------------------------- projections


def filter_projections(weight: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(raw, normalised) projections of each row of `weight` (N, ...) on the all-ones direction."""
    rows = weight.detach().to("cpu", torch.float64).reshape(weight.shape[0], -1)
    raw = rows.sum(dim=1)
    scale = rows.norm(dim=1) * rows.shape[1] ** 0.5
    # A zero filter has no direction; 0 keeps it on the "not positive" side, as its raw sum is.
    normalised = torch.where(scale > 0, raw / torch.where(scale > 0, scale, 1.0), 0.0)
    return raw.cpu().numpy(), normalised.cpu().numpy()


def negative_mass(p: np.ndarray) -> float:
    """Fraction of projections <= 0 (the ECDF at 0, right-continuous: zeros are negative)."""
    return float(np.mean(p <= 0)) if len(p) else float("nan")


def sign_test_pvalue(p: np.ndarray) -> float:
    """Exact two-sided sign test of P(p > 0) = 1/2, zeros dropped; NaN when all are zero."""
    positive, nonzero = int(np.sum(p > 0)), int(np.sum(p != 0))
    from scipy.stats import binomtest  # imported on use: scipy.stats costs ~1 s per process

    return float(binomtest(positive, nonzero, 0.5).pvalue) if nonzero else float("nan")


def shift_test(p: np.ndarray, p0: np.ndarray) -> tuple[float, float]:
    """(AUC = U / (n n0), two-sided Mann-Whitney p-value) of `p` against the init sample `p0`."""
    from scipy.stats import mannwhitneyu  # imported on use: scipy.stats costs ~1 s per process

    result = mannwhitneyu(p, p0, alternative="two-sided")
    return float(result.statistic) / (len(p) * len(p0)), float(result.pvalue)


def init_distances(weight: Tensor, weight0: Tensor) -> tuple[float, float]:
    """(||W - W0||_F / ||W0||_F, max|W - W0| / max|W0|); inf when W0 is all zeros and W is not."""
    w = weight.detach().to("cpu", torch.float64)
    w0 = weight0.detach().to("cpu", torch.float64)
    diff = w - w0
    return _ratio(diff.norm().item(), w0.norm().item()), _ratio(diff.abs().max().item(), w0.abs().max().item())


def _ratio(a: float, b: float) -> float:
    if b > 0:
        return a / b
    return 0.0 if a == 0 else float("inf")


def _weight(state: StateDict, layer: HyperplaneLayer, what: str) -> Tensor:
    key = f"{layer.name}.weight"
    if key not in state:
        raise NetgeomError("hyperplanes.checkpoint", f"the {what} state dict has no {key!r} (is it from another architecture?)")
    return state[key]


def _statistics(raw: np.ndarray, normalised: np.ndarray) -> dict:
    return {
        "mean": float(normalised.mean()),
        "mean_raw": float(raw.mean()),
        "mass": negative_mass(normalised),
        "positive": int(np.sum(normalised > 0)),
        "zero": int(np.sum(raw == 0)),
        "sign_pvalue": sign_test_pvalue(normalised),
    }


def _init_statistics(normalised: np.ndarray, normalised0: np.ndarray, distances: tuple[float, float]) -> dict:
    auc, pvalue = shift_test(normalised, normalised0)
    return {
        "init_mean": float(normalised0.mean()),
        "init_mass": negative_mass(normalised0),
        "distance_fro": distances[0],
        "distance_max": distances[1],
        "shift_auc": auc,
        "shift_pvalue": pvalue,
    }


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
    rows = []
    for layer in hyperplane_layers(model, with_linear):
        weight = _weight(state, layer, "given")
        raw, normalised = filter_projections(weight)
        row = {"layer": layer.name, "kind": layer.kind, "stage": layer.stage, "block": layer.block,
               "filters": int(weight.shape[0]), "fan_in": int(weight[0].numel()), **_statistics(raw, normalised)}  # fmt: skip
        if init_state is not None:
            weight0 = _weight(init_state, layer, "init")
            row |= _init_statistics(normalised, filter_projections(weight0)[1], init_distances(weight, weight0))
        rows.append(row)
    return pd.DataFrame(rows, columns=LAYER_COLUMNS + STAT_COLUMNS + (INIT_COLUMNS if init_state is not None else []))


def network_statistics(model: nn.Module, state: StateDict, init_state: StateDict | None = None, with_linear: bool = False) -> pd.DataFrame:
    """One row pooling every analysed filter: layers, filters, then the columns of
    `layer_statistics` from `mean` on (distances over all analysed weights as one vector)."""
    layers = hyperplane_layers(model, with_linear)
    weights = [_weight(state, layer, "given") for layer in layers]
    raw, normalised = (np.concatenate(parts) for parts in zip(*(filter_projections(w) for w in weights)))
    row = {"layers": len(layers), "filters": len(raw), **_statistics(raw, normalised)}
    if init_state is not None:
        weights0 = [_weight(init_state, layer, "init") for layer in layers]
        normalised0 = np.concatenate([filter_projections(w)[1] for w in weights0])
        flat, flat0 = (torch.cat([w.detach().reshape(-1).double() for w in ws]) for ws in (weights, weights0))
        row |= _init_statistics(normalised, normalised0, init_distances(flat, flat0))
    return pd.DataFrame([row], columns=["layers", "filters"] + STAT_COLUMNS + (INIT_COLUMNS if init_state is not None else []))


def _check_checkpoints(checkpoints: Mapping[int, StateDict], init_epoch: int | None) -> int:
    if not checkpoints:
        raise NetgeomError("hyperplanes.checkpoints", "no checkpoint given")
    if init_epoch is None:
        return min(checkpoints)
    if init_epoch not in checkpoints:
        raise NetgeomError("hyperplanes.init_epoch", f"no checkpoint at epoch {init_epoch}; have {sorted(checkpoints)}")
    return init_epoch


def hyperplane_evolution(
    model: nn.Module, checkpoints: Mapping[int, StateDict], init_epoch: int | None = None, with_linear: bool = False
) -> pd.DataFrame:
    """`layer_statistics` of every checkpoint {epoch: state} against the one at `init_epoch`
    (default: the earliest), stacked: an `epoch` column first, rows by epoch then forward order."""
    init = checkpoints[_check_checkpoints(checkpoints, init_epoch)]
    frames = [layer_statistics(model, checkpoints[e], init, with_linear).assign(epoch=e) for e in sorted(checkpoints)]
    table = pd.concat(frames, ignore_index=True)
    return table[["epoch"] + [c for c in table.columns if c != "epoch"]]


def network_evolution(
    model: nn.Module, checkpoints: Mapping[int, StateDict], init_epoch: int | None = None, with_linear: bool = False
) -> pd.DataFrame:
    """`network_statistics` of every checkpoint, one row per epoch (an `epoch` column first)."""
    init = checkpoints[_check_checkpoints(checkpoints, init_epoch)]
    frames = [network_statistics(model, checkpoints[e], init, with_linear).assign(epoch=e) for e in sorted(checkpoints)]
    table = pd.concat(frames, ignore_index=True)
    return table[["epoch"] + [c for c in table.columns if c != "epoch"]]
