"""Benchmark: the fp32 GFLOP/s a training epoch achieves, against a plain matmul's on the same threads.

A width-1024 MLP (one hidden layer: 784 -> 1024 -> 10) trained EPOCHS epochs by netgeom's own loop
(`netgeom.training.loop.train`, Adam, fp32) on Fashion-MNIST-shaped data (60,000 random 1x28x28
images, 10 classes), at batch 128 and 512. The epoch's FLOPs are counted by
torch.utils.flop_counter on one training step (forward + backward; the optimiser's elementwise
update is not counted) times the number of samples; its time is the loop's own `epoch_seconds`
(training steps only, no evaluation), the best of EPOCHS epochs of one training. The baseline, in
the same run and on the same threads: the GFLOP/s of a plain torch.mm of the MLP's largest
product (batch x 784 @ 784 x 1024), best of 20 repeats. Best-of on both sides because this
machine is shared and its load swings within a run. fraction_of_matmul is the smaller of the two batch sizes' ratios; fraction_of_matmul_fused the
same with `train.fused_optimizer` (Adam's fused kernel: faster, not bit-identical).
Goal (issue #22): fraction_of_matmul >= 0.5.

Run: .venv/bin/python bench/train_throughput.py  [env BENCH_THREADS (default 1), BENCH_SAMPLES (60000), BENCH_EPOCHS (3)]
Last line: fraction_of_matmul=<x> fraction_of_matmul_fused=<x> gflops_b128=<x> gflops_b512=<x> matmul_gflops=<x>
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from netgeom.data.bundle import DataBundle, TrainSet
from netgeom.data.sources import DatasetInfo
from netgeom.models import create_model
from netgeom.params import TrainParams
from netgeom.progress import set_quiet
from netgeom.training.loop import train

THREADS = int(os.environ.get("BENCH_THREADS", "1"))
SAMPLES = int(os.environ.get("BENCH_SAMPLES", "60000"))
EPOCHS = int(os.environ.get("BENCH_EPOCHS", "3"))
SHAPE, CLASSES, WIDTH = (1, 28, 28), 10, 1024


def fashion_shaped(n: int) -> DataBundle:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, *SHAPE, generator=g), torch.randint(0, CLASSES, (n,), generator=g)
    info = DatasetInfo("fashion-shaped", SHAPE, CLASSES, (0.0,), (1.0,))
    return DataBundle(info, TrainSet(x, y, y.clone(), torch.arange(n)), (x[:1000], y[:1000]), (x[:1000], y[:1000]))


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("mlp", SHAPE, CLASSES, width=WIDTH, depth=1)


def flops_per_sample(batch: int) -> float:
    net, x, y = model(), torch.randn(batch, *SHAPE), torch.randint(0, CLASSES, (batch,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(net(x), y).backward()
    return counter.get_total_flops() / batch


def epoch_gflops(data: DataBundle, batch: int, fused: bool = False) -> float:
    p = TrainParams(epochs=EPOCHS, batch_size=batch, optimizer="adam", lr=1e-3, eval_every=EPOCHS, checkpoints={"init": False, "epochs": []},
                    fused_optimizer=fused)
    with tempfile.TemporaryDirectory() as tmp:
        result = train(model(), data, p, seed=0, workdir=Path(tmp))
    seconds = float(result.history["epoch_seconds"].min())
    return flops_per_sample(batch) * len(data.train) / seconds / 1e9


def matmul_gflops(batch: int, repeats: int = 20) -> float:
    a, b = torch.randn(batch, 784), torch.randn(784, WIDTH)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(10):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - start) / 10)
    return 2 * batch * 784 * WIDTH / best / 1e9


def main() -> None:
    torch.set_num_threads(THREADS)
    set_quiet(True)
    data = fashion_shaped(SAMPLES)
    achieved = {batch: epoch_gflops(data, batch) for batch in (128, 512)}
    fused = {batch: epoch_gflops(data, batch, fused=True) for batch in (128, 512)}
    plain = {batch: matmul_gflops(batch) for batch in (128, 512)}
    for batch in achieved:
        print(f"batch {batch}: training epoch {achieved[batch]:.1f} GFLOP/s ({fused[batch]:.1f} with train.fused_optimizer), "
              f"plain matmul {plain[batch]:.1f} GFLOP/s ({achieved[batch] / plain[batch]:.2f}, fused {fused[batch] / plain[batch]:.2f}) "
              f"on {THREADS} thread(s)")  # fmt: skip
    fraction = min(achieved[b] / plain[b] for b in achieved)
    fraction_fused = min(fused[b] / plain[b] for b in fused)
    print(f"fraction_of_matmul={fraction:.2f} fraction_of_matmul_fused={fraction_fused:.2f} gflops_b128={achieved[128]:.1f} "
          f"gflops_b512={achieved[512]:.1f} matmul_gflops={max(plain.values()):.1f}")


if __name__ == "__main__":
    main()
