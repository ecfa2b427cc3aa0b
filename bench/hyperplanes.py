"""Benchmark: the hyperplane statistics of a run's checkpoints against the seed's own method.

Compares, in one run, on the same checkpoints of LeNet (2 convs) and vgg8_maxpool (6 convs): the
init plus BENCH_EPOCHS "epochs" (the init weights plus a growing random drift, so that every
checkpoint differs; the statistics read weights only, so they need no trained weights):
  seed  - the hyperplane seed's `positive_orthant.py`, re-implemented: per checkpoint, per conv
          layer (kernel > 1, forward order), the rows' projections on the all-ones direction
          normalised as the seed does, turned into a Python list, the layer's mean and its ECDF
          at 0 (the seed uses statsmodels' ECDF: sort + search), the pooled ones, and the L2 and
          L-inf distances from the init; no symmetry tests;
  ours  - what the `hyperplanes` stage computes: `evolution_tables` (per layer and pooled: mean,
          mass, the sign test; against the init the distances and the Mann-Whitney shift test).
Both analyse the convs (the seed has no linear layers). The shared numbers (mean, mass, both
distances per layer and epoch) must agree to 1e-5 (checked; the seed computes in float32, we
in float64). Methods are interleaved and the best of BENCH_REPEATS kept.
Goal (issue #22): seed / ours >= 1.5 on LeNet, the tests included.

Run: .venv/bin/python bench/hyperplanes.py  [env BENCH_EPOCHS (default 20), BENCH_REPEATS (default 5)]
Last line: ratio_vs_seed=<seed seconds / ours, LeNet> ratio_vs_seed_vgg8=<the same, vgg8_maxpool>
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from torch import nn

from netgeom.models import create_model
from netgeom.studies.hyperplanes import evolution_tables

EPOCHS = int(os.environ.get("BENCH_EPOCHS", "20"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))


def checkpoints(model: nn.Module) -> dict[int, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    states = {0: init}
    for epoch in range(1, EPOCHS + 1):
        states[epoch] = {k: v + 0.02 * epoch * torch.randn(v.shape, generator=generator) for k, v in init.items()}
    return states


def seed_method(model: nn.Module, states: dict[int, dict[str, torch.Tensor]]) -> dict:
    """The seed's loop, checkpoint by checkpoint and layer by layer."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    init = states[0]
    out = {}
    for epoch, state in states.items():
        pooled = []
        for name, module in convs:
            w = state[f"{name}.weight"].detach()
            rows = w.view(w.size(0), -1)
            proj = rows.sum(1).cpu().numpy()
            proj = proj / (torch.sqrt((rows.clone() ** 2).sum(1)).cpu().numpy() * np.sqrt(rows.shape[1]))
            proj = np.squeeze(proj).tolist()
            mass = np.searchsorted(np.sort(proj), 0, side="right") / len(proj)  # statsmodels' ECDF(proj)(0)
            w0 = init[f"{name}.weight"].detach()
            l2 = ((w - w0).norm(p="fro") / w0.norm(p="fro")).item()
            linf = ((w - w0).norm(p=float("inf")) / w0.norm(p=float("inf"))).item()
            out[(epoch, name)] = (np.mean(proj), mass, l2, linf)
            pooled += proj
        out[(epoch, "network")] = (np.mean(pooled), np.searchsorted(np.sort(pooled), 0, side="right") / len(pooled))
    return out


def ours(model: nn.Module, states: dict[int, dict[str, torch.Tensor]]):
    return evolution_tables(model, states, init_epoch=0, with_linear=False)


def as_dict(tables) -> dict:
    """Our tables keyed like the seed's output (done outside the timing: the seed's dict is its
    own output format, our tables are ours)."""
    layers, network = tables
    out = {(int(r.epoch), r.layer): (r.mean, r.mass, r.distance_fro, r.distance_max) for r in layers.itertuples()}
    return out | {(int(r.epoch), "network"): (r.mean, r.mass) for r in network.itertuples()}


def ratio(arch: str, input_shape: tuple[int, ...]) -> float:
    model = create_model(arch, input_shape=input_shape, num_classes=10)
    states = checkpoints(model)
    ours(model, states)  # scipy's import and the fx trace are one-off costs of a process, not of the method
    best = {"seed": float("inf"), "ours": float("inf")}
    results = {}
    for _ in range(REPEATS):
        for name, method in (("seed", seed_method), ("ours", ours)):
            start = time.perf_counter()
            results[name] = method(model, states)
            best[name] = min(best[name], time.perf_counter() - start)
    results["ours"] = as_dict(results["ours"])
    assert results["seed"].keys() == results["ours"].keys()
    worst = max(abs(a - b) for key in results["seed"] for a, b in zip(results["seed"][key], results["ours"][key]))
    assert worst <= 1e-5, worst  # float32 (seed) against float64 (ours): the masses agree exactly here
    layers = len(results["seed"]) // len(states) - 1
    print(f"{arch}: {len(states)} checkpoints, {layers} conv layers; seed {best['seed'] * 1e3:.1f} ms, "
          f"ours (with the tests) {best['ours'] * 1e3:.1f} ms; max |difference| {worst:.1e}")  # fmt: skip
    return best["seed"] / best["ours"]


def main() -> None:
    torch.set_num_threads(1)
    lenet = ratio("lenet", (1, 28, 28))
    vgg8 = ratio("vgg8_maxpool", (3, 32, 32))
    print(f"ratio_vs_seed={lenet:.2f} ratio_vs_seed_vgg8={vgg8:.2f}")


if __name__ == "__main__":
    main()
