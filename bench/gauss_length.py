"""Benchmark: the average Gauss length of the logit path, ours vs the MLI seed's implementation.

Compares, in one run, on the same models, inputs and alphas:
  seed - a re-implementation of the MLI seed (mli/metrics/gauss_len.py): for each alpha, weights
         (1 - alpha) A + alpha B built under autograd from a scalar alpha, logits z, then
         z' = d z / d alpha by the double-backward trick (autograd.grad with create_graph onto
         a dummy vector, then the gradient of that with respect to the dummy), the unit tangent
         u = z'/|z'| differentiated the same way, |du/dalpha| per sample, trapezoid rule.
         On a BN model its BN variant: before each alpha the state (statistics included) is
         interpolated into the module, BN statistics are reset and warmed up with one pass
         over the calibration data in train mode (momentum 0.1), then held in eval mode.
  ours - netgeom.studies.logit_geometry.gauss_length(logit_path(...)): nested forward-mode AD
         (torch.func.jvp) along theta_B - theta_A, several alphas per vmapped pass on dense
         nets, Simpson's rule; on the BN model bn="recompute_ema" with the seed's momentum
         and batches (the same statistics).
Models: a BN-free MLP and a small BN CNN (cnn_k), float32 as the seeds ran. Agreement: the
integrands at the same alphas (max |ours - seed| / max |seed|: float32 round-off, amplified
where a sample's logits barely move; the same check in float64 on three alphas is printed too)
and both integrals with the seed's trapezoid rule. Target: ours >= 1.5x faster than the seed on each
model at the same number of alphas (Simpson's rule is at least as accurate as the trapezoid).

Run: .venv/bin/python bench/gauss_length.py
     [env BENCH_THREADS (default 1), BENCH_QUICK=1, BENCH_POINTS (default 51)]
Last line: ratio_vs_seed=<min over the two models of seed time / ours>.
"""

from __future__ import annotations

import copy
import os
import time

import numpy as np
import torch
from torch.func import functional_call

from netgeom.models import create_model
from netgeom.progress import set_quiet
from netgeom.studies.interpolation import SEEDS_BN_MOMENTUM, bn_modules
from netgeom.studies.logit_geometry import gauss_length, gauss_rates, logit_path
from netgeom.studies.weight_space import is_bn_statistic

THREADS = int(os.environ.get("BENCH_THREADS", "1"))  # the CPU is shared: 1 thread is the stable measurement
QUICK = bool(os.environ.get("BENCH_QUICK"))
POINTS = int(os.environ.get("BENCH_POINTS", "21" if QUICK else "51"))
CALIBRATION, BN_BATCH = 256, 128
MODELS = [  # (name, arch, input shape, options, gauss samples, repeats)
    ("mlp", "mlp", (1, 28, 28), dict(width=256, depth=4), 128, 1 if QUICK else 5),
    ("cnn_k+bn", "cnn_k", (3, 32, 32), dict(width=8, batch_norm=True), 64, 1 if QUICK else 2),
]


# --------------------------------------------------------------------------- the seed


def rop(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The seed's R-operator: J v by two reverse passes through a dummy cotangent."""
    dummy = torch.ones_like(y, requires_grad=True)
    (g,) = torch.autograd.grad(y, x, dummy, create_graph=True)
    (out,) = torch.autograd.grad(g, dummy, torch.ones_like(x), create_graph=True)
    return out


def seed_rate_at(model, a, b, x, alpha_value: float, statistics: dict) -> torch.Tensor:
    alpha = torch.ones(1, dtype=x.dtype) * alpha_value
    alpha.requires_grad = True
    weights = {k: (1 - alpha) * v + alpha * b[k] for k, v in a.items() if v.is_floating_point() and not is_bn_statistic(k)}
    z = functional_call(model, {**a, **statistics, **weights}, (x,)).squeeze()
    v = rop(z, alpha)
    n_v = v / torch.norm(v.view(v.shape[0], -1), dim=1, keepdim=True)
    acc = rop(n_v, alpha)
    normal = acc - torch.sum((n_v * acc).view(v.shape[0], -1), dim=-1, keepdim=True) * n_v
    return torch.sqrt((normal * normal).sum(-1)).detach()


def seed_warm_bn(model, a, b, alpha: float, calibration) -> dict:
    """interpolate_state + warm_bn: every entry interpolated into the module, BN reset, one pass."""
    model.load_state_dict({k: (1 - alpha) * v + alpha * b[k] if v.is_floating_point() else v for k, v in a.items()})
    for m in bn_modules(model).values():
        m.reset_running_stats()
    model.train()
    with torch.no_grad():
        for lo in range(0, calibration.shape[0], BN_BATCH):
            model(calibration[lo : lo + BN_BATCH])
    model.eval()
    return {k: v.clone() for k, v in model.state_dict().items() if is_bn_statistic(k)}


def seed_rates(model, a, b, x, alphas, calibration) -> torch.Tensor:
    has_bn = bool(bn_modules(model))
    rates = []
    for alpha in alphas:
        statistics = seed_warm_bn(model, a, b, float(alpha), calibration) if has_bn else {}
        rates.append(seed_rate_at(model.eval(), a, b, x, float(alpha), statistics))
    return torch.stack(rates)


def trapezoid(rates: np.ndarray, alphas: np.ndarray) -> float:
    return float(np.mean(np.trapezoid(rates, alphas, axis=0)))


def seed_gauss_length(model, a, b, x, alphas, calibration) -> float:
    return trapezoid(seed_rates(model, a, b, x, alphas, calibration).double().numpy(), alphas)


# --------------------------------------------------------------------------- ours


def our_path(model, a, b, x, calibration):
    return logit_path(
        model, a, b, x, bn="recompute_ema", calibration_inputs=calibration, bn_batch_size=BN_BATCH, bn_momentum=SEEDS_BN_MOMENTUM
    )


def our_gauss_length(model, a, b, x, calibration) -> float:
    return gauss_length(our_path(model, a, b, x, calibration), POINTS)


# --------------------------------------------------------------------------- the comparison


def build(arch, shape, options, samples):
    torch.manual_seed(0)
    model = create_model(arch, shape, 10, **options).eval()
    a = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    b = {k: v.clone() for k, v in create_model(arch, shape, 10, **options).state_dict().items()}
    g = torch.Generator().manual_seed(2)
    data = torch.randn(samples + CALIBRATION, *shape, generator=g)
    return model, a, b, data[:samples], data[samples:]


def float64_agreement(model, a, b, x, calibration) -> float:
    model = copy.deepcopy(model).double()
    a, b = ({k: v.double() if v.is_floating_point() else v for k, v in s.items()} for s in (a, b))
    x, calibration, alphas = x.double(), calibration.double(), np.array([0.2, 0.5, 0.8])
    ours = gauss_rates(our_path(model, a, b, x, calibration), alphas)
    seed = seed_rates(model, a, b, x, alphas, calibration)
    return float((ours - seed).abs().max() / seed.abs().max())


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def compare(name, arch, shape, options, samples, repeats) -> float:
    model, a, b, x, calibration = build(arch, shape, options, samples)
    alphas = np.linspace(0.0, 1.0, POINTS)
    ours_rates = gauss_rates(our_path(model, a, b, x, calibration), alphas).numpy()
    seed = seed_rates(model, a, b, x, alphas, calibration).double().numpy()
    agreement = np.abs(ours_rates - seed).max() / np.abs(seed).max()
    methods = {
        "seed": lambda: seed_gauss_length(model, a, b, x, alphas, calibration),
        "ours": lambda: our_gauss_length(model, a, b, x, calibration),
    }
    best = {k: float("inf") for k in methods}
    values = {}
    for _ in range(repeats):  # interleaved, so load changes on the shared CPU hit both methods
        for method, fn in methods.items():
            seconds, values[method] = timed(fn)
            best[method] = min(best[method], seconds)
    print(f"{name}: {samples} samples x {POINTS} alphas, threads={THREADS}")
    print(f"  integrand max |ours - seed| / max |seed| = {agreement:.1e} (float64: {float64_agreement(model, a, b, x, calibration):.1e})")
    print(f"  trapezoid on the same integrands: ours {trapezoid(ours_rates, alphas):.6f} seed {trapezoid(seed, alphas):.6f}")
    print(f"  gauss length: seed (trapezoid) {values['seed']:.6f}  ours (Simpson) {values['ours']:.6f}")
    for method, seconds in best.items():
        print(f"  {method}: {seconds:7.2f} s  {seconds / POINTS * 1e3:7.1f} ms/alpha")
    ratio = best["seed"] / best["ours"]
    print(f"  seed/ours = {ratio:.2f} (target >= 1.5)")
    return ratio


def main() -> None:
    torch.set_num_threads(THREADS)
    set_quiet(True)
    ratios = [compare(*spec) for spec in MODELS]
    print(f"ratio_vs_seed={min(ratios):.3f}")


if __name__ == "__main__":
    main()
