"""Optimisers and learning-rate schedules, stepped once per minibatch."""

from __future__ import annotations

import math

import torch

from netgeom.errors import NetgeomError
from netgeom.params import TrainParams, checkpoint_epochs  # noqa: F401  (re-exported: the loop's import)


def make_optimizer(parameters, p: TrainParams) -> torch.optim.Optimizer:
    # foreach: one kernel per update op over all tensors instead of one per tensor. PyTorch picks
    # it only on GPUs by default; on the CPU it cuts Adam's step by a third with bit-identical
    # weights (tests/test_training.py). `fused_optimizer`: one kernel for the whole update, 3.5x
    # faster again on the CPU, but its arithmetic differs in the last bits, so it is opt-in.
    kernel = {"fused": True} if p.fused_optimizer else {"foreach": True}
    if p.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=p.lr, momentum=p.momentum, nesterov=p.nesterov, weight_decay=p.weight_decay, **kernel)
    if p.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=p.lr, weight_decay=p.weight_decay, **kernel)
    if p.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=p.lr, weight_decay=p.weight_decay, **kernel)
    raise NetgeomError("train.optimizer", f"unknown {p.optimizer!r}; allowed: sgd, adam, adamw")


def lr_factor(step: int, steps_per_epoch: int, p: TrainParams) -> float:
    """Multiplier of `train.lr` at optimiser step `step` (0-based).

    The warm-up rises linearly from `warmup_start_lr` and reaches `lr` exactly at the first step
    after it (the seed's warm-up never did). Step schedules count epochs from the start of
    training; cosine anneals over the steps after the warm-up.
    """
    warmup = p.warmup_epochs * steps_per_epoch
    if step < warmup:
        start = p.warmup_start_lr / p.lr
        return start + (1.0 - start) * step / warmup
    epoch = step // steps_per_epoch
    if p.schedule == "constant":
        return 1.0
    if p.schedule == "step":
        return p.gamma ** (epoch // p.step_size)
    if p.schedule == "multistep":
        return p.gamma ** sum(epoch >= m for m in p.milestones)
    if p.schedule == "cosine":
        total = max(1, p.epochs * steps_per_epoch - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / total)))
    raise NetgeomError("train.schedule", f"unknown {p.schedule!r}; allowed: constant, step, multistep, cosine")


def make_scheduler(optimizer, steps_per_epoch: int, p: TrainParams) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps_per_epoch, p))


