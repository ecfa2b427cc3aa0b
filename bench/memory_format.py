"""Benchmark: channels-last vs NCHW layout for conv nets on the CPU (netgeom.memory_format).

For each zoo model, in one run and on the same inputs: a training step (forward, backward) and an
eval-mode forward pass, each in NCHW (PyTorch's default, the baseline) and in channels-last (what
`train.memory_format: auto` and the interpolation engine use for conv nets). Best of R repeats,
layouts interleaved. The outputs of the two layouts are compared (max |difference| of logits).

Run: .venv/bin/python bench/memory_format.py  [env BENCH_THREADS (default 1), BENCH_QUICK=1]
Last line: train_speedup=<geometric mean NCHW/channels-last> eval_speedup=<same for eval passes>
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from netgeom.models import create_model

THREADS = int(os.environ.get("BENCH_THREADS", "1"))
QUICK = bool(os.environ.get("BENCH_QUICK"))
REPEATS = 2 if QUICK else 4
BATCH = 64 if QUICK else 128
MODELS = [("cnn_k", {"width": 8}), ("cnn_k", {"width": 32}), ("resnet18_k", {"width": 8}), ("vgg11", {"width": 16}), ("resnet20", {})]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    torch.set_num_threads(THREADS)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (BATCH,), generator=g)
    print(f"threads={THREADS}, batch {BATCH}, 3x32x32, best of {REPEATS}")
    train_ratios, eval_ratios = [], []
    for arch, options in MODELS:
        torch.manual_seed(0)
        model = create_model(arch, (3, 32, 32), 10, batch_norm=True, **options)
        start_state = {k: v.clone() for k, v in model.state_dict().items()}
        best = {}
        outputs = {}
        for _ in range(REPEATS + 1):  # the first round warms up oneDNN's kernels
            for layout in (torch.contiguous_format, torch.channels_last):
                model.to(memory_format=layout)
                xx = x.contiguous(memory_format=layout)

                def step():
                    model.train()
                    loss = F.cross_entropy(model(xx), y)
                    model.zero_grad(set_to_none=True)
                    loss.backward()

                def forward():
                    model.eval()
                    with torch.no_grad():
                        model(xx)

                for kind, fn in (("train", step), ("eval", forward)):
                    t = timed(fn)
                    best[kind, layout] = min(best.get((kind, layout), np.inf), t)
        ratio_train = best["train", torch.contiguous_format] / best["train", torch.channels_last]
        ratio_eval = best["eval", torch.contiguous_format] / best["eval", torch.channels_last]
        for layout in (torch.contiguous_format, torch.channels_last):  # same weights and BN statistics
            model.load_state_dict(start_state)
            model.to(memory_format=layout).eval()
            with torch.no_grad():
                outputs[layout] = model(x.contiguous(memory_format=layout))
        diff = (outputs[torch.contiguous_format] - outputs[torch.channels_last]).abs().max().item()
        train_ratios.append(ratio_train)
        eval_ratios.append(ratio_eval)
        name = f"{arch} {options}" if options else arch
        print(
            f"{name:28s} train step NCHW {best['train', torch.contiguous_format] * 1e3:7.1f} ms  channels-last "
            f"{best['train', torch.channels_last] * 1e3:7.1f} ms  ({ratio_train:.2f}x)   eval NCHW "
            f"{best['eval', torch.contiguous_format] * 1e3:7.1f} ms  channels-last {best['eval', torch.channels_last] * 1e3:7.1f} ms  "
            f"({ratio_eval:.2f}x)   max |logit diff| {diff:.1e}"
        )
    gmean = lambda r: float(np.exp(np.mean(np.log(r))))  # noqa: E731
    print(f"train_speedup={gmean(train_ratios):.3f} eval_speedup={gmean(eval_ratios):.3f}")


if __name__ == "__main__":
    main()
