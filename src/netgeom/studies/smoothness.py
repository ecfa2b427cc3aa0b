"""Input-space smoothness of a classifier, per sample (the double-descent / Lipschitz seeds).

For logits f(x) in R^K and a target y, `normalization` picks the map g whose input Jacobian is
measured: crossentropy (g = CE(f(x), y), a scalar), logits (g = f), softmax, logsoftmax,
target_logit (g = f_y). Metrics:

* jacobian_frobenius: ||dg/dx||_F (for scalar g, the input-gradient norm: "loss sharpness").
* jacobian_operator: sigma_max(dg/dx) (its mean over a set is the "empirical Lipschitz constant").
* crossentropy, accuracy (0/1), confidence = ||onehot(y) - softmax(f(x))||_2.

The Jacobian J (B, K, D) of a batch comes from K input-only vector-Jacobian products over the
whole batch (one autograd.grad per output, retain_graph between them, parameters frozen), the
fastest exact method on CPU; `backend="vmap"` uses torch.func.vmap(jacrev) instead (GPUs).
sigma_max is exact from the K x K Gram matrix J J^T via eigvalsh, or matrix-free by power
iteration with jvp/vjp (`operator_method="power"`) when K is large.

Per-sample rows of a batch must not interact, which holds in eval mode; the model is put in
eval mode (and its parameters frozen) for the computation and restored afterwards. Volumes
(`netgeom.studies.volumes`) integrate any metric over perturbed copies of each sample.
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
from netgeom.progress import progress
from netgeom.studies.volumes import Volume, integrate, perturb

# g(logits, targets) -> (B, K') with K' = K, or 1 for the scalar normalisations.
NORMALIZATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "crossentropy": lambda logits, y: F.cross_entropy(logits, y, reduction="none").unsqueeze(1),
    "logits": lambda logits, y: logits,
    "softmax": lambda logits, y: logits.softmax(dim=1),
    "logsoftmax": lambda logits, y: logits.log_softmax(dim=1),
    "target_logit": lambda logits, y: logits.gather(1, y.unsqueeze(1)),
}
BACKENDS = ("vjp", "vmap")
OPERATOR_METHODS = ("eigvalsh", "power")


@dataclass(frozen=True)
class JacobianSettings:
    """How Jacobian metrics are computed (validated by `compute_metric`)."""

    normalization: str = "crossentropy"
    backend: str = "vjp"
    class_chunk: int | None = None
    operator_method: str = "eigvalsh"
    power_iters: int = 300
    power_tol: float = 1e-6


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
    modes = [(module, module.training) for module in model.modules()]
    flags = [(param, param.requires_grad) for param in model.parameters()]
    model.eval()
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        yield model
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)
        for module, training in modes:
            module.training = training


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
    one vjp per step. Each sample stops on its own once sigma changes by <= tol relative, so the
    result does not depend on which samples share the batch."""
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


def _jacobian_frobenius(model, x, y, settings: JacobianSettings) -> torch.Tensor:
    return torch.linalg.vector_norm(input_jacobian(model, x, y, settings), dim=(1, 2))


def _jacobian_operator(model, x, y, settings: JacobianSettings) -> torch.Tensor:
    if settings.operator_method == "power":
        fn = _output_map(model, settings.normalization, y)
        return operator_norm_power(fn, x, settings.power_iters, settings.power_tol)
    return operator_norm_from_gram(input_jacobian(model, x, y, settings))


@torch.no_grad()
def _crossentropy(model, x, y, settings) -> torch.Tensor:
    return F.cross_entropy(model(x), y, reduction="none")


@torch.no_grad()
def _accuracy(model, x, y, settings) -> torch.Tensor:
    logits = model(x)
    return (logits.argmax(dim=1) == y).to(logits.dtype)


@torch.no_grad()
def _confidence(model, x, y, settings) -> torch.Tensor:
    logits = model(x)
    onehot = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    return torch.linalg.vector_norm(onehot - logits.softmax(dim=1), dim=1)


METRICS: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor, JacobianSettings], torch.Tensor]] = {
    "jacobian_frobenius": _jacobian_frobenius,
    "jacobian_operator": _jacobian_operator,
    "crossentropy": _crossentropy,
    "accuracy": _accuracy,
    "confidence": _confidence,
}


# --------------------------------------------------------------------------- entry point


def _allowed(names) -> str:
    return "allowed: " + ", ".join(names)


def _validate(metric: str, settings: JacobianSettings, batch_size: int) -> None:
    if metric not in METRICS:
        raise NetgeomError("smoothness.metric", f"got {metric!r}, {_allowed(METRICS)}")
    if settings.normalization not in NORMALIZATIONS:
        raise NetgeomError("smoothness.normalization", f"got {settings.normalization!r}, {_allowed(NORMALIZATIONS)}")
    if metric == "crossentropy" and settings.normalization == "target_logit":
        raise NetgeomError("smoothness.normalization", "'target_logit' cannot be combined with metric 'crossentropy'")
    if settings.backend not in BACKENDS:
        raise NetgeomError("smoothness.backend", f"got {settings.backend!r}, {_allowed(BACKENDS)}")
    if settings.operator_method not in OPERATOR_METHODS:
        raise NetgeomError("smoothness.operator_method", f"got {settings.operator_method!r}, {_allowed(OPERATOR_METHODS)}")
    if settings.class_chunk is not None and (not isinstance(settings.class_chunk, int) or settings.class_chunk < 1):
        raise NetgeomError("smoothness.class_chunk", f"must be an integer >= 1 or null, got {settings.class_chunk!r}")
    if not isinstance(settings.power_iters, int) or settings.power_iters < 1:
        raise NetgeomError("smoothness.power_iters", f"must be an integer >= 1, got {settings.power_iters!r}")
    if not (isinstance(settings.power_tol, (int, float)) and math.isfinite(settings.power_tol) and settings.power_tol >= 0):
        raise NetgeomError("smoothness.power_tol", f"must be a finite number >= 0, got {settings.power_tol!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise NetgeomError("smoothness.batch_size", f"must be an integer >= 1, got {batch_size!r}")


def _as_inputs(model: nn.Module, x, targets) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(x)
    targets = torch.as_tensor(targets)
    if targets.dim() != 1 or targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise NetgeomError("targets", f"must be a 1-D integer tensor, got {targets.dtype} of shape {tuple(targets.shape)}")
    if x.dim() < 2 or len(x) != len(targets):
        raise NetgeomError("x", f"must be (N, *input_shape) with N = len(targets) = {len(targets)}, got {tuple(x.shape)}")
    if len(targets) and int(targets.min()) < 0:
        raise NetgeomError("targets", "labels must be >= 0")
    param = next(model.parameters(), None)
    if param is not None and param.is_floating_point():
        x = x.to(dtype=param.dtype)
    return x, targets.to(torch.int64)


def compute_metric(
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
    operator_method: str = "eigvalsh",
    power_iters: int = 300,
    power_tol: float = 1e-6,
    desc: str = "smoothness",
) -> np.ndarray:
    """Per-sample `metric` of `model` at x (N, *input_shape) against `targets` (N,), integrated
    over `volume` (default: the point itself). Returns float64 (N,), or (N, A-1) for a
    cumulative geodesic volume, in the order of x.

    `targets` are the labels the label-dependent quantities use (see `choose_targets` for the
    clean_targets flag). `normalization` only affects the jacobian_* metrics. batch_size bounds
    the number of points (samples x volume points) evaluated at once; class_chunk the number of
    output classes differentiated in one vectorised call (vjp default 1, vmap default all).
    """
    settings = JacobianSettings(normalization, backend, class_chunk, operator_method, power_iters, power_tol)
    _validate(metric, settings, batch_size)
    volume = volume or Volume()
    x, targets = _as_inputs(model, x, targets)
    metric_fn = METRICS[metric]
    param = next(model.parameters(), None)
    device = param.device if param is not None else x.device
    samples_per_chunk = max(1, batch_size // volume.points_per_sample)
    starts = range(0, len(x), samples_per_chunk)
    results = []
    with frozen_eval(model):
        _check_targets(model, x, targets, device)
        for start in progress(starts, desc=desc, total=len(starts)):
            xb = x[start : start + samples_per_chunk].to(device)
            yb = targets[start : start + samples_per_chunk].to(device)
            points = perturb(xb, volume)
            flat = points.reshape(-1, *xb.shape[1:])
            flat_targets = yb.repeat_interleave(volume.points_per_sample)
            values = torch.cat(
                [
                    metric_fn(model, flat[i : i + batch_size], flat_targets[i : i + batch_size], settings)
                    for i in range(0, len(flat), batch_size)
                ]
            )
            results.append(integrate(values.detach().reshape(points.shape[: 1 + len(volume.points_shape)]), points, volume))
    if not results:
        shape = (0, len(volume.anchor_strengths)) if volume.cumulative else (0,)
        return np.zeros(shape, dtype=np.float64)
    return torch.cat(results).cpu().numpy()


def _check_targets(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, device: torch.device) -> None:
    """Labels must index the model's outputs (one forward of one sample tells how many)."""
    if not len(x):
        return
    with torch.no_grad():
        classes = model(x[:1].to(device)).shape[1]
    if int(targets.max()) >= classes:
        raise NetgeomError("targets", f"labels must be < the model's {classes} outputs, got {int(targets.max())}")
