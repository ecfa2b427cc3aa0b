"""Curvature of the training loss in weight space, and filter-normalised loss surfaces.

The loss is the mean cross-entropy over a fixed set of batches (a seeded training subset; the
caller picks it, e.g. clean or noisy samples), the model in eval mode: BatchNorm uses the trained
running statistics, so the loss is a fixed function of the weights (PyHessian does the same).
Only parameters are differentiated; buffers stay as trained.

Devices: the products run where the model and the batches are; the Krylov vectors live on the
`device` the eigen/trace/density functions are given (the stage gives the study's device). Every
probe and start vector is drawn from a seeded CPU generator and then moved, so the same seed
draws the same vectors on any device.

- `hvp`: the Hessian-vector product by forward-over-reverse (torch.func.jvp of torch.func.grad),
  one pass per batch, summed with the batch's share of the samples.
- `top_eigenvalues`: Lanczos with full reorthogonalisation (exact in exact arithmetic after
  `dim` steps; converges in far fewer for the extremal eigenvalues), stopped when the top-k Ritz
  pairs and two guard pairs below them have relative residuals under `tol`. PyHessian's power
  iteration with deflation needs a run per eigenvalue and converges at the rate of the eigengap.
- `hutchinson_trace`: tr(H) = E[v^T H v] over Rademacher v; the mean and its standard error.
- `spectral_density`: stochastic Lanczos quadrature (Ghorbani et al., PyHessian): per probe a
  Lanczos run of m steps gives nodes (Ritz values) and weights (squared first components), a
  quadrature rule exact for polynomials up to degree 2m - 1 in v^T H^p v / v^T v; the density is
  the probes' average, weights summing to 1.
- `filter_normalized_direction` and `surface`: Li et al.'s loss-landscape directions: a Gaussian
  draw per parameter, each filter (an output row of a conv or linear weight) rescaled to the norm
  of the same filter of the weights; 1-D parameters (biases, BN affine) get zero direction. The
  surface is the loss and accuracy at theta + a d1 (+ b d2) on a grid; ReLU nets' positive
  rescalings leave it unchanged, which is the point of the normalisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp

from netgeom.errors import NetgeomError
from netgeom.modes import eval_mode

Batches = Sequence[tuple[Tensor, Tensor]]
Params = dict[str, Tensor]


def parameters_of(model: nn.Module) -> Params:
    return {name: p.detach() for name, p in model.named_parameters()}


def _check_batches(batches: Batches) -> int:
    total = sum(int(y.shape[0]) for _, y in batches)
    if not batches or total == 0:
        raise NetgeomError("curvature.samples", "needs at least one training sample")
    return total


def batch_loss(model: nn.Module, params: Params, x: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy of the batch at `params` (buffers: the model's own)."""
    return F.cross_entropy(functional_call(model, params, (x,)), y)


def hvp(model: nn.Module, params: Params, batches: Batches, vector: Params) -> Params:
    """H v for the subset's mean loss, forward-over-reverse, batch by batch."""
    total = _check_batches(batches)
    out = {k: torch.zeros_like(v) for k, v in params.items()}
    with eval_mode(model):
        for x, y in batches:
            _, hv = jvp(grad(lambda p: batch_loss(model, p, x, y)), (params,), (vector,))
            share = y.shape[0] / total
            for k in out:
                out[k] += hv[k] * share
    return out


# --------------------------------------------------------------------------- flat vectors


class Flat:
    """Parameter dicts <-> one flat vector (float64 for the Krylov arithmetic)."""

    def __init__(self, params: Params):
        self.names = list(params)
        self.shapes = [params[k].shape for k in self.names]
        self.dtype, self.device = next(iter(params.values())).dtype, next(iter(params.values())).device
        self.sizes = [int(math.prod(s)) for s in self.shapes]
        self.dim = sum(self.sizes)

    def flatten(self, tree: Params) -> Tensor:
        return torch.cat([tree[k].reshape(-1).to(torch.float64) for k in self.names])

    def unflatten(self, vector: Tensor) -> Params:
        parts = torch.split(vector.to(self.dtype).to(self.device), self.sizes)
        return {k: part.reshape(shape) for k, part, shape in zip(self.names, parts, self.shapes)}


def hessian_operator(model: nn.Module, batches: Batches, params: Params | None = None, *, retain_graph: bool = True) -> tuple[Callable[[Tensor], Tensor], int]:
    """(v -> H v on flat float64 vectors, dimension) at `params` (default: the model's). H v is
    computed on the parameters' device and returned on v's.

    retain_graph=True (the default, PyHessian's way): each batch's gradient is built once with
    its graph kept, and every product is one backward pass through it (about one gradient's
    cost; the graphs of all batches stay in memory). False: `hvp`, forward-over-reverse from
    scratch per product (no memory held between products).
    """
    params = parameters_of(model) if params is None else params
    flat = Flat(params)
    if not retain_graph:
        return (lambda v: flat.flatten(hvp(model, params, batches, flat.unflatten(v))).to(v.device)), flat.dim
    total = _check_batches(batches)
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    with eval_mode(model), torch.enable_grad():
        gradients = [(torch.autograd.grad(batch_loss(model, leaves, x, y), list(leaves.values()), create_graph=True), y.shape[0] / total)
                     for x, y in batches]

    def matvec(v: Tensor) -> Tensor:
        tangent = list(flat.unflatten(v).values())
        out = torch.zeros(flat.dim, dtype=torch.float64, device=flat.device)
        for g, share in gradients:
            hv = torch.autograd.grad(g, list(leaves.values()), grad_outputs=tangent, retain_graph=True)
            out += share * torch.cat([h.reshape(-1).to(torch.float64) for h in hv])
        return out.to(v.device)

    return matvec, flat.dim


# --------------------------------------------------------------------------- Lanczos


class _Lanczos:
    """Lanczos with full reorthogonalisation, one step at a time: the tridiagonal so far."""

    def __init__(self, matvec: Callable[[Tensor], Tensor], start: Tensor):
        self.matvec = matvec
        self.basis = [start / start.norm()]
        self.alphas: list[float] = []
        self.betas: list[float] = []
        self.invariant = False  # the Krylov space stopped growing: the Ritz values are exact

    def step(self) -> None:
        w = self.matvec(self.basis[-1])
        alpha = float(w @ self.basis[-1])
        self.alphas.append(alpha)
        stacked = torch.stack(self.basis)
        w = w - stacked.T @ (stacked @ w)  # twice is enough (Kahan)
        w = w - stacked.T @ (stacked @ w)
        beta = float(w.norm())
        if beta <= 1e-12 * max(1.0, abs(alpha)):
            self.invariant = True
            return
        self.betas.append(beta)
        self.basis.append(w / beta)

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (ascending) and eigenvectors of the tridiagonal of the steps taken."""
        alphas, betas = np.asarray(self.alphas), np.asarray(self.betas[: len(self.alphas) - 1])
        return np.linalg.eigh(np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1))


def lanczos(matvec: Callable[[Tensor], Tensor], start: Tensor, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Ritz values (ascending) and the squared first components of their vectors after `steps`
    steps from `start` (fewer at an invariant subspace): a Gauss quadrature rule for start."""
    run = _Lanczos(matvec, start)
    while len(run.alphas) < steps and not run.invariant:
        run.step()
    theta, vectors = run.ritz()
    return theta, vectors[0] ** 2


def _rademacher(dim: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
    return (torch.randint(0, 2, (dim,), generator=generator, dtype=torch.float64) * 2 - 1).to(device)


GUARD_PAIRS = 2  # Ritz pairs below the k-th that must converge too (see top_eigenvalues)


def top_eigenvalues(
    matvec: Callable[[Tensor], Tensor], dim: int, k: int = 1, *, tol: float = 1e-3, max_steps: int = 100, seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, int]:
    """The k algebraically largest eigenvalues (descending) and the Lanczos steps (HVPs) used.

    Stops when each of the top-k Ritz pairs (theta, u) has a residual
    |H u - theta u| = beta_m |y_m| <= tol |theta| (an eigenvalue then lies within that residual of
    theta), and so do the `GUARD_PAIRS` pairs below the k-th, to tol |theta_k|; or at `max_steps`.
    Why the guard: a converged residual says theta is near *an* eigenvalue, not that no larger one
    is still unresolved. Below a tight cluster (relative gaps under tol) the k-th Ritz value can
    converge on a well-separated eigenvalue while a cluster member above it has not appeared yet
    (eigenvalues {5, 4.999, 4.998, 1, ...}, k = 3 gave [5, 4.999, 1]). Asking the next pairs to
    converge too lets the Krylov space grow until the cluster splits (ARPACK keeps more Lanczos
    vectors than wanted eigenvalues for the same reason). k = 1 needs no guard: the largest Ritz
    value converges first. An eigenvalue of multiplicity m > 1 is still found once, as by any
    single-vector Krylov method.
    PyHessian's power iteration finds the eigenvalue largest in magnitude; near a saddle (a
    negative eigenvalue larger in magnitude than every positive one) the two differ."""
    if k < 1 or k > dim:
        raise NetgeomError("curvature.top_k", f"must be in 1..{dim} (the number of parameters), got {k}")
    guard = min(k - 1, GUARD_PAIRS, dim - k)
    g = torch.Generator().manual_seed(seed)
    run = _Lanczos(matvec, torch.randn(dim, generator=g, dtype=torch.float64).to(device))
    while True:
        run.step()
        theta, vectors = run.ritz()
        order = np.argsort(theta)[::-1]
        top, checked = order[:k], order[: k + guard]
        steps = len(run.alphas)
        if run.invariant or steps >= min(dim, max_steps):
            return theta[top], steps
        if len(checked) == k + guard:
            residuals = run.betas[-1] * np.abs(vectors[-1, checked])
            scale = np.abs(np.concatenate([theta[top], np.full(guard, theta[top[-1]])]))
            if np.all(residuals <= tol * np.maximum(scale, 1e-30)):
                return theta[top], steps


def hutchinson_trace(
    matvec: Callable[[Tensor], Tensor], dim: int, probes: int = 100, seed: int = 0, device: torch.device | str = "cpu",
) -> tuple[float, float]:
    """(estimate of tr H, its standard error) from `probes` Rademacher vectors."""
    if probes < 2:
        raise NetgeomError("curvature.trace_probes", f"must be >= 2 (a standard error needs two), got {probes}")
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(probes):
        v = _rademacher(dim, g, device)
        values.append(float(v @ matvec(v)))
    values = np.asarray(values)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(probes))


def spectral_density(
    matvec: Callable[[Tensor], Tensor], dim: int, probes: int = 4, steps: int = 30, seed: int = 0, device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Stochastic Lanczos quadrature: (nodes, weights), the probes' rules concatenated, weights
    scaled so they sum to 1 (each probe's sum to 1 / probes)."""
    if probes < 1 or steps < 1:
        raise NetgeomError("curvature.density", f"probes and steps must be >= 1, got {probes}, {steps}")
    g = torch.Generator().manual_seed(seed)
    nodes, weights = [], []
    for _ in range(probes):
        theta, first = lanczos(matvec, _rademacher(dim, g, device), min(steps, dim))
        nodes.append(theta)
        weights.append(first / probes)
    return np.concatenate(nodes), np.concatenate(weights)


def smoothed_density(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, width: float) -> np.ndarray:
    """The quadrature's spikes as Gaussians of std `width` on `grid` (for plotting)."""
    z = (grid[:, None] - nodes[None, :]) / width
    return (np.exp(-0.5 * z**2) / (width * math.sqrt(2 * math.pi))) @ weights


# --------------------------------------------------------------------------- surfaces


def filter_normalized_direction(params: Params, generator: torch.Generator) -> Params:
    """A Gaussian direction with each filter's norm set to the weights' filter norm (Li et al.);
    zero for 1-D parameters (biases, BN weights and shifts)."""
    out = {}
    for name, w in params.items():
        d = torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device)
        if w.dim() <= 1:
            out[name] = torch.zeros_like(w)
            continue
        rows = d.reshape(d.shape[0], -1)
        scale = w.reshape(w.shape[0], -1).norm(dim=1) / rows.norm(dim=1).clamp_min(1e-30)
        out[name] = (rows * scale[:, None]).reshape(w.shape)
    return out


def surface(
    model: nn.Module, params: Params, directions: Sequence[Params], coordinates: Sequence[tuple[float, ...]], batches: Batches,
) -> list[tuple[float, float]]:
    """(mean loss, accuracy) over `batches` at params + sum_i c_i d_i for each coordinate tuple."""
    total = _check_batches(batches)
    results = []
    with eval_mode(model), torch.no_grad():
        for point in coordinates:
            if len(point) != len(directions):
                raise NetgeomError("curvature.surface", f"a point has {len(point)} coordinates for {len(directions)} directions")
            moved = {k: v + sum(c * d[k] for c, d in zip(point, directions)) for k, v in params.items()}
            loss = correct = 0.0
            for x, y in batches:
                logits = functional_call(model, moved, (x,))
                loss += float(F.cross_entropy(logits, y, reduction="sum"))
                correct += float((logits.argmax(1) == y).sum())
            results.append((loss / total, correct / total))
    return results
