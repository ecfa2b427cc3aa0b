"""Benchmark: one star training step against one regular training step, same model and batch.

Compares, in one run, interleaved, on the same model and minibatch:
  regular - zero_grad, F.cross_entropy(model(x), y).backward(), loss.item(), optimizer.step()
            (the training loop's step);
  star    - zero_grad, draw_anchor_and_t (one of N anchors, t ~ uniform), star_step (lerp of
            every parameter towards the anchor, functional_call forward with BN in train mode,
            backward), optimizer.step().
The floor of a star step is the regular step plus the interpolation of the parameters, so the
ratio star / regular is the price of the star objective. Target: <= 1.3.

Two models: the zoo's `mlp` width 256 depth 2 on digits-sized inputs (1, 8, 8), and `cnn_k` with
BN on 3x32x32 in channels-last layout (as `netgeom train` runs conv nets on CPU; anchors prepared
in the same layout by `anchor_parameters`). One model, optimizer and batch serve both methods.
Adam, batch 128, one torch thread; warm-up, then single steps, alternating, and the best step of
each method (the ratio of medians and of the best thread CPU times are printed too): the minimum
is what survives load bursts on a shared CPU.

What a user pays per step is the second part: one epoch of netgeom's own training loop
(`netgeom.training.loop.train`, as `netgeom train` and `netgeom star train` run it: batch
gathering, the loss read once per epoch, Adam's foreach step) with the regular objective and with
the star objective (built as `netgeom star train` builds it), on BENCH_EPOCH_SAMPLES random samples,
for the MLP without BN, the MLP with BN and the BN conv net; the loop's own `epoch_seconds`
(training steps only), best of BENCH_EPOCH_REPEATS epochs.

Run: .venv/bin/python bench/star.py
     [env BENCH_THREADS (default 1), BENCH_ANCHORS (8), BENCH_REPEATS (25: 20x that many mlp steps,
     2x that many cnn steps per method), BENCH_WIDTH (cnn_k width, 8), BENCH_QUICK=1]
Last line: ratio_vs_regular_step=<best star step / best regular step> of the BN conv net,
           then epoch_ratio_<case>=<star epoch / regular epoch> for mlp, mlp_bn, cnn_bn.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from netgeom.data.bundle import DataBundle, TrainSet
from netgeom.data.sources import DatasetInfo
from netgeom.memory_format import in_format, preferred_format
from netgeom.models import create_model
from netgeom.params import TrainParams
from netgeom.progress import set_quiet
from netgeom.studies.star import (
    anchor_parameters,
    draw_anchor_and_t,
    star_objective,
    star_step,
)
from netgeom.training.loop import TrainingHooks, train
from netgeom.training.schedule import make_optimizer

THREADS = int(os.environ.get("BENCH_THREADS", "1"))  # the 2-core CPU is shared: one thread measures steadily
ANCHORS = int(os.environ.get("BENCH_ANCHORS", "8"))
QUICK = bool(os.environ.get("BENCH_QUICK"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "5" if QUICK else "25"))
WIDTH = int(os.environ.get("BENCH_WIDTH", "8"))
BATCH = 128
CASES = {  # name: (arch, input shape, options, timed steps per method)
    "mlp": ("mlp", (1, 8, 8), {"width": 256, "depth": 2}, 20 * REPEATS),
    "cnn_k+bn": ("cnn_k", (3, 32, 32), {"width": WIDTH, "batch_norm": True}, 2 * REPEATS),
}


def build(arch, shape, options, seed):
    torch.manual_seed(seed)
    return create_model(arch, shape, 10, **options)


def setup(arch, shape, options):
    model = build(arch, shape, options, 0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, *shape, generator=g)
    y = torch.randint(0, 10, (BATCH,), generator=g)
    layout = preferred_format("auto", model, x)
    model.to(memory_format=layout).train()
    x = in_format(x, layout)
    anchors = [anchor_parameters(model, build(arch, shape, options, 100 + n).state_dict()) for n in range(ANCHORS)]
    return model, x, y, anchors


def regular_step(model, optimizer, x, y):
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    loss.item()  # the loop reads every loss (finiteness check, running mean); star_step returns it
    optimizer.step()


def star_training_step(model, optimizer, anchors, generator, x, y):
    index, t = draw_anchor_and_t(generator, len(anchors), "uniform")
    optimizer.zero_grad(set_to_none=True)
    star_step(model, anchors[index], t, x, y)
    optimizer.step()


def timed(fn) -> tuple[float, float]:
    """(wall seconds, this thread's CPU seconds): CPU time leaves out preemption by other work."""
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - wall, time.thread_time() - cpu


def bench_case(name, arch, shape, options, repeats) -> float:
    # One model and one optimizer serve both methods, so neither gets a luckier memory placement;
    # where the weights wander during the run does not change the cost of a step.
    model, x, y, anchors = setup(arch, shape, options)
    optimizer = make_optimizer(model.parameters(), TrainParams(optimizer="adam", lr=1e-3))  # the loop's own
    generator = torch.Generator().manual_seed(2)
    methods = {
        "regular": lambda: regular_step(model, optimizer, x, y),
        "star": lambda: star_training_step(model, optimizer, anchors, generator, x, y),
    }
    for _ in range(3):  # warm-up: allocator, oneDNN primitives, Adam state
        for fn in methods.values():
            fn()
    times = {k: [] for k in methods}
    for _ in range(repeats):  # single steps, interleaved: load bursts on the shared CPU hit both
        for k, fn in methods.items():
            times[k].append(timed(fn))
    best = {k: min(w for w, _ in v) for k, v in times.items()}
    median = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    best_cpu = {k: min(c for _, c in v) for k, v in times.items()}
    n_params = sum(p.numel() for p in model.parameters())
    ratio = best["star"] / best["regular"]
    print(
        f"{name:9s} {n_params:6d} params in {len(anchors[0])} tensors, batch {BATCH}, {len(anchors)} anchors, best of {repeats}: "
        f"regular {best['regular'] * 1e3:7.3f} ms/step  star {best['star'] * 1e3:7.3f} ms/step  "
        f"star/regular {ratio:.3f} (target <= 1.3; medians {median['star'] / median['regular']:.3f}, "
        f"best thread CPU time {best_cpu['star'] / best_cpu['regular']:.3f})"
    )
    return ratio


EPOCH_SAMPLES = int(os.environ.get("BENCH_EPOCH_SAMPLES", "2048" if QUICK else "8192"))
EPOCH_REPEATS = int(os.environ.get("BENCH_EPOCH_REPEATS", "2" if QUICK else "3"))
EPOCH_CASES = {  # name: (arch, input shape, options)
    "mlp": ("mlp", (1, 8, 8), {"width": 256, "depth": 2}),
    "mlp_bn": ("mlp", (1, 8, 8), {"width": 256, "depth": 2, "batch_norm": True}),
    "cnn_bn": ("cnn_k", (3, 32, 32), {"width": WIDTH, "batch_norm": True}),
}


def loop_epoch_seconds(arch, shape, options, star: bool) -> float:
    """The best `epoch_seconds` of netgeom's training loop, regular or star objective."""
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(EPOCH_SAMPLES, *shape, generator=g), torch.randint(0, 10, (EPOCH_SAMPLES,), generator=g)
    info = DatasetInfo("random", shape, 10, (0.0,) * shape[0], (1.0,) * shape[0])
    data = DataBundle(info, TrainSet(x, y, y.clone(), torch.arange(EPOCH_SAMPLES)), (x[:256], y[:256]), (x[:256], y[:256]))
    anchors = [build(arch, shape, options, 100 + n).state_dict() for n in range(ANCHORS)]

    def make_objective(model):  # as `netgeom star train` builds it (stages/star.py: run_star)
        placed = [anchor_parameters(model, state) for state in anchors]

        def objective(model, inputs, targets, generator):
            n, t = draw_anchor_and_t(generator, len(placed), "uniform")
            return star_objective(model, dict(model.named_parameters()), placed[n], t, inputs, targets)

        return objective

    p = TrainParams(epochs=EPOCH_REPEATS, batch_size=BATCH, optimizer="adam", lr=1e-3, eval_every=EPOCH_REPEATS, checkpoints={"init": False, "epochs": []})
    with tempfile.TemporaryDirectory() as tmp:
        result = train(build(arch, shape, options, 0), data, p, seed=0, workdir=Path(tmp), hooks=TrainingHooks(make_objective if star else None))
    return float(result.history["epoch_seconds"].dropna().min())


def main() -> None:
    torch.set_num_threads(THREADS)
    set_quiet(True)
    print(f"threads={THREADS}, Adam, single steps interleaved, best step per method")
    ratios = {name: bench_case(name, *case) for name, case in CASES.items()}
    epochs = {}
    for name, case in EPOCH_CASES.items():
        regular, star = loop_epoch_seconds(*case, star=False), loop_epoch_seconds(*case, star=True)
        epochs[name] = star / regular
        steps = -(-EPOCH_SAMPLES // BATCH)
        print(f"{name:9s} training loop, {steps} steps per epoch: regular {regular / steps * 1e3:7.3f} ms/step  "
              f"star {star / steps * 1e3:7.3f} ms/step  star/regular {epochs[name]:.3f}")  # fmt: skip
    print(f"ratio_vs_regular_step={ratios['cnn_k+bn']:.3f} " + " ".join(f"epoch_ratio_{k}={v:.3f}" for k, v in epochs.items()))


if __name__ == "__main__":
    main()
