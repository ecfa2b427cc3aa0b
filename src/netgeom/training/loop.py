"""The training loop: tensors batched by indexing, a checkpoint schedule, bit-exact resume.

All randomness after initialisation (batch order, augmentation) comes from one CPU
torch.Generator whose state is saved with every epoch, so a run resumed after a crash ends with
the same weights as an uninterrupted one (on the CPU), and the same draws whatever the device.
The model and the in-memory data move to the device once; the step never waits for the device:
losses accumulate there and are checked for inf/NaN once per epoch.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from netgeom.batching import batch_spans
from netgeom.data.augment import augment, raw_zero
from netgeom.data.bundle import DataBundle
from netgeom.errors import NetgeomError
from netgeom.memory_format import in_format, preferred_format
from netgeom.modes import eval_mode
from netgeom.params import TrainParams
from netgeom.precision import warn_if_bf16_is_emulated
from netgeom.progress import note, progress
from netgeom.training.checkpoints import (
    checkpoint_name,
    list_checkpoints,
    load_training_state,
    restore_training_state,
    save_checkpoint,
    save_training_state,
)
from netgeom.training.schedule import checkpoint_epochs, make_optimizer, make_scheduler


RESUME_SECONDS = 30.0

# (model, inputs, targets, generator) -> the minibatch loss; the default is the cross-entropy.
# An objective's random draws come from the loop's generator, after the batch's augmentation.
Objective = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def cross_entropy(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return F.cross_entropy(model(inputs), targets)


def smoothed_cross_entropy(label_smoothing: float) -> Objective:
    """The cross-entropy against labels smoothed by `label_smoothing` (plain at 0)."""
    if label_smoothing == 0:
        return cross_entropy

    def objective(model, inputs, targets, generator):
        return F.cross_entropy(model(inputs), targets, label_smoothing=label_smoothing)

    return objective


@dataclass
class TrainResult:
    history: pd.DataFrame  # one row per epoch (evaluation columns filled on evaluation epochs)
    final: dict[str, float]  # the last evaluation
    checkpoints: list[tuple[int, Path]]
    stopped_early: bool
    scheduled: list[int]  # the checkpoint epochs the schedule wrote (up to an early stop)
    started: float  # wall-clock seconds since the epoch: the first attempt's start, and the end
    ended: float

    @property
    def missing_checkpoints(self) -> list[int]:
        present = {e for e, _ in self.checkpoints}
        return [e for e in self.scheduled if e not in present]


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits of `model` (in eval mode) on `x`, batched; the model's mode is restored."""
    with eval_mode(model):
        return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def evaluate(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> tuple[float, float, torch.Tensor]:
    """Mean cross-entropy, accuracy, and the per-sample correctness."""
    if len(y) == 0:
        return float("nan"), float("nan"), torch.zeros(0, dtype=torch.bool)
    logits = predict(model, x, batch_size)
    correct = logits.argmax(1) == y
    return F.cross_entropy(logits, y).item(), correct.float().mean().item(), correct


def evaluate_bundle(model, data: DataBundle, batch_size: int) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for name, (x, y) in data.eval_sets().items():
        loss, acc, correct = evaluate(model, x, y, batch_size)
        metrics[f"{name}_loss"], metrics[f"{name}_acc"] = loss, acc
        if name == "train":
            noisy = data.train.is_noisy
            # Clean samples: generalisation on the training set; noisy ones: memorisation of
            # the wrong label (1.0 = every flipped label fitted).
            metrics["train_acc_clean"] = correct[~noisy].float().mean().item() if (~noisy).any() else float("nan")
            metrics["train_acc_noisy"] = correct[noisy].float().mean().item() if noisy.any() else float("nan")
    return metrics


def _should_stop(metrics: dict[str, float], p: TrainParams, previous: dict[str, float] | None = None) -> bool:
    if p.stop_loss is not None and metrics.get("train_loss", math.inf) <= p.stop_loss:
        return True
    if p.stop_accuracy is not None and metrics.get("train_acc", 0.0) >= p.stop_accuracy:
        return True
    return _plateaued(metrics, p, previous)


def _plateaued(metrics: dict[str, float], p: TrainParams, previous: dict[str, float] | None) -> bool:
    """The hyperplane seed's --kill-plateaus: the validation accuracy of this evaluation equals
    the previous evaluation's exactly (a net that stopped learning), within the first N epochs."""
    if p.kill_plateaus_within is None or previous is None or metrics["epoch"] > p.kill_plateaus_within:
        return False
    return metrics.get("val_acc") == previous.get("val_acc")


@dataclass(frozen=True)
class TrainingHooks:
    """Where a variant of training plugs into the loop (the star study uses the first two).

    `make_objective(model)` builds the minibatch loss once the model sits on its device and in
    its memory layout (default: cross-entropy); `before_evaluation(model)` runs before every
    evaluation and checkpoint (e.g. a star model refreshes its BN statistics there);
    `on_epoch(epoch, row)` runs after each epoch is recorded (tests crash a run there);
    `evaluate(model, data, batch_size)` gives an evaluation's metrics, `<split>_loss` at least
    (default: `evaluate_bundle`, cross-entropy and accuracy; an autoencoder has no accuracy)."""

    make_objective: Callable[[torch.nn.Module], Objective] | None = None
    before_evaluation: Callable[[torch.nn.Module], None] | None = None
    on_epoch: Callable[[int, dict], None] | None = None
    evaluate: Callable[[torch.nn.Module, DataBundle, int], dict[str, float]] | None = None


def train(
    model: torch.nn.Module,
    data: DataBundle,
    p: TrainParams,
    *,
    seed: int,
    workdir: Path,
    metadata: dict | None = None,
    resume: bool = True,
    device: torch.device | str = "cpu",
    hooks: TrainingHooks = TrainingHooks(),
) -> TrainResult:
    """Train `model` in place, writing checkpoints and resume state into `workdir`.

    `metadata` (e.g. the params hash) is stored in every checkpoint; resume only continues a
    state whose metadata matches, otherwise `workdir` is cleared and training starts over.
    `hooks` (TrainingHooks) change the objective and what runs around evaluations.
    """
    workdir = Path(workdir)
    metadata = dict(metadata or {})
    device = torch.device(device)
    model.to(device)
    data = data.to(device)
    # A disabled autocast still costs its context switch on every step: enter it only for bf16.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if p.precision == "bf16" else contextlib.nullcontext()
    if p.precision == "bf16" and device.type == "cpu":
        warn_if_bf16_is_emulated()
    layout = preferred_format(p.memory_format, model, data.train.x)
    if layout != torch.contiguous_format:
        model.to(memory_format=layout)  # strides only: state_dict values and checkpoints are unchanged
        data = data.in_format(layout)
    if p.kill_plateaus_within is not None and len(data.val[1]) == 0:
        raise NetgeomError("train.kill_plateaus_within", "compares validation accuracies: needs a validation split (data.val_size > 0)")
    objective = hooks.make_objective(model) if hooks.make_objective else smoothed_cross_entropy(p.label_smoothing)
    prepare = hooks.before_evaluation or (lambda model: None)
    measure = hooks.evaluate or evaluate_bundle
    x, y = data.train.x, data.train.y
    black = raw_zero(data.info.mean, data.info.std, x.device) if p.augment else None  # the crop's padding
    n = len(y)
    steps_per_epoch = math.ceil(n / p.batch_size)
    optimizer = make_optimizer(model.parameters(), p)
    scheduler = make_scheduler(optimizer, steps_per_epoch, p)
    generator = torch.Generator().manual_seed(seed)
    scheduled = set(checkpoint_epochs(p))
    history: list[dict] = []
    start = 0

    saved = _resumable_state(workdir) if resume else None
    if saved and saved[1].get("metadata") == metadata:
        start = restore_training_state(*saved, model=model, optimizer=optimizer, scheduler=scheduler, generator=generator)
        history = saved[1]["history"]
        started = float(saved[1].get("started", time.time()))
        if 0 < start < p.epochs and not saved[1].get("stopped"):  # an earlier run stopped midway: say where this one picks up
            note(f"{workdir.name}: resuming after epoch {start} of {p.epochs} from an earlier run that stopped ({workdir})")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
        started = time.time()

    last_state_save = -math.inf

    def finish_epoch(epoch: int, row: dict, stop: bool) -> None:
        nonlocal last_state_save
        history.append(row)
        checkpoint = epoch in scheduled or stop or epoch == p.epochs
        if checkpoint:
            save_checkpoint(workdir, epoch, model.state_dict(), {"step": epoch * steps_per_epoch, "metrics": row, **metadata})
        if hooks.on_epoch:
            hooks.on_epoch(epoch, row)
        # The resume state (model + optimizer + RNG + history) is saved at checkpoints and at most
        # every RESUME_SECONDS otherwise: resuming replays the epochs since, bit-exactly, and
        # short epochs don't pay a write each.
        if not (checkpoint or time.monotonic() - last_state_save >= RESUME_SECONDS):
            return
        last_state_save = time.monotonic()
        save_training_state(
            workdir,
            epoch=epoch,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            generator=generator,
            extra={"metadata": metadata, "history": history, "stopped": stop, "started": started},
        )

    if start == 0 and not history:
        prepare(model)
        finish_epoch(0, {"epoch": 0, "lr": optimizer.param_groups[0]["lr"], **measure(model, data, p.eval_batch_size)}, False)

    stopped = start > 0 and bool(saved[1].get("stopped"))  # a finished early exit stays finished
    bar = progress(range(start + 1, p.epochs + 1), desc="epochs", total=p.epochs - start)
    for epoch in [] if stopped else bar:
        began = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        mean_loss = _train_epoch(model, objective, optimizer, scheduler, x, y, p, generator, autocast, layout, black)
        if not math.isfinite(mean_loss):
            last = list_checkpoints(workdir)
            where = f"{workdir / checkpoint_name(last[-1][0])}.safetensors" if last else "none"
            raise NetgeomError("train", f"the loss became {mean_loss} during epoch {epoch}; last good checkpoint: {where}; lower train.lr")
        row = {"epoch": epoch, "lr": lr, "train_loss_running": mean_loss, "epoch_seconds": time.perf_counter() - began}
        stop = False
        if epoch % p.eval_every == 0 or epoch == p.epochs or epoch in scheduled:
            prepare(model)
            row.update(measure(model, data, p.eval_batch_size))
            stop = _should_stop(row, p, previous=next((r for r in reversed(history) if r["epoch"] > 0 and "val_acc" in r), None))
        finish_epoch(epoch, row, stop)
        if stop:
            stopped = True
            break

    frame = pd.DataFrame(history)
    evaluated = frame.dropna(subset=["test_loss"]) if "test_loss" in frame else frame
    final = {k: float(v) for k, v in evaluated.iloc[-1].items()} if len(evaluated) else {}
    last = int(frame["epoch"].iloc[-1])
    written = sorted({e for e in scheduled if e <= last} | {last})
    return TrainResult(frame, final, list_checkpoints(workdir), stopped, written, started, time.time())


def _train_epoch(model, objective, optimizer, scheduler, x, y, p: TrainParams, generator, autocast, layout, black=None) -> float:
    """One pass over the training set in a seeded random order; the sample-weighted mean loss."""
    model.train()
    n = len(y)
    order = torch.randperm(n, generator=generator).to(x.device)
    losses, sizes = [], []  # kept on the device: read once per epoch, not once per step
    for lo, hi in batch_spans(n, p.batch_size):
        index = order[lo:hi]
        inputs = in_format(augment(x[index], generator, black), layout) if p.augment else x[index]
        with autocast:
            loss = objective(model, inputs, y[index], generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if p.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip_norm)
        optimizer.step()
        scheduler.step()
        losses.append(loss.detach())
        sizes.append(len(index))
    # the epoch's one wait for the device; summed in step order as per-step .item() would
    return sum(value * size for value, size in zip(torch.stack(losses).tolist(), sizes)) / n


def _resumable_state(workdir: Path):
    """The saved resume state; an unreadable one is a lost cache, not a result: say so, start over."""
    try:
        return load_training_state(workdir)
    except NetgeomError as exc:
        note(f"{exc}; starting this run over from epoch 0")
        return None
