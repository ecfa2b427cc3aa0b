"""Trained runs: the grid cell that names a run, its identity, and its folder read back.

A run folder (artifacts/runs/<run>/) holds checkpoints/, history.csv, metrics.json and run.json.
run.json records the run's identity (a hash of every input that changes its weights: seed,
data, noise, model, train, and the content of the data it saw) and the checkpoint epochs its
schedule wrote; `read_run` refuses a folder whose files are corrupt or whose checkpoints are
incomplete, so no study ever reads a partial run.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from netgeom.cell import Cell, cell_groups
from netgeom.data.bundle import DataBundle, load_bundle, read_labels, read_split
from netgeom.errors import NetgeomError
from netgeom.io import RECREATE, read_csv, read_json_object
from netgeom.layout import RUN_FILE, Layout, check_inside, noise_tag, run_folders, run_name
from netgeom.models import accepted_options, create_model
from netgeom.models.fit import mismatch
from netgeom.params import ModelParams, Params, execution_identity
from netgeom.training.checkpoints import list_checkpoints

# What the readers of a run folder rely on (a hand-edited file is refused in one line, not a traceback).
RUN_FILE_SCHEMA = {
    "run": str,
    "seed": int,
    "params_hash": str,
    "checkpoints": list[int],
    "cell": {"width": int, "noise": float, "replicate": int},
    "dataset": {"input_shape": list[int], "num_classes": int, "digest": str},
    "device": str,
    "params": {"model": {"arch": str}},
    "parameters": int,
}
METRICS_SCHEMA = {"train_acc": float, "test_acc": float, "train_loss": float, "test_loss": float, "epoch": int}


def effective_model(model: ModelParams) -> ModelParams:
    """`model` with only the options its family takes. An option the family ignores is refused,
    unless it holds the params default (then it is dropped, so the run does not record it)."""
    accepted = accepted_options(model.arch) | {"pretrained"}
    defaults = ModelParams(arch=model.arch)
    dropped = {}
    for key, value in model.options().items():
        if key in accepted:
            continue
        if value != getattr(defaults, key):
            raise NetgeomError(
                f"model.{key}",
                f"{model.arch} takes no {key} (it takes {', '.join(sorted(accepted - {'pretrained'})) or 'no options'}); "
                f"set model.{key}: null" + (" (or grid.widths: [64])" if key == "width" else ""),
            )
        dropped[key] = None
    return model.model_copy(update=dropped)


def cell_params(params: Params, cell: Cell) -> Params:
    """`params` with the cell's width, noise level and seed; grid values get params.yaml's checks."""
    model, noise = cell_groups(params, cell)
    return params.model_copy(update={"model": effective_model(model), "noise": noise, "seed": params.seed + cell.replicate})


def default_cell(params: Params) -> Cell:
    return Cell(params.model.width, params.noise.label, 0)


def cell_name(params: Params, cell: Cell) -> str:
    """The run folder's name, e.g. `mlp_w64-n0.2-r0` (fixed by dvc.yaml's matrix)."""
    return run_name(params.model.arch, cell.width, cell.noise, cell.replicate)


def display_name(arch: str, width: int | None, noise: float, seed: int) -> str:
    """What a person reads in the MLflow UI: architecture, width, noise and seed at a glance."""
    return f"{arch}{'' if width is None else f' w{width}'} {noise_tag(noise)} s{seed}"


def file_digest(path: str | Path, key: str) -> str:
    """sha256 of a file's content (NetgeomError(key) when there is no such file)."""
    path = Path(path)
    if not path.is_file():
        raise NetgeomError(key, f"no such file: {path}")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


# The modules whose code decides a run's weights: the model, the data, the training loop.
TRAINING_CODE = ("netgeom.runs", "netgeom.training.loop")


def identity_hash(
    params: Params, data_digest: str, device: str = "cpu", extra: dict | None = None, code: tuple[str, ...] = TRAINING_CODE
) -> str:
    """A run's identity: every input that changes its weights. `params` must be cell-applied
    (its seed is the run's own seed, its model only the options the family takes); `device` is
    the kind trained on (cpu, cuda): kernels differ, so the weights do. On the CPU the thread
    count splits a matmul's sums differently; a pretrained file counts by its content, not its
    path; the training code (the import closure of `code`) by its content, so an edit of it
    trains again. (Threads and the pretrained file are absent at their defaults, 1 and none.)"""
    from netgeom.code import code_digest

    payload = json.dumps(
        {
            "seed": params.seed,
            "code": code_digest(*code),
            **execution_identity(params.execution, device),
            "groups": [params.data.identity_dump(), params.noise.identity_dump(), params.model.identity_dump(), params.train.identity_dump()],
            "data": data_digest,
            **({"pretrained": file_digest(params.model.pretrained, "model.pretrained")} if params.model.pretrained else {}),
            **({"extra": extra} if extra else {}),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def build_model(params: Params, data: DataBundle) -> torch.nn.Module:
    torch.manual_seed(params.seed)  # the initialisation is a function of the seed alone
    return create_model(params.model.arch, data.info.input_shape, data.info.num_classes, **params.model.options())


def load_cell_data(params: Params, layout: Layout, device: torch.device | None = None) -> DataBundle:
    """The cell's data (on `device` when given: moved once, then indexed there)."""
    split = read_split(layout.split_file)
    labels = read_labels(layout.labels_file(params.noise.label), split)
    data = load_bundle(params, split, labels, layout.data_root(params.data.root))
    return data.to(device) if device is not None else data


def study_device(params: Params) -> torch.device:
    """Where a study stage computes: `execution.device` resolved here (auto: a GPU if visible)."""
    from netgeom.devices import resolve_device

    return resolve_device(params.execution.device)


def load_state(path: Path, device: torch.device | None = None, *, fits: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """A checkpoint's weights (on `device` when given). Checkpoints are CPU tensors: a run
    trained on a GPU is studied on the CPU and vice versa. With `fits`, a file whose tensors are
    not exactly that model's (another width or architecture put in its place) is refused in one
    line naming it: the studies call the model functionally, where torch would fail deep inside."""
    from netgeom.training.checkpoints import load_checkpoint

    state = load_checkpoint(path)[0]
    if fits is not None:
        check_fits(state, fits, path)
    return {k: v.to(device) for k, v in state.items()} if device is not None else state


def check_fits(state: dict[str, torch.Tensor], model: torch.nn.Module, path: Path) -> None:
    """Refuse `state` (read from `path`) unless it has exactly `model`'s tensor names and shapes."""
    detail = mismatch(model.state_dict(), state)
    if detail:
        raise NetgeomError(str(path), f"does not fit the run's model ({detail}); {RECREATE}")


def load_weights(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    """`model` with a checkpoint's weights (refused in one line unless they fit it exactly)."""
    model.load_state_dict(load_state(path, fits=model))
    return model


@dataclass
class Run:
    """A finished run folder, read back and checked."""

    name: str
    folder: Path
    info: dict
    metrics: dict
    history: pd.DataFrame

    @property
    def scheduled_epochs(self) -> list[int]:
        return [int(e) for e in self.info["checkpoints"]]

    @property
    def checkpoints(self) -> list[tuple[int, Path]]:
        """(epoch, path) of every scheduled checkpoint; refuses a run with any missing."""
        found = dict(list_checkpoints(self.folder / "checkpoints"))
        missing = [e for e in self.scheduled_epochs if e not in found]
        if missing:
            raise NetgeomError(
                "run",
                f"{self.name}: the checkpoints of epochs {missing} are missing from {self.folder / 'checkpoints'}; "
                "re-run its training (`dvc repro --force` of its train stage, or `netgeom train ... --fresh`)",
            )
        return [(e, found[e]) for e in self.scheduled_epochs]

    def init_checkpoint(self) -> Path:
        """The epoch-0 checkpoint (the initialisation); refused when the schedule had none."""
        if 0 not in self.scheduled_epochs:
            raise NetgeomError(
                "train.checkpoints.init",
                f"{self.name} saved no epoch-0 checkpoint, so its initialisation is unknown; set it true and retrain",
            )
        return dict(self.checkpoints)[0]

    def final_checkpoint(self) -> Path:
        return self.checkpoints[-1][1]

    @property
    def display_name(self) -> str:
        cell, model = self.info["cell"], self.info["params"]["model"]
        return display_name(model["arch"], model.get("width"), cell["noise"], self.info["seed"])


def read_run(folder: Path) -> Run:
    folder = Path(folder)
    hint = "train the run first (`dvc repro` or `netgeom train`)"
    info = read_json_object(folder / RUN_FILE, RUN_FILE_SCHEMA, hint=hint)
    metrics = read_json_object(folder / "metrics.json", METRICS_SCHEMA, hint=hint)
    history = read_csv(folder / "history.csv", ("epoch",), hint=hint)
    return Run(folder.name, folder, info, metrics, history)


def cell_run(params: Params, layout: Layout, cell: Cell) -> tuple[Params, Run]:
    """What a per-run study stage starts from: the cell's settings (`cell_params`) and its finished
    training run (`run.name` is the run folder's name, `cell_name`)."""
    settings = cell_params(params, cell)
    run = open_run(layout, cell_name(settings, cell))
    check_trained_with(run, settings)
    return settings, run


TRAINED_GROUPS = ("data", "noise", "model", "train")  # the groups of a run's identity (with its seed)


def check_trained_with(run: Run, settings: Params) -> None:
    """Refuse to study a run folder that `settings` (its cell's) would not train now: one left
    from before params.yaml or the training code changed, as when a study is run by hand without
    `dvc repro`. Its results would carry today's settings. (The data it recorded is checked
    against the files where a study loads them: `check_same_data`.)"""
    changed = _changed_setting(run.info["params"], settings)
    if changed:
        raise NetgeomError("run", f"{run.name} was trained with {changed}; {_train_again(run)}")
    if identity_hash(settings, run.info["dataset"]["digest"], torch.device(run.info["device"]).type) != run.info["params_hash"]:
        raise NetgeomError("run", f"{run.name} was trained by other training code, execution settings or pretrained weights than now; {_train_again(run)}")


def check_same_data(data: DataBundle, *runs: Run) -> None:
    """Refuse `data` (loaded now) for runs that recorded another content digest when they trained."""
    digest = data.digest()
    for run in runs:
        if run.info["dataset"]["digest"] != digest:
            raise NetgeomError("run", f"{run.name} was trained on other data than the split, labels and data files hold now; {_train_again(run)}")


def _train_again(run: Run) -> str:
    cell = run.info["cell"]
    return f"train it again first (`dvc repro`, or `netgeom train --width {cell['width']} --noise {cell['noise']} --replicate {cell['replicate']}`)"


def _changed_setting(recorded: dict, settings: Params) -> str:
    """The first identity setting whose recorded value differs from `settings`' ('' if none)."""
    if recorded.get("seed") != settings.seed:
        return f"seed {recorded.get('seed')}, params.yaml now gives {settings.seed}"
    for group in TRAINED_GROUPS:
        ours = getattr(settings, group)
        try:
            theirs = type(ours).model_validate(recorded.get(group, {})).identity_dump()
        except ValueError:  # pydantic's ValidationError: settings this version no longer reads
            return f"`{group}` settings this version of netgeom no longer reads"
        then, now = _flat(theirs, group), _flat(ours.identity_dump(), group)
        for key in sorted(then.keys() | now.keys()):
            if then.get(key) != now.get(key):
                return f"{key} {json.dumps(then.get(key))}, params.yaml now gives {json.dumps(now.get(key))}"
    return ""


def _flat(values: dict, prefix: str) -> dict:
    out = {}
    for key, value in values.items():
        out.update(_flat(value, f"{prefix}.{key}") if isinstance(value, dict) else {f"{prefix}.{key}": value})
    return out


def load_run_data(settings: Params, layout: Layout, *runs: Run, device: torch.device | None = None) -> DataBundle:
    """The data `runs` trained on (`settings`: their cell's, as `cell_run` gave them), on `device`
    when given; refused in one line when the files now hold other data than a run saw."""
    data = load_cell_data(settings, layout)
    check_same_data(data, *runs)
    return data.to(device) if device is not None else data


def open_run(layout: Layout, name: str) -> Run:
    if not name or Path(name).name != name or name in (".", ".."):
        raise NetgeomError("run", f"{name!r} is not a run name: give a folder name under {layout.runs_root} (e.g. mlp_w64-n0.2-r0)")
    folder = layout.run_dir(name)
    check_inside(folder, layout.root)
    if not folder.exists():
        raise NetgeomError("run", f"no finished run {name!r} under {layout.runs_root}; {known_runs(layout, name)}")
    return read_run(folder)


SHOWN_NAMES = 5  # run names listed when a name is unknown


def known_runs(layout: Layout, name: str) -> str:
    """What to say about an unknown run name: the closest finished runs (a typo), or that there are none."""
    names = [folder.name for folder in run_folders(layout.runs_root)]
    if not names:
        return (
            "there are no runs yet: run `make repro` (or `netgeom train`) there first"
        )
    close = difflib.get_close_matches(name, names, n=SHOWN_NAMES, cutoff=0.6)
    shown = close + [n for n in names if n not in close][: SHOWN_NAMES - len(close)]
    more = f" and {len(names) - len(shown)} more" if len(names) > len(shown) else ""
    return f"runs there: {', '.join(shown)}{more}"


def model_for_run(info: dict, checkpoint: Path | None = None, device: torch.device | None = None) -> torch.nn.Module:
    """Rebuild a run's model from its run.json (weights from `checkpoint` when given), on `device`."""
    model_params = ModelParams.model_validate(info["params"]["model"])
    dataset = info["dataset"]
    # Without its `pretrained` file: the checkpoints hold the weights, and a fresh model from here
    # is a random initialisation (the random-init curves, reinit's `rand`), not the file's weights.
    options = {k: v for k, v in model_params.options().items() if k != "pretrained"}
    model = create_model(model_params.arch, tuple(dataset["input_shape"]), dataset["num_classes"], **options)
    if checkpoint is not None:
        load_weights(model, checkpoint)
    return model.to(device).eval() if device is not None else model.eval()


def checkpoint_selection(run: Run, which: str | list[int], key: str = "checkpoints") -> list[tuple[int, Path]]:
    """`all`, `final`, or a list of epochs (each must have been checkpointed; else `key` is named)."""
    available = run.checkpoints
    if which == "all":
        return available
    if which == "final":
        return available[-1:]
    by_epoch = dict(available)
    missing = [e for e in which if e not in by_epoch]
    if missing:
        raise NetgeomError(key, f"epochs {missing} were not checkpointed in {run.name}; have {sorted(by_epoch)}")
    return [(e, by_epoch[e]) for e in which]
