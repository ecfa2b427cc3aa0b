"""Input-space smoothness of a classifier, per sample (the double-descent / Lipschitz seeds).

For logits f(x) in R^K and a target y, `normalization` picks the map g whose input Jacobian is
measured: crossentropy (g = CE(f(x), y), a scalar), logits (g = f), softmax, logsoftmax,
target_logit (g = f_y). Metrics:

* jacobian_frobenius: ||dg/dx||_F (for scalar g, the input-gradient norm: "loss sharpness").
* jacobian_operator: sigma_max(dg/dx) (its mean over a set is the "empirical Lipschitz constant").
* crossentropy, accuracy (0/1), confidence = ||onehot(y) - softmax(f(x))||_2.
* tangent_jacobian, tangent_hessian: the smoothness seed's colour-jitter ("tangent") metrics,
  T(x) = sqrt((1/4) sum_j ||(h(x) - h(x^(j))) / s_j||^2) over 4 ColorJitter variants x^(j) of x
  (`netgeom.studies.jitter`), with h = g for tangent_jacobian and h = dg/dx flattened for
  tangent_hessian; with the logits normalisation each h is unit-normalised first (as the seed).
  s_j = `tangent_step` = 0.1 (the seed's fixed step, the default) or, with "distance", the
  distance ||x - x^(j)|| between the standardised images. The jitter acts on the raw [0, 1]
  image (de-normalised with `channel_stats`, jittered, re-normalised), is drawn from a generator
  keyed by (tangent_seed, sample id, point of the volume) — never global random state — and
  needs 1- or 3-channel images: on 1-channel images only brightness and contrast change.

The Jacobian J (B, K, D) of a batch comes from K input-only vector-Jacobian products over the
whole batch (one autograd.grad per output, retain_graph between them, parameters frozen), the
fastest exact method on CPU; `backend="vmap"` uses torch.func.vmap(jacrev) instead (GPUs).
sigma_max is exact from the K x K Gram matrix J J^T via eigvalsh (`operator_method="gram"`), or
matrix-free by power iteration with jvp/vjp (`operator_method="power"`) when K is large; see
`operator_norm_power` for the accuracy its tolerance buys.

Per-sample rows of a batch must not interact, which holds in eval mode; the model is put in
eval mode (and its parameters frozen) for the computation and restored afterwards. Volumes
(`netgeom.studies.volumes`) integrate any metric over perturbed copies of each sample;
`compute_point_values` returns the values at every point before integration.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from netgeom.errors import NetgeomError
from netgeom.modes import eval_mode
from netgeom.progress import progress as progress_bar
from netgeom.studies.channels import ChannelStats
from netgeom.studies.jitter import VARIANTS, draw_jitter, jitter_images
from netgeom.studies.volumes import PointValues, Volume, perturb, segment_lengths

# g(logits, targets) -> (B, K') with K' = K, or 1 for the scalar normalisations.
NORMALIZATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "crossentropy": lambda logits, y: F.cross_entropy(logits, y, reduction="none").unsqueeze(1),
    "logits": lambda logits, y: logits,
    "softmax": lambda logits, y: logits.softmax(dim=1),
    "logsoftmax": lambda logits, y: logits.log_softmax(dim=1),
    "target_logit": lambda logits, y: logits.gather(1, y.unsqueeze(1)),
}
BACKENDS = ("vjp", "vmap")
OPERATOR_METHODS = ("gram", "power")
TANGENT_STEP = 0.1  # the seed's fixed divisor of h(x) - h(x^(j))


@dataclass(frozen=True)
class JacobianSettings:
    """How Jacobian metrics are computed (validated by `compute_metric`).

    operator_method: gram (exact, eigvalsh of J J^T) | power (matrix-free power iteration, at
    most power_iters steps, stopping once |sigma_k - sigma_{k-1}| <= power_tol * sigma_k).
    """

    normalization: str = "crossentropy"
    backend: str = "vjp"
    class_chunk: int | None = None
    operator_method: str = "gram"
    power_iters: int = 300
    power_tol: float = 1e-6


@dataclass(frozen=True)
class TangentSettings:
    """How the tangent metrics jitter: seed of the per-point generators, the divisor s_j
    (a number, or "distance"), and the dataset's normalisation constants."""

    seed: int = 0
    step: float | str = TANGENT_STEP
    channels: ChannelStats | None = None


@dataclass(frozen=True)
class Settings:
    """Everything a metric function reads besides the model and its inputs."""

    jacobian: JacobianSettings = JacobianSettings()
    tangent: TangentSettings = TangentSettings()


def choose_targets(labels, clean_labels, clean_targets: bool) -> torch.Tensor:
    """The labels that label-dependent metrics are evaluated against: the training (possibly
    noisy) labels, or the clean ones when the `clean_targets` flag is set."""
    chosen = clean_labels if clean_targets else labels
    if chosen is None:
        raise NetgeomError("smoothness.clean_targets", "clean_targets needs the clean labels")
    return torch.as_tensor(chosen, dtype=torch.int64)


# --------------------------------------------------------------------------- model state


@contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and requires_grad=False on every parameter, both restored on exit."""
    flags = [(param, param.requires_grad) for param in model.parameters()]
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        with eval_mode(model):
            yield model
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


# --------------------------------------------------------------------------- Jacobians


def _output_map(model: nn.Module, normalization: str, targets: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    g = NORMALIZATIONS[normalization]
    return lambda x: g(model(x), targets)


def _jacobian_vjp(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, class_chunk: int) -> torch.Tensor:
    """K input-only vjps over the whole batch; `class_chunk` > 1 batches that many one-hot
    cotangents into one vectorised call (is_grads_batched)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = fn(x)
    batch, classes = out.shape
    jac = out.new_empty(batch, classes, x[0].numel())  # filled row by row: no second copy of J
    for start in range(0, classes, class_chunk):
        stop = min(classes, start + class_chunk)
        cotangents = torch.zeros(stop - start, batch, classes, dtype=out.dtype, device=out.device)
        cotangents[torch.arange(stop - start), :, torch.arange(start, stop)] = 1.0
        retain = stop < classes
        if stop - start == 1:
            (grad,) = torch.autograd.grad(out, x, grad_outputs=cotangents[0], retain_graph=retain)
            jac[:, start] = grad.reshape(batch, -1)
        else:
            (grad,) = torch.autograd.grad(out, x, grad_outputs=cotangents, retain_graph=retain, is_grads_batched=True)
            jac[:, start:stop] = grad.reshape(stop - start, batch, -1).transpose(0, 1)
    return jac


def _jacobian_vmap(
    model: nn.Module, normalization: str, x: torch.Tensor, targets: torch.Tensor, class_chunk: int | None
) -> torch.Tensor:
    """torch.func.vmap over samples of jacrev over outputs (chunk_size = class_chunk)."""
    g = NORMALIZATIONS[normalization]

    def single(xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return g(model(xi.unsqueeze(0)), yi.unsqueeze(0)).squeeze(0)

    jac = torch.func.vmap(torch.func.jacrev(single, chunk_size=class_chunk))(x.detach(), targets)
    return jac.reshape(x.shape[0], jac.shape[1], -1)


def input_jacobian(
    model: nn.Module, x: torch.Tensor, targets: torch.Tensor, settings: JacobianSettings = JacobianSettings()
) -> torch.Tensor:
    """d g(f(x_b), y_b) / d x_b for every sample b, flattened: (B, K', D). Call inside
    `frozen_eval` (compute_metric does) so parameters get no gradient and rows stay independent."""
    if settings.backend == "vmap":
        return _jacobian_vmap(model, settings.normalization, x, targets, settings.class_chunk)
    fn = _output_map(model, settings.normalization, targets)
    return _jacobian_vjp(fn, x, settings.class_chunk or 1)


def operator_norm_from_gram(jac: torch.Tensor) -> torch.Tensor:
    """sigma_max of each (K, D) slice of jac, from the largest eigenvalue of the K x K Gram matrix."""
    if jac.shape[1] == 1:
        return torch.linalg.vector_norm(jac, dim=(1, 2))
    gram = jac @ jac.transpose(1, 2)
    return torch.linalg.eigvalsh(gram)[:, -1].clamp_min(0.0).sqrt()


def operator_norm_power(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, iters: int, tol: float) -> torch.Tensor:
    """Matrix-free sigma_max of d fn / dx per sample: power iteration on J^T J with one jvp and
    one vjp per step. Each sample stops on its own at the first step k with
    |sigma_k - sigma_{k-1}| <= tol * sigma_k (or after `iters` steps), so the result does not
    depend on which samples share the batch, nor on the scale of fn.

    Accuracy (relative error against the exact Gram method; 960 samples: 5 zoo models mlp, cnn_k,
    resnet18_k, vgg8, mnist1d-mlp x logits/softmax/logsoftmax x 64 random inputs): at the defaults
    tol 1e-6, iters 300, float32 models: median 5.1e-7, 99th percentile 9.3e-6, max 3.4e-5. The
    estimate is a Rayleigh quotient, so it errs low. A small change per step is not convergence
    when the two largest singular values are close: in float64 one sample of the 960 ((sigma_2 /
    sigma_1)^2 = 0.95) stopped 2.4% low on such a plateau at tol 1e-6 (all others within
    2.1e-5); tol 1e-8 brings every sample within 2.4e-7 (given 3000 iterations; 7.9e-7 capped at
    300). Prefer the exact `gram` method whenever the K x K Gram matrix fits."""
    x = x.detach()
    out, vjp_fn = torch.func.vjp(fn, x)
    batch, classes = out.shape
    if classes == 1:
        return torch.linalg.vector_norm(vjp_fn(torch.ones_like(out))[0].flatten(1), dim=1)
    # Start in the row space of J from one fixed output direction (the same for every sample,
    # deterministic); random rather than all-ones because softmax Jacobians annihilate ones.
    start = torch.randn(classes, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = vjp_fn(start.to(out).expand(batch, classes).contiguous())[0]
    sigma = torch.zeros(batch, dtype=out.dtype, device=out.device)
    done = torch.zeros(batch, dtype=torch.bool, device=out.device)
    tiny = torch.finfo(out.dtype).tiny
    view = (batch,) + (1,) * (x.dim() - 1)
    for _ in range(iters):
        v = v / torch.linalg.vector_norm(v.flatten(1), dim=1).clamp_min(tiny).view(view)
        _, jv = torch.func.jvp(fn, (x,), (v,))
        new_sigma = torch.linalg.vector_norm(jv, dim=1)
        converged = (new_sigma - sigma).abs() <= tol * new_sigma
        sigma = torch.where(done, sigma, new_sigma)
        done = done | converged
        if bool(done.all()):
            break
        v = vjp_fn(jv)[0]
    return sigma


# --------------------------------------------------------------------------- metrics


def _jacobian_frobenius(model, x, y, keys, settings: Settings) -> torch.Tensor:
    return torch.linalg.vector_norm(input_jacobian(model, x, y, settings.jacobian), dim=(1, 2))


def _jacobian_operator(model, x, y, keys, settings: Settings) -> torch.Tensor:
    jac = settings.jacobian
    if jac.operator_method == "power":
        return operator_norm_power(_output_map(model, jac.normalization, y), x, jac.power_iters, jac.power_tol)
    return operator_norm_from_gram(input_jacobian(model, x, y, jac))


@torch.no_grad()
def _crossentropy(model, x, y, keys, settings) -> torch.Tensor:
    return F.cross_entropy(model(x), y, reduction="none")


@torch.no_grad()
def _accuracy(model, x, y, keys, settings) -> torch.Tensor:
    logits = model(x)
    return (logits.argmax(dim=1) == y).to(logits.dtype)


@torch.no_grad()
def _confidence(model, x, y, keys, settings) -> torch.Tensor:
    logits = model(x)
    onehot = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    return torch.linalg.vector_norm(onehot - logits.softmax(dim=1), dim=1)


# --------------------------------------------------------------------------- tangent metrics


@torch.no_grad()
def _normalized_output(model, x, y, jac: JacobianSettings) -> torch.Tensor:
    return NORMALIZATIONS[jac.normalization](model(x), y)


def _flat_jacobian(model, x, y, jac: JacobianSettings) -> torch.Tensor:
    return input_jacobian(model, x, y, jac).flatten(1)


def jittered_copies(x: torch.Tensor, keys: np.ndarray, tangent: TangentSettings) -> torch.Tensor:
    """The VARIANTS colour-jittered copies (B, V, C, H, W) of standardised images x (B, C, H, W),
    point b jittered by the generator keyed (tangent.seed, *keys[b])."""
    raw = tangent.channels.to_raw(x, channel_axis=-3)
    jittered = jitter_images(raw, draw_jitter(keys, tangent.seed))
    return tangent.channels.standardise(jittered, channel_axis=-3)


def tangent_norm(h: torch.Tensor, h_jittered: torch.Tensor, distance: torch.Tensor, step: float | str, unit: bool) -> torch.Tensor:
    """T = sqrt(mean_j ||(h - h_j) / s_j||^2) for h (B, F), h_jittered (B, V, F) and the
    distances (B, V) between the images; s_j = step, or the distance when step is "distance"
    (a variant equal to its image adds 0). `unit` divides every h by its norm first."""
    if unit:
        h, h_jittered = _unit(h), _unit(h_jittered)
    change = torch.linalg.vector_norm(h_jittered - h.unsqueeze(1), dim=-1)
    if step == "distance":
        rate = torch.where(distance > 0, change / distance.clamp_min(torch.finfo(distance.dtype).tiny), 0.0)
    else:
        rate = change / step
    return rate.square().mean(dim=1).sqrt()


def _unit(h: torch.Tensor) -> torch.Tensor:
    return h / torch.linalg.vector_norm(h, dim=-1, keepdim=True).clamp_min(torch.finfo(h.dtype).tiny)


def _tangent_metric(h_fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def metric(model, x, y, keys, settings: Settings) -> torch.Tensor:
        variants = jittered_copies(x, keys, settings.tangent)
        batch, count = variants.shape[:2]
        every = torch.cat([x.unsqueeze(1), variants], dim=1).flatten(0, 1)
        h = h_fn(model, every, y.repeat_interleave(count + 1), settings.jacobian).reshape(batch, count + 1, -1)
        distance = torch.linalg.vector_norm((variants - x.unsqueeze(1)).flatten(2), dim=-1)
        unit = settings.jacobian.normalization == "logits"
        return tangent_norm(h[:, 0], h[:, 1:], distance, settings.tangent.step, unit)

    return metric


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Metric:
    """fn(model, x, targets, keys, settings) -> (B,) values at B points; `evaluations`: model
    inputs per point (the batch size bounds their total); `jitters`: needs images and channel_stats."""

    fn: Callable[[nn.Module, torch.Tensor, torch.Tensor, np.ndarray, Settings], torch.Tensor]
    evaluations: int = 1
    jitters: bool = False


METRICS: dict[str, Metric] = {
    "jacobian_frobenius": Metric(_jacobian_frobenius),
    "jacobian_operator": Metric(_jacobian_operator),
    "crossentropy": Metric(_crossentropy),
    "accuracy": Metric(_accuracy),
    "confidence": Metric(_confidence),
    "tangent_jacobian": Metric(_tangent_metric(_normalized_output), 1 + VARIANTS, jitters=True),
    "tangent_hessian": Metric(_tangent_metric(_flat_jacobian), 1 + VARIANTS, jitters=True),
}


# --------------------------------------------------------------------------- entry point


def _allowed(names) -> str:
    return "allowed: " + ", ".join(names)


def _validate(metric: str, settings: Settings, batch_size: int) -> None:
    jac, tangent = settings.jacobian, settings.tangent
    if metric not in METRICS:
        raise NetgeomError("smoothness.metric", f"got {metric!r}, {_allowed(METRICS)}")
    if jac.normalization not in NORMALIZATIONS:
        raise NetgeomError("smoothness.normalization", f"got {jac.normalization!r}, {_allowed(NORMALIZATIONS)}")
    if metric == "crossentropy" and jac.normalization == "target_logit":
        raise NetgeomError("smoothness.normalization", "'target_logit' cannot be combined with metric 'crossentropy'")
    if jac.backend not in BACKENDS:
        raise NetgeomError("smoothness.backend", f"got {jac.backend!r}, {_allowed(BACKENDS)}")
    if jac.operator_method not in OPERATOR_METHODS:
        raise NetgeomError("smoothness.operator_method", f"got {jac.operator_method!r}, {_allowed(OPERATOR_METHODS)}")
    if jac.class_chunk is not None and (not _is_int(jac.class_chunk) or jac.class_chunk < 1):
        raise NetgeomError("smoothness.class_chunk", f"must be an integer >= 1 or null, got {jac.class_chunk!r}")
    if not _is_int(jac.power_iters) or jac.power_iters < 1:
        raise NetgeomError("smoothness.power_iters", f"must be an integer >= 1, got {jac.power_iters!r}")
    if not (_is_number(jac.power_tol) and jac.power_tol >= 0):
        raise NetgeomError("smoothness.power_tol", f"must be a finite number >= 0, got {jac.power_tol!r}")
    if not _is_int(tangent.seed) or tangent.seed < 0:
        raise NetgeomError("smoothness.tangent_seed", f"must be an integer >= 0, got {tangent.seed!r}")
    if tangent.step != "distance" and not (_is_number(tangent.step) and tangent.step > 0):
        raise NetgeomError("smoothness.tangent_step", f"must be a number > 0 or 'distance', got {tangent.step!r}")
    if not _is_int(batch_size) or batch_size < 1:
        raise NetgeomError("smoothness.batch_size", f"must be an integer >= 1, got {batch_size!r}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_jitter_inputs(metric: str, x: torch.Tensor, channels: ChannelStats | None) -> None:
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise NetgeomError(
            "smoothness.metric", f"{metric} jitters colours of (C, H, W) images with 1 or 3 channels, got inputs {tuple(x.shape[1:])}"
        )
    if channels is None:
        raise NetgeomError("channel_stats", f"{metric} jitters the raw [0, 1] image: pass the dataset's per-channel mean and std")
    channels.check_channels(x.shape[1])


def _as_inputs(model: nn.Module, x, targets, sample_ids) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    x = torch.as_tensor(x)
    targets = torch.as_tensor(targets)
    if targets.dim() != 1 or targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise NetgeomError("targets", f"must be a 1-D integer tensor, got {targets.dtype} of shape {tuple(targets.shape)}")
    if x.dim() < 2 or len(x) != len(targets):
        raise NetgeomError("x", f"must be (N, *input_shape) with N = len(targets) = {len(targets)}, got {tuple(x.shape)}")
    if len(targets) and int(targets.min()) < 0:
        raise NetgeomError("targets", "labels must be >= 0")
    ids = np.arange(len(x)) if sample_ids is None else np.asarray(sample_ids)
    if ids.shape != (len(x),) or not np.issubdtype(ids.dtype, np.integer):
        raise NetgeomError("sample_ids", f"must be {len(x)} integers, one per sample, got shape {ids.shape} of {ids.dtype}")
    param = next(model.parameters(), None)
    if param is not None and param.is_floating_point():
        x = x.to(dtype=param.dtype)
    return x, targets.to(torch.int64), ids.astype(np.int64)


def jitter_keys(sample_ids: np.ndarray, volume: Volume) -> np.ndarray:
    """(N * points, 3) keys of the points of each sample's volume, in `perturb`'s order:
    (sample id, direction + 1, strength), and (sample id, 0, 0) for x_0 itself, so x_0 gets the
    same jitter in every volume and on every geodesic path."""
    direction, _, strength = volume.point_labels()
    point = np.stack([np.where(strength > 0, direction + 1, 0), strength], axis=1)
    ids = np.repeat(np.asarray(sample_ids, dtype=np.int64), len(point))
    return np.column_stack([ids, np.tile(point, (len(sample_ids), 1))])


def compute_point_values(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    metric: str,
    normalization: str = "crossentropy",
    *,
    volume: Volume | None = None,
    batch_size: int = 128,
    backend: str = "vjp",
    class_chunk: int | None = None,
    operator_method: str = "gram",
    power_iters: int = 300,
    power_tol: float = 1e-6,
    channel_stats: ChannelStats | None = None,
    sample_ids: np.ndarray | None = None,
    tangent_seed: int = 0,
    tangent_step: float | str = TANGENT_STEP,
    desc: str = "smoothness",
    progress: bool | None = None,
) -> PointValues:
    """Per-sample `metric` of `model` at every point of `volume` (default: the point itself)
    around x (N, *input_shape, standardised), against `targets` (N,); `.integrate()` gives what
    `compute_metric` returns, `.to_frame()` the long table.

    `targets` are the labels the label-dependent quantities use (see `choose_targets` for the
    clean_targets flag). `normalization` affects the jacobian_* and tangent_* metrics.
    batch_size bounds the number of inputs the model evaluates at once (a tangent metric
    evaluates 5 per point); class_chunk the number of output classes differentiated in one
    vectorised call (vjp default 1, vmap default all). operator_method, power_iters and
    power_tol: see `JacobianSettings`. channel_stats: the dataset's per-channel mean and std,
    needed by the tangent metrics and by SVD erasure in the raw space. sample_ids (N,) integers
    >= 0 (default: 0..N-1) key the colour jitter with tangent_seed, so pass the dataset's ids for
    values that do not depend on sharding. tangent_step: the divisor s_j, or "distance".
    progress: draw a bar labelled `desc` (None: only on a terminal or in a notebook, never under
    --quiet or CI; see `netgeom.progress.shows_progress`); False silences it.
    """
    settings = Settings(
        JacobianSettings(normalization, backend, class_chunk, operator_method, power_iters, power_tol),
        TangentSettings(tangent_seed, tangent_step, channel_stats),
    )
    _validate(metric, settings, batch_size)
    volume = volume or Volume()
    x, targets, sample_ids = _as_inputs(model, x, targets, sample_ids)
    spec = METRICS[metric]
    if spec.jitters:
        _check_jitter_inputs(metric, x, channel_stats)
    param = next(model.parameters(), None)
    device = param.device if param is not None else x.device
    per_sample = volume.points_per_sample
    samples_per_chunk = max(1, batch_size // per_sample)
    points_per_call = max(1, batch_size // spec.evaluations)
    starts = range(0, len(x), samples_per_chunk)
    values, lengths = [], []
    with frozen_eval(model):
        _check_targets(model, x, targets, device)
        for start in progress_bar(starts, desc=desc, total=len(starts), enabled=progress):
            xb = x[start : start + samples_per_chunk].to(device)
            yb = targets[start : start + samples_per_chunk].to(device)
            points = perturb(xb, volume, channel_stats)
            flat = points.reshape(-1, *xb.shape[1:])
            flat_targets = yb.repeat_interleave(per_sample)
            keys = jitter_keys(sample_ids[start : start + samples_per_chunk], volume)
            chunk = torch.cat(
                [
                    spec.fn(model, flat[i : i + points_per_call], flat_targets[i : i + points_per_call], keys[i : i + points_per_call], settings)
                    for i in range(0, len(flat), points_per_call)
                ]
            )
            values.append(chunk.detach().to(torch.float64).reshape(len(xb), *volume.points_shape).cpu())
            if volume.strategy == "geodesic":
                lengths.append(segment_lengths(points).cpu())
    if not values:
        empty = np.zeros((0, *volume.points_shape))
        return PointValues(volume, empty, np.zeros((0, volume.directions, len(volume.anchor_strengths))) if volume.strategy == "geodesic" else None)
    return PointValues(volume, torch.cat(values).cpu().numpy(), torch.cat(lengths).cpu().numpy() if lengths else None)


def compute_metric(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    metric: str,
    normalization: str = "crossentropy",
    *,
    progress: bool | None = None,
    **options,
) -> np.ndarray:
    """Per-sample `metric` integrated over the volume: float64 (N,), or (N, A-1) for a
    cumulative geodesic volume, in the order of x. Options (and `progress`) as `compute_point_values`."""
    return compute_point_values(model, x, targets, metric, normalization, progress=progress, **options).integrate()


def _check_targets(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, device: torch.device) -> None:
    """Labels must index the model's outputs (one forward of one sample tells how many)."""
    if not len(x):
        return
    with torch.no_grad():
        classes = model(x[:1].to(device)).shape[1]
    if int(targets.max()) >= classes:
        raise NetgeomError("targets", f"labels must be < the model's {classes} outputs, got {int(targets.max())}")
