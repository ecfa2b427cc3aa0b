"""The `netgeom` command line: one thin command per stage; parsing and validation only.

Every command reads params.yaml through `netgeom.params`, calls the library, and turns bad input
(`NetgeomError`) into one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from netgeom.cli_common import (
    CellNoise,
    CellReplicate,
    CellWidth,
    OneLineErrorsGroup,
    ParamsOption,
    QuietOption,
    TrackOption,
    guarded,
    make_cell,
    setup,
    use_torch,
)
from netgeom.errors import NetgeomError
from netgeom.layout import Layout
from netgeom.params import SEED_MAX, load_params

EMBEDDED_DATASETS = ["digits", "mnist1d", "mnist5k"]  # what `make data` materialises

app = typer.Typer(
    cls=OneLineErrorsGroup,
    help="netgeom: the geometry of trained neural networks, as reproducible DVC stages.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Datasets: materialise, import, fetch, describe.", no_args_is_help=True)
mlflow_app = typer.Typer(help="MLflow store maintenance.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(mlflow_app, name="mlflow")

# --------------------------------------------------------------------------- data


@data_app.command("info")
@guarded
def data_info(name: Annotated[str, typer.Argument(help="Dataset name.")], params: ParamsOption = Path("params.yaml")):
    """Describe a dataset: shape, classes, normalisation, availability."""
    from netgeom.data import get_source

    settings = load_params(params).data if params.exists() else None
    source = get_source(name, settings.model_copy(update={"name": name}) if settings else None)
    root = Layout.here().data_root(settings.root if settings else "data")
    info = source.info
    typer.echo(f"{info.name}: input {info.input_shape}, {info.num_classes} classes, splits {list(info.splits)}")
    typer.echo(f"  mean {info.mean} std {info.std}")
    present = source.is_available(root)
    typer.echo(f"  files: {source.where(root)} ({'present' if present else 'missing'})")
    if present and (origin := source.origin(root)):
        typer.echo(f"  source: {origin}")
    if present and hasattr(source, "verified") and (verified := source.verified(root)) is not None:
        typer.echo(f"  md5: {'matches' if verified else 'differs from'} the published sums")


@data_app.command("materialise")
@guarded
def data_materialise(
    names: Annotated[Optional[list[str]], typer.Argument(help="Datasets (default: the embedded ones).")] = None,
):
    """Write the embedded datasets (digits, mnist1d, mnist5k) under data/ deterministically."""
    from netgeom.data import get_source

    root = Layout.here().data
    for name in names or EMBEDDED_DATASETS:
        written = get_source(name).materialise(root)
        if not written:
            raise NetgeomError("data.name", f"{name} is not an embedded dataset; use `netgeom data fetch {name}`")
        typer.echo(f"{name}: wrote {len(written)} files under {root / name}")


@data_app.command("import")
@guarded
def data_import(
    name: Annotated[str, typer.Argument(help="An IDX dataset: fashion_mnist or mnist.")],
    source: Annotated[Path, typer.Argument(help="A folder with its four IDX files (.gz or plain).")],
    origin: Annotated[str, typer.Option(help="Where the files came from (recorded in provenance.json).")] = "",
):
    """Copy a local copy of a dataset into data/ in torchvision's layout, verifying its md5 sums."""
    from netgeom.data import get_source

    dataset = get_source(name)
    if not hasattr(dataset, "import_from"):
        raise NetgeomError("data.name", f"{name} cannot be imported from local files; IDX datasets: fashion_mnist, mnist")
    target = dataset.import_from(source, Layout.here().data, origin or f"local copy ({source})")
    verified = " (md5 of every file verified)" if dataset.decompressed_md5 else ""  # import_from refused any mismatch
    typer.echo(f"{name}: files in {target}{verified}")


@data_app.command("fetch")
@guarded
def data_fetch(name: Annotated[str, typer.Argument(help="A torchvision dataset name.")]):
    """Download a torchvision dataset into data/ (needs a network)."""
    from netgeom.data import get_source

    source = get_source(name)
    source.fetch(Layout.here().data)
    typer.echo(f"{name}: files in {source.where(Layout.here().data)}")


# --------------------------------------------------------------------------- stages


@app.command()
@guarded
def check(params: ParamsOption = Path("params.yaml"), quiet: QuietOption = False):
    """Stage `check`: validate every params group; create the MLflow store up front."""
    from netgeom.params import read_params_yaml
    from netgeom.stages.check import run_check

    settings, layout = setup(params, quiet, torch=False)
    groups = run_check(settings, layout, written=set(read_params_yaml(params) or {}))
    typer.echo(f"params: {len(groups)} groups valid" + (f"; MLflow store {layout.mlflow_db}" if settings.mlflow.enabled else ""))


@app.command()
@guarded
def split(params: ParamsOption = Path("params.yaml"), quiet: QuietOption = False):
    """Stage `split`: deterministic train/val split (and class subsampling)."""
    from netgeom.stages.split import run_split

    settings, layout = setup(params, quiet)
    result = run_split(settings, layout)
    typer.echo(f"split {result.dataset}: {len(result.train)} train, {len(result.val)} val, classes {result.classes}")


@app.command()
@guarded
def corrupt(
    noise: Annotated[Optional[float], typer.Option(help="Label-noise fraction (default: noise.label).")] = None,
    params: ParamsOption = Path("params.yaml"),
    quiet: QuietOption = False,
):
    """Stage `corrupt`: noisy labels for the training subset (validation stays clean)."""
    from netgeom.stages.corrupt import run_corrupt

    settings, layout = setup(params, quiet)
    summary = run_corrupt(settings, layout, noise)
    typer.echo(
        f"corrupt {summary['kind']} p={summary['label']}: flipped {summary['flipped']} of {summary['train_size']} labels"
    )


@app.command("train")
@guarded
def train_command(
    width: CellWidth = None,
    noise: CellNoise = None,
    replicate: CellReplicate = 0,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore resumable state from a crashed run.")] = False,
    track: TrackOption = True,
    params: ParamsOption = Path("params.yaml"),
    quiet: QuietOption = False,
):
    """Stage `train`: train one grid cell, write artifacts/runs/<run>/ (and log it to MLflow)."""
    from netgeom.cli_training import report_training
    from netgeom.stages.train import run_train

    settings, layout = setup(params, quiet)
    report_training(run_train(settings, layout, make_cell(settings, width, noise, replicate), resume=not fresh, track=track))


@app.command()
@guarded
def curve(
    run_a: Annotated[str, typer.Argument(help="A run under artifacts/runs, optionally @init, @final (default) or @<epoch>.")],
    run_b: Annotated[str, typer.Argument(help="The other end, same form (same architecture and width).")],
    points: Annotated[Optional[int], typer.Option("--points", help="Points on the line (default: interpolation.points).")] = None,
    bn: Annotated[Optional[str], typer.Option("--bn", help="interpolate | recompute | recompute_ema | endpoint_ema | frozen (default: interpolation.bn).")] = None,
    match: Annotated[bool, typer.Option("--match", help="Weight-match B to A (Git Re-Basin) first.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the curve to a .csv or .parquet file.")] = None,
    params: ParamsOption = Path("params.yaml"),
    quiet: QuietOption = False,
):
    """Ad hoc (not a stage): loss and accuracy on the line between two checkpoints, and its barriers.
    Measured on run A's data: params.yaml's split, the training set with A's labels (its noise level)."""
    from netgeom.io import atomic_write_table, check_table_path
    from netgeom.stages.curve import run_curve

    if out is not None:
        check_table_path(out)
    settings, layout = setup(params, quiet)
    table, summary = run_curve(settings, layout, run_a, run_b, points=points, bn=bn, match=match)
    if out is not None:
        atomic_write_table(out, table)
    splits = list(dict.fromkeys(table["split"]))
    wide = table.pivot(index="t", columns="split", values=["loss", "accuracy"]).reindex(columns=splits, level=1)
    wide.index = wide.index.map("{:.4f}".format)
    typer.echo(wide.to_string(float_format="%.4f"))
    typer.echo(
        f"distance={summary['distance']:.4g}  "
        + "  ".join(f"{s}: loss_barrier={summary[f'loss_barrier.{s}']:.4g} accuracy_barrier={summary[f'accuracy_barrier.{s}']:.4g}" for s in splits)
    )


# --------------------------------------------------------------------------- studies (from the registry)


def study_command(entry):
    """The CLI command of a registered study: cell options for per-run studies, --shard where the
    stage shards its samples; the stage module is imported only when the command runs."""

    def run_study(params: Path, quiet: bool, cell_args: tuple | None = None, shard: str | None = None) -> None:
        from netgeom.stages.registry import stage_module

        settings, layout = setup(params, quiet, torch=False)
        if not getattr(settings, entry.name).enabled:  # costs no torch: a switched-off study is cheap
            _skip(entry, settings, layout, cell_args)
            return
        use_torch(settings)
        module = stage_module(entry)
        if entry.scope == "grid":
            typer.echo(module.describe(module.run(settings, layout)))
            return
        from netgeom.runs import cell_name, cell_params

        cell = make_cell(settings, *cell_args)
        summary = module.run(settings, layout, cell, shard) if entry.shards else module.run(settings, layout, cell)
        name = cell_name(cell_params(settings, cell), cell)
        if summary is None:
            typer.echo(f"{entry.name} {name}: wrote shard {shard}; the summary follows once every shard is there")
            return
        # the run's name first: the line says which run the stage worked on
        typer.echo(f"{name} " + module.describe(summary))

    if entry.scope == "grid":

        def command(params: ParamsOption = Path("params.yaml"), quiet: QuietOption = False):
            run_study(params, quiet)

    elif entry.shards:

        def command(
            width: CellWidth = None,
            noise: CellNoise = None,
            replicate: CellReplicate = 0,
            shard: Annotated[Optional[str], typer.Option(help="Compute only shard i/n (e.g. 0/4).")] = None,
            params: ParamsOption = Path("params.yaml"),
            quiet: QuietOption = False,
        ):
            run_study(params, quiet, (width, noise, replicate), shard)

    else:

        def command(
            width: CellWidth = None,
            noise: CellNoise = None,
            replicate: CellReplicate = 0,
            params: ParamsOption = Path("params.yaml"),
            quiet: QuietOption = False,
        ):
            run_study(params, quiet, (width, noise, replicate))

    command.__doc__ = f"Stage `{entry.name}`: {entry.help}"
    return guarded(command)


def _skip(entry, settings, layout, cell_args) -> None:
    from netgeom.layout import run_name
    from netgeom.summary import write_skipped

    if entry.scope == "grid":
        folder = layout.study_root(entry.name)
    else:
        from netgeom.cell import cell_groups

        cell = make_cell(settings, *cell_args)
        cell_groups(settings, cell)  # an enabled study's checks: no folder named after a cell that cannot exist
        # = runs.cell_name (the cell's arch, width, noise, replicate)
        folder = layout.study_dir(entry.name, run_name(settings.model.arch, cell.width, cell.noise, cell.replicate))
    write_skipped(layout, folder, entry.name)
    typer.echo(f"{entry.name}: skipped ({entry.name}.enabled is false)")


@app.command("hyperplanes-model")
@guarded
def hyperplanes_model(
    arch: str = typer.Argument(..., help="a registered model, e.g. tv_resnet18, tv_vgg16 (torchvision), vgg8, lenet"),
    pretrained: Path = typer.Option(None, "--pretrained", help="weights file (safetensors or torch.save state dict); omit for a random init"),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="torch seed of the random initialisation"),
    input_shape: str = typer.Option("3,224,224", "--input-shape", help="C,H,W the model is built for"),
    classes: int = typer.Option(1000, "--classes", help="outputs of the classifier (the file's, for --pretrained)"),
    with_linear: bool = typer.Option(False, "--with-linear/--conv-only", help="also measure linear layers"),
    batch_norm: bool = typer.Option(False, "--batch-norm", help="the family's BN variant (vgg: *_bn)"),
    out: Path = typer.Option(None, "--out", help="folder to write (default artifacts/models/hyperplanes/<arch>-<weights>)"),
) -> None:
    """Hyperplane bias of one model without training it: pretrained weights from a local file, or
    a seeded random initialisation (the hyperplane seed's --pretrained)."""
    from netgeom.io import check_output_folder
    from netgeom.stages.model_hyperplanes import default_folder, model_hyperplanes

    try:
        shape = tuple(int(part) for part in input_shape.split(","))
    except ValueError:
        raise NetgeomError("--input-shape", f"must be integers separated by commas, e.g. 3,224,224; got {input_shape!r}") from None
    folder = check_output_folder(out or default_folder(Layout.here(), arch, pretrained, seed))
    network = model_hyperplanes(arch, shape, classes, folder, pretrained=pretrained, seed=seed, with_linear=with_linear,
                                options={"batch_norm": True} if batch_norm else None)
    row = network.iloc[0]
    typer.echo(f"{arch}: mass (share of filters with projection <= 0) {row['mass']:.3f} over {int(row['filters'])} filters -> {folder}")


@app.command("reinit-model")
@guarded
def reinit_model(
    arch: str = typer.Argument(..., help="a registered model, e.g. tv_resnet18, tv_vgg16 (torchvision)"),
    pretrained: Path = typer.Option(..., "--pretrained", help="weights file (safetensors or torch.save state dict)"),
    images: Path = typer.Option(..., "--images", help="labelled images, one sub-folder per class (ImageFolder; e.g. ImageNet val)"),
    size: int = typer.Option(224, "--size", min=1, help="side of the centre crop the model sees"),
    classes: int = typer.Option(1000, "--classes", help="outputs of the classifier (the file's)"),
    samples: int = typer.Option(1000, "--samples", min=1, help="images evaluated (a seeded subset)"),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="seed of the subset and of the fresh layers (rand)"),
    conv_only: bool = typer.Option(False, "--conv-only/--conv-and-linear", help="reset convolutions only (the seed's default)"),
    inits_from: list[str] = typer.Option([], "--inits-from", help="further weight files to reset layers to, or a .txt listing one per line"),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="images per forward pass (it sets the memory used)"),
    batch_norm: bool = typer.Option(False, "--batch-norm", help="the family's BN variant (vgg: *_bn)"),
    out: Path = typer.Option(None, "--out", help="folder to write (default artifacts/models/reinit/<arch>-file-<weights>)"),
) -> None:
    """Re-initialisation robustness of one pretrained model: each layer reset to a fresh draw (and
    to --inits-from weights), top-1 and top-5 accuracy on labelled images (the hyperplane seed's
    --pretrained re-initialisation)."""
    from netgeom.io import check_output_folder
    from netgeom.stages.model_reinit import default_folder, model_reinit

    folder = check_output_folder(out or default_folder(Layout.here(), arch, pretrained))
    table = model_reinit(
        arch, pretrained, images, folder, size=size, num_classes=classes, samples=samples, seed=seed,
        layer_kinds="conv" if conv_only else "conv_and_linear", inits_from=inits_from, batch_size=batch_size,
        options={"batch_norm": True} if batch_norm else None,
    )
    first = table.iloc[0]
    drops = table["relative_drop"].astype("Float64")
    if drops.notna().any():  # no relative drop from a model that classifies nothing right
        worst = table.loc[drops.idxmax()]
        largest = f"largest drop {worst['relative_drop']:.3f} ({worst['layer']} reset to {worst['checkpoint']})"
    else:
        largest = "no relative drop (top-1 is 0)"
    typer.echo(
        f"{arch}: top-1 {first['trained_accuracy']:.3f}, top-5 {first['trained_accuracy_top5']:.3f}; {largest} "
        f"over {table['layer'].nunique()} layers -> {folder}"
    )


def _register_studies() -> None:
    from netgeom.stages.registry import STUDIES

    for entry in STUDIES:
        if entry.scope == "custom":
            import importlib

            app.add_typer(importlib.import_module(entry.cli).app, name=entry.name)
        else:
            app.command(entry.name)(study_command(entry))


_register_studies()


def _register_repro() -> None:
    from netgeom.cli_repro import repro

    app.command("repro")(repro)


_register_repro()


@app.command()
@guarded
def report(params: ParamsOption = Path("params.yaml"), quiet: QuietOption = False):
    """Stage `report`: tables (reports/tables) and figures (reports/figures) over all runs."""
    from netgeom.stages.report import run_report

    settings, layout = setup(params, quiet)
    headline = run_report(settings, layout)
    figures = len(list((layout.reports / "figures").glob("*"))) if (layout.reports / "figures").is_dir() else 0
    numbers = sum(len(values) for values in headline.values())
    typer.echo(f"report: {layout.reports / 'index.html'} ({figures} figures); {numbers} headline numbers in {layout.reports / 'summary.json'}")


@app.command()
@guarded
def pipeline(
    write: Annotated[bool, typer.Option("--write", help="Rewrite dvc.yaml (default: print it).")] = False,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 if dvc.yaml differs from the generated one.")] = False,
):
    """dvc.yaml from the study registry: every stage with the code it runs as dependencies."""
    from netgeom.dvc_yaml import render

    text = render()
    target = Path("dvc.yaml")
    if check:
        if not target.exists() or target.read_text() != text:
            typer.echo("dvc.yaml differs from the registry's pipeline; run `netgeom pipeline --write`", err=True)
            raise typer.Exit(code=1)
        typer.echo("dvc.yaml is up to date")
    elif write:
        from netgeom.io import atomic_write_text

        atomic_write_text(target, text)
        typer.echo(f"wrote {target}")
    else:
        typer.echo(text, nl=False)


@mlflow_app.command("link")
@guarded
def mlflow_link(
    port: Annotated[int, typer.Option(min=1, max=65535, help="The UI's port.")] = 5000,
    host: Annotated[str, typer.Option(help="The UI's host.")] = "127.0.0.1",
    params: ParamsOption = Path("params.yaml"),
):
    """The URL of the experiment's training runs in the MLflow UI, sorted by test error with the
    columns a researcher compares (test/train error, width, noise, seed, DVC experiment)."""
    from netgeom import tracking
    from netgeom.ui import check_host, runs_url

    check_host(host)  # before the store is created
    settings, layout = setup(params, True, torch=False)
    typer.echo(runs_url(host, port, tracking.open_comparison_view(layout, settings.mlflow.experiment)))


@app.command()
@guarded
def ui(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve on.")] = 5000,
    host: Annotated[str, typer.Option(help="Address to bind (127.0.0.1: this machine only).")] = "127.0.0.1",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server to answer.", min=1)] = 180.0,
    params: ParamsOption = Path("params.yaml"),
):
    """Serve the MLflow UI over the project's store; print the runs-table link once it answers.
    Ctrl-C (or SIGTERM) stops the server and every process it started."""
    from netgeom import tracking
    from netgeom.ui import check_port_free, runs_url, serve

    settings, layout = setup(params, True, torch=False)
    check_port_free(host, port)  # before touching the store: a refused start changes nothing
    url = runs_url(host, port, tracking.open_comparison_view(layout, settings.mlflow.experiment))
    raise typer.Exit(code=serve(layout, url, host, port, timeout, typer.echo))


@mlflow_app.command("sync")
@guarded
def mlflow_sync(params: ParamsOption = Path("params.yaml")):
    """Create the MLflow runs missing for finished run folders and the report (DVC may have
    skipped stages or restored them from its cache)."""
    from netgeom import tracking
    from netgeom.stages.sync import sync_report, sync_runs

    settings, layout = setup(params, True)
    if not settings.mlflow.enabled:
        raise NetgeomError("mlflow.enabled", "is false in params.yaml: nothing to sync (set it to true)")
    before = len(tracking.runs_table(layout, settings.mlflow.experiment))
    ids = sync_runs(settings, layout)
    report = sync_report(settings, layout)
    created = len(tracking.runs_table(layout, settings.mlflow.experiment)) - before
    what = f"{len(ids)} training runs" + (" and the report" if report else " (no report yet)")
    typer.echo(f"{what} in sync with {layout.mlflow_db}: {created} created, the rest already there")


@app.command()
@guarded
def preset(path: Annotated[Path, typer.Argument(help="A preset YAML of params overrides (presets/*.yaml).")]):
    """Print a preset as `-S key=value` arguments for `dvc exp run` (validated first)."""
    import json

    from netgeom.params import flatten, read_params_yaml, validate

    if not path.is_file():
        raise NetgeomError("preset", f"{path} {'is a folder' if path.is_dir() else 'does not exist'}; see presets/")
    overrides = read_params_yaml(path)
    if not isinstance(overrides, dict) or not overrides:
        # an empty preset would print no options, and `make preset` would run the default experiment
        raise NetgeomError("preset", f"{path} must hold a non-empty mapping of params overrides (like presets/*.yaml)")
    base = read_params_yaml(Path("params.yaml")) if Path("params.yaml").exists() else {}
    if not isinstance(base, dict):
        raise NetgeomError("params.yaml", f"must be a mapping of params groups, got {type(base).__name__} (see `git show HEAD:params.yaml`)")
    if any(isinstance(v, dict) and not isinstance(base.get(k, {}), dict) for k, v in overrides.items()):
        validate(base)  # names the group params.yaml gets wrong, in one line, as `netgeom check` does
    validate(_merge(base, overrides))
    # Compact JSON (valid YAML, no spaces) survives the shell's word splitting in `$(...)`;
    # Hydra (behind `dvc exp run -S`) appends a key the params file lacks only when asked with `+`.
    present = flatten(base)
    args = [
        f"-S {'' if key in present or any(k.startswith(key + '.') for k in present) else '+'}{key}="
        f"{json.dumps(value, separators=(',', ':')) if not isinstance(value, str) else value}"
        for key, value in flatten(overrides).items()
    ]
    typer.echo(" ".join(args))


def _merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = _merge(base.get(key) or {}, value) if isinstance(value, dict) else value
    return merged


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
