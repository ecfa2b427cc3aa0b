"""A trained run in a notebook: `netgeom.open_run("mlp_w64-n0.2-r0")`.

`open_run` reads a finished run folder (artifacts/runs/<run>/, written by `make repro` or
`netgeom train`) and hands back its record (run.json, the history) and, on demand, its model at
any checkpoint and the exact data it trained on. Checkpoints are safetensors files and run.json
is JSON, so opening a run never executes code from the folder.

The data is rebuilt from the run's own run.json (its cell-applied params: seed, data, noise,
model) with the project's split and noisy labels, then checked against the content hash the
run recorded: data that differs from what the run saw (a re-made split, other labels, replaced
raw files) is refused rather than silently paired with the run's weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from netgeom.data.bundle import DataBundle
from netgeom.errors import NetgeomError
from netgeom.layout import RUN_FILE, Layout
from netgeom.params import Params, validate
from netgeom.runs import Run, known_runs, load_cell_data, load_state, model_for_run, read_run


@dataclass(frozen=True, eq=False)  # its fields are tensors: == compares identity
class RunData:
    """The exact data a run trained on, as CPU tensors.

    x: training inputs (normalised, input corruption applied), (N, *input_shape); y: the labels
    it trained on (noisy where `noisy`); clean: the original labels; noisy: bool (N,), y != clean;
    sample_id: each sample's index in the dataset's official training split; val and test:
    (inputs, labels) with clean labels (val is empty when data.val_size is 0).
    """

    x: Tensor
    y: Tensor
    clean: Tensor
    noisy: Tensor
    sample_id: Tensor
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    num_classes: int
    input_shape: tuple[int, ...]
    bundle: DataBundle = field(repr=False)

    @classmethod
    def from_bundle(cls, bundle: DataBundle) -> RunData:
        train = bundle.train
        return cls(
            x=train.x,
            y=train.y,
            clean=train.clean,
            noisy=train.is_noisy,
            sample_id=train.sample_id,
            val=bundle.val,
            test=bundle.test,
            num_classes=bundle.info.num_classes,
            input_shape=tuple(bundle.info.input_shape),
            bundle=bundle,
        )

    @property
    def train(self) -> tuple[Tensor, Tensor]:
        """(x, y): the training inputs with the labels the run trained on."""
        return self.x, self.y

    def digest(self) -> str:
        """The content hash of every tensor (run.json's `dataset.digest` for the run's data)."""
        return self.bundle.digest()


@dataclass(eq=False)
class NotebookRun:
    """A finished run: its record, and its models and data on demand.

    name: the run folder's name; info: run.json; history: history.csv (one row per evaluated
    epoch); epochs: the checkpointed epochs, ascending; epoch: the checkpoint `model()` and
    `state()` load when given none (the final one unless `open_run` was given another).
    """

    name: str
    folder: Path
    info: dict = field(repr=False)
    metrics: dict = field(repr=False)
    history: pd.DataFrame = field(repr=False)
    epochs: list[int]
    epoch: int
    layout: Layout = field(repr=False)
    checkpoints: dict[int, Path] = field(repr=False)

    @property
    def params(self) -> Params:
        """The run's own params (seed, data, noise, model, train; cell applied), from run.json."""
        return validate(self.info["params"], Params)

    def checkpoint(self, epoch: int | None = None) -> Path:
        """The safetensors file of `epoch` (default: `self.epoch`)."""
        epoch = self.epoch if epoch is None else epoch
        if isinstance(epoch, bool) or epoch not in self.checkpoints:
            raise NetgeomError(
                "epoch",
                f"{self.name} has no checkpoint at epoch {epoch!r}; it has {self.epochs}",
            )
        return self.checkpoints[epoch]

    def state(self, epoch: int | None = None) -> dict[str, Tensor]:
        """The state dict at `epoch` (default: `self.epoch`), CPU tensors."""
        return load_state(self.checkpoint(epoch), fits=model_for_run(self.info))

    def model(
        self, epoch: int | None = None, device: torch.device | str | None = None
    ) -> nn.Module:
        """The run's model with the weights of `epoch` (default: `self.epoch`), in eval mode,
        on `device` (default: the CPU)."""
        device = torch.device(device) if device is not None else None
        return model_for_run(self.info, self.checkpoint(epoch), device)

    @cached_property
    def data(self) -> RunData:
        """The split the run trained on (read once, then kept); refused when it is not the data
        the run recorded (`dataset.digest` in run.json)."""
        bundle = load_cell_data(self.params, self.layout)
        recorded = self.info.get("dataset", {}).get("digest")
        if recorded is not None and bundle.digest() != recorded:
            raise NetgeomError(
                "data",
                f"the data under {self.layout.root} is not what {self.name} trained on "
                f"(its digest differs from run.json's {recorded}): the split, the noisy labels "
                "or the raw data changed since; re-run `make repro` (or split, corrupt and train)",
            )
        return RunData.from_bundle(bundle)


def open_run(
    name: str, root: str | Path = ".", epoch: int | None = None
) -> NotebookRun:
    """The finished run `name` (a folder under <root>/artifacts/runs, e.g. "mlp_w64-n0.2-r0").

    `epoch` picks the checkpoint that `model()` and `state()` load by default (the final one
    when None). An unknown name is refused with the names of some runs that exist."""
    name = str(name)
    layout = Layout(Path(root).resolve())
    folder = layout.run_dir(name)
    if (
        Path(name).name != name
        or name in ("", ".", "..")
        or not (folder / RUN_FILE).exists()
    ):
        raise NetgeomError(
            "run",
            f"no finished run {name!r} under {layout.runs_root}; {known_runs(layout, name)}",
        )
    run: Run = read_run(folder)
    checkpoints = dict(run.checkpoints)  # refuses a run with a missing checkpoint
    epochs = sorted(checkpoints)
    chosen = epochs[-1] if epoch is None else epoch
    if isinstance(chosen, bool) or chosen not in checkpoints:
        raise NetgeomError(
            "epoch", f"{name} has no checkpoint at epoch {chosen!r}; it has {epochs}"
        )
    return NotebookRun(
        name=run.name,
        folder=folder,
        info=run.info,
        metrics=run.metrics,
        history=run.history,
        epochs=epochs,
        epoch=chosen,
        layout=layout,
        checkpoints=checkpoints,
    )
