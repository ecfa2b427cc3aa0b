"""The star domain (starlight seed): train one model theta* that is linearly connected to many.

Star training: each minibatch draws one anchor n of N trained source models and one t, and
descends the cross-entropy at (1 - t) theta* + t theta_n (BN in train mode), updating theta*
only; the gradient therefore carries the factor (1 - t). An optional mu * CE(theta*) term keeps
theta* itself a good model. The module passed in is a template for `torch.func.functional_call`;
anchors are constant tensors.

BN running statistics during star training: the interpolated forward pass runs with the star's
own BN buffers, so train-mode BN updates them exactly as regular training would (at t = 0 star
training *is* regular training, buffers included, bit for bit). For t > 0 they average batch
statistics of interpolated networks, not of theta*: they never enter the loss (train-mode BN
normalises with batch statistics), so the trajectory of theta* does not depend on them, but they
are meaningless for evaluation. `refresh_bn_statistics` therefore replaces them, in place, by the
exact statistics of theta* on a fixed subset of training inputs before every evaluation and
checkpoint; it draws no random numbers, so resuming stays bit-exact.

Sampling draws from the caller's torch.Generator (the training loop's one generator), and only
for real choices: nothing for the anchor when N = 1, nothing for t when it is constant.

Hypothesis test: star <-> held-out barriers against regular <-> regular barriers (mean +- std per
group and a one-sided Mann-Whitney U test), and barrier against the number of anchors (stars
trained on the first 1, 2, 4, ..., N anchors).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from netgeom.errors import NetgeomError
from netgeom.studies.interpolation import bn_modules, check_same_architecture, recalibrate_bn

StateDict = Mapping[str, Tensor]

T_DISTRIBUTIONS = ("uniform", "beta", "constant")
CONSTANT_T = 0.5


# --------------------------------------------------------------------------- validation


def check_anchor_count(n_anchors: int) -> int:
    if isinstance(n_anchors, bool) or not isinstance(n_anchors, int) or n_anchors < 1:
        raise NetgeomError("star.anchors", f"must be an integer >= 1 (number of source models), got {n_anchors!r}")
    return n_anchors


def check_held_out_count(n_held_out: int) -> int:
    if isinstance(n_held_out, bool) or not isinstance(n_held_out, int) or n_held_out < 2:
        raise NetgeomError(
            "star.held_out", f"must be an integer >= 2 (regular <-> regular pairs need two), got {n_held_out!r}"
        )
    return n_held_out


def check_t_distribution(name: str) -> str:
    if name not in T_DISTRIBUTIONS:
        raise NetgeomError("star.t", f"unknown t distribution {name!r}; allowed: {', '.join(T_DISTRIBUTIONS)}")
    return name


def check_mu(mu: float) -> float:
    if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not math.isfinite(mu) or mu < 0:
        raise NetgeomError("star.mu", f"must be a finite number >= 0 (0 = no CE(theta*) term), got {mu!r}")
    return float(mu)


def check_anchor_architectures(states: Sequence[StateDict]) -> None:
    """Every anchor has the first one's keys (architecture) and shapes (width)."""
    if len(states) < 1:
        raise NetgeomError("star.anchors", "needs at least one anchor state dict")
    for i, state in enumerate(states[1:], start=1):
        try:
            check_same_architecture(states[0], state, key="star.anchors")
        except NetgeomError as err:
            raise NetgeomError("star.anchors", f"anchor {i} differs from anchor 0: {err.problem}") from None


def check_held_out_disjoint(anchor_ids: Iterable[Hashable], held_out_ids: Iterable[Hashable]) -> None:
    """Held-out models (seeds, run names) are never among the anchors: the test is on unseen models."""
    shared = set(anchor_ids) & set(held_out_ids)
    if shared:
        raise NetgeomError(
            "star.held_out", f"held-out models must not be anchors; shared: {sorted(shared, key=str)[:5]}"
        )


def validate_star_settings(n_anchors: int, n_held_out: int, t_distribution: str, mu: float = 0.0) -> None:
    """The scalar settings of a star study, each checked under its params key."""
    check_anchor_count(n_anchors)
    check_held_out_count(n_held_out)
    check_t_distribution(t_distribution)
    check_mu(mu)


# --------------------------------------------------------------------------- sampling


def beta22_quantile(u: float) -> float:
    """Inverse CDF of Beta(2, 2): F(x) = 3x^2 - 2x^3 solved by the cubic's trigonometric root.

    One uniform per draw, monotone in u, and far cheaper per minibatch than scipy's ppf.
    """
    return 0.5 + math.sin(math.asin(2.0 * u - 1.0) / 3.0)


def draw_anchor_and_t(
    generator: torch.Generator, n_anchors: int, t_distribution: str, *, constant: float = CONSTANT_T
) -> tuple[int, float]:
    """One minibatch's (anchor index in [0, n_anchors), t), drawn from `generator`.

    Order: the anchor (randint; skipped when n_anchors == 1), then t (one float64 uniform u in
    [0, 1): "uniform" -> u, "beta" -> Beta(2, 2) by inverse CDF; "constant" draws nothing and
    returns `constant`). Skipping draws that cannot vary keeps N = 1 with a constant t from
    perturbing the generator, so such a run replays regular training's batches exactly.
    """
    check_anchor_count(n_anchors)
    check_t_distribution(t_distribution)
    anchor = int(torch.randint(n_anchors, (), generator=generator)) if n_anchors > 1 else 0
    if t_distribution == "constant":
        return anchor, float(constant)
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    return anchor, u if t_distribution == "uniform" else beta22_quantile(u)


# --------------------------------------------------------------------------- the objective


def realign_anchors(model: nn.Module, star_state: StateDict, anchors: Sequence[StateDict]) -> list[dict[str, Tensor]]:
    """Each anchor permuted onto the star by weight matching (the starlight seed's re-alignment,
    done every epoch): the same function, its weights as close to the star's as permutations get."""
    from netgeom.studies.alignment import apply_permutation, permutation_spec, weight_matching

    spec = permutation_spec(model)
    star = {k: v.detach().cpu() for k, v in star_state.items()}
    return [apply_permutation(spec, weight_matching(spec, star, anchor)[0], anchor) for anchor in anchors]


def anchor_parameters(model: nn.Module, state: StateDict) -> dict[str, Tensor]:
    """The anchor's parameters as constants laid out like the model's (dtype, device, strides).

    Call after the model is in its training memory format (channels-last): interpolating tensors
    of equal layout is a plain elementwise pass. Buffers are dropped: the star uses its own.
    """
    out = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name not in state:
                raise NetgeomError("star.anchors", f"anchor lacks parameter {name!r} (different architecture)")
            if state[name].shape != p.shape:
                raise NetgeomError(
                    "star.anchors", f"{name}: {tuple(state[name].shape)} vs the star's {tuple(p.shape)} (different width)"
                )
            out[name] = torch.empty_like(p, requires_grad=False).copy_(state[name])
    return out


def interpolated_parameters(star_params: StateDict, anchor: StateDict, t: float) -> dict[str, Tensor]:
    """(1 - t) theta* + t theta_n, differentiable in theta* only (exact theta* at t = 0, theta_n at t = 1)."""
    return {name: torch.lerp(p, anchor[name].detach(), t) for name, p in star_params.items()}


def star_objective(
    model: nn.Module, star_params: StateDict, anchor: StateDict, t: float, x: Tensor, y: Tensor, *, mu: float = 0.0,
    label_smoothing: float = 0.0, anti: bool = False,
) -> Tensor:
    """(CE at (1 - t) theta* + t theta_n  +  mu * CE(theta*)) / (1 + mu), in the model's current
    mode: the starlight seed's normalisation, so that mu reweights the two terms without scaling
    the step (the plain sum takes (1 + mu)x larger steps). At mu = 0 it is the first term alone.

    `model` is the functional template (its BN buffers are the ones train-mode BN updates, see
    the module docstring); `star_params` maps parameter names to theta* (usually the model's own
    live parameters); `anchor` maps the same names to theta_n (extra keys ignored). Both
    cross-entropies use `label_smoothing` (train.label_smoothing).

    `anti`: the anti-star control, (mu * CE(theta*) - CE at (1 - t) theta* + t theta_n) / (1 + mu):
    theta* stays a good model (mu > 0 is required: without it the objective only ascends) while
    the loss on its lines to the anchors is pushed up, i.e. the barrier maximised.
    """
    if anti and not mu > 0:
        raise NetgeomError("star.anti", f"needs star.mu > 0 (the anti-star's own cross-entropy keeps it a model), got mu={mu!r}")
    loss = F.cross_entropy(functional_call(model, interpolated_parameters(star_params, anchor, t), (x,)), y, label_smoothing=label_smoothing)
    if anti:
        loss = -loss
    if mu:
        own = F.cross_entropy(functional_call(model, dict(star_params), (x,)), y, label_smoothing=label_smoothing)
        loss = (loss + mu * own) / (1 + mu)
    return loss


def star_step(model: nn.Module, anchor: StateDict, t: float, x: Tensor, y: Tensor, *, mu: float = 0.0) -> float:
    """Backward of the star objective into `model`'s parameters (theta*); returns the loss value.

    Drop-in for `F.cross_entropy(model(x), y).backward()`: the caller zeroes the gradients, puts
    the model in train mode, checks the returned value is finite and steps its optimizer.
    `anchor` is best prepared once by `anchor_parameters`.
    """
    loss = star_objective(model, dict(model.named_parameters()), anchor, t, x, y, mu=mu)
    loss.backward()
    return loss.item()


def refresh_bn_statistics(model: nn.Module, inputs: Tensor, batch_size: int = 256) -> nn.Module:
    """Replace `model`'s BN running statistics, in place, by theta*'s own on `inputs`.

    The exact mean and size-weighted unbiased variance over `inputs` (see
    `netgeom.studies.interpolation.recalibrate_bn`), BN in train mode and everything else in eval
    mode, under no_grad; parameters and module flags are untouched. Pass a fixed, unaugmented
    subset of the training inputs: no random numbers are drawn. Models without BN are returned as is.
    """
    bns = bn_modules(model)
    if not bns:
        return model
    fresh = recalibrate_bn(model, model.state_dict(), inputs, batch_size)
    with torch.no_grad():
        for name, bn in bns.items():
            prefix = f"{name}." if name else ""
            bn.running_mean.copy_(fresh[prefix + "running_mean"])
            bn.running_var.copy_(fresh[prefix + "running_var"])
            bn.num_batches_tracked.copy_(fresh[prefix + "num_batches_tracked"])
    return model


# --------------------------------------------------------------------------- barrier vs anchors


def anchor_subset_sizes(n_anchors: int) -> list[int]:
    """1, 2, 4, ... below N, then N itself (power of two or not): the stars of the anchors figure."""
    check_anchor_count(n_anchors)
    return [1 << k for k in range(n_anchors.bit_length()) if 1 << k < n_anchors] + [n_anchors]


def anchor_subsets(anchors: Sequence) -> dict[int, list]:
    """{size: the first `size` anchors}: nested prefixes, so each larger star adds anchors only."""
    return {k: list(anchors[:k]) for k in anchor_subset_sizes(len(anchors))}


# --------------------------------------------------------------------------- hypothesis test


def _require_columns(table: pd.DataFrame, columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise NetgeomError("barriers", f"missing columns {missing}; has {list(table.columns)}")


def star_vs_regular_p_value(star_barriers, regular_barriers) -> float:
    """One-sided Mann-Whitney U p-value for "star barriers are smaller than regular ones".

    Compares barrier magnitudes |b|, so the test reads the same for loss barriers (>= 0) and
    accuracy barriers (<= 0, smaller drop = closer to 0). H1: |star| is stochastically smaller
    than |regular| (`alternative="less"`); scipy's default method (exact for small samples without
    ties, normal approximation otherwise). NaNs are dropped; NaN when either sample is empty.
    """
    star = np.abs(np.asarray(star_barriers, dtype=np.float64).reshape(-1))
    regular = np.abs(np.asarray(regular_barriers, dtype=np.float64).reshape(-1))
    star, regular = star[~np.isnan(star)], regular[~np.isnan(regular)]
    if star.size == 0 or regular.size == 0:
        return float("nan")
    from scipy.stats import mannwhitneyu  # imported on use: scipy.stats costs ~1 s per process

    return float(mannwhitneyu(star, regular, alternative="less").pvalue)


def barrier_statistics(
    table: pd.DataFrame, by: Sequence[str] = (), *, value: str = "barrier", kind: str = "kind"
) -> pd.DataFrame:
    """mean, std (sample, ddof=1; NaN for one value) and n of `value` per (*by, kind) group.

    `table` has one row per pair: `kind` names the population (e.g. "star" for star <-> held-out,
    "regular" for regular <-> regular), `value` the barrier, `by` any grouping (split, metric,
    matched, anchors, width). Signed values, as measured.
    """
    keys = [*by, kind]
    _require_columns(table, [*keys, value])
    grouped = table.groupby(keys, dropna=False, sort=True)[value]
    return grouped.agg(mean="mean", std="std", n="count").reset_index()


def hypothesis_test(
    table: pd.DataFrame,
    by: Sequence[str] = (),
    *,
    value: str = "barrier",
    kind: str = "kind",
    star: str = "star",
    regular: str = "regular",
) -> pd.DataFrame:
    """One row per `by` group: star_mean, star_std, star_n, regular_mean, regular_std, regular_n, p_value.

    Means and stds as in `barrier_statistics`; p_value from `star_vs_regular_p_value` (one-sided
    Mann-Whitney U on magnitudes, small p = star barriers smaller). A group missing one population
    gets NaN for it and for the p-value.
    """
    _require_columns(table, [*by, kind, value])
    groups = table.groupby(list(by), dropna=False, sort=True) if by else [((), table)]
    rows = []
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        samples = {name: part.loc[part[kind] == name, value].to_numpy(np.float64) for name in (star, regular)}
        row = dict(zip(by, key))
        for label, name in (("star", star), ("regular", regular)):
            s = pd.Series(samples[name])
            row.update({f"{label}_mean": s.mean(), f"{label}_std": s.std(), f"{label}_n": int(s.count())})
        row["p_value"] = star_vs_regular_p_value(samples[star], samples[regular])
        rows.append(row)
    columns = [*by] + [f"{p}_{s}" for p in ("star", "regular") for s in ("mean", "std", "n")] + ["p_value"]
    return pd.DataFrame(rows, columns=columns)


def ensemble_accuracy(models: Sequence[nn.Module], x: Tensor, y: Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy of the ensemble that averages the models' softmax probabilities (the
    starlight seed's baseline beside a star trained on the same anchors); models in eval mode."""
    if not models:
        raise NetgeomError("star.anchors", "an ensemble needs at least one model")
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            batch = x[i : i + batch_size]
            mean = torch.stack([F.softmax(model.eval()(batch).double(), dim=1) for model in models]).mean(dim=0)
            correct += int((mean.argmax(dim=1) == y[i : i + batch_size]).sum())
    return correct / len(x)
