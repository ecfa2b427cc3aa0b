"""`netgeom star source|train|barriers`: the star study's three commands (one per DVC stage)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from netgeom.cli_common import ParamsOption, QuietOption, TrackOption, guarded, setup, use_torch
from netgeom.cli_training import report_training
from netgeom.errors import NetgeomError

app = typer.Typer(help="The star-domain study: source models, star training, barriers.", no_args_is_help=True)
Width = Annotated[int, typer.Option("--width", help="The star cell's width (one of star.widths).")]
Fresh = Annotated[bool, typer.Option("--fresh", help="Ignore resumable state from a crashed run.")]


@app.command("source")
@guarded
def source(
    width: Width,
    seed: Annotated[int, typer.Option("--seed", help="An anchor's or a held-out model's seed (star.anchors, star.held_out).")],
    fresh: Fresh = False,
    track: TrackOption = True,
    params: ParamsOption = Path("params.yaml"),
    quiet: QuietOption = False,
):
    """Stages `star_anchor@<w>-<seed>` and `star_held_out@<w>-<seed>`: train one source model (an anchor or a held-out model)."""
    from netgeom.groups.star import source_name

    def folder(settings, layout):
        _one_of("--width", width, settings.star.widths, "star.widths")
        _one_of("--seed", seed, [*settings.star.anchors, *settings.star.held_out], "star.anchors and star.held_out")
        return layout.star_source_dir(source_name(settings, width, seed))

    ready = _ready(params, quiet, folder)
    if ready is None:
        return
    settings, layout = ready
    from netgeom.stages.star import run_source

    report_training(run_source(settings, layout, width, seed, resume=not fresh, track=track))


@app.command("train")
@guarded
def train_star(
    width: Width,
    anchors: Annotated[int, typer.Option("--anchors", help="Train against the first k anchors (one of star.anchor_counts).")],
    fresh: Fresh = False,
    track: TrackOption = True,
    params: ParamsOption = Path("params.yaml"),
    quiet: QuietOption = False,
):
    """Stage `star`: train a star model against the first k anchors."""
    from netgeom.groups.star import star_name

    def folder(settings, layout):
        _one_of("--width", width, settings.star.widths, "star.widths")
        _one_of("--anchors", anchors, settings.star.anchor_counts, "star.anchor_counts")
        return layout.star_dir(star_name(settings, width, anchors))

    ready = _ready(params, quiet, folder)
    if ready is None:
        return
    settings, layout = ready
    from netgeom.stages.star import run_star

    report_training(run_star(settings, layout, width, anchors, resume=not fresh, track=track))


@app.command("barriers")
@guarded
def barriers(params: ParamsOption = Path("params.yaml"), quiet: QuietOption = False):
    """Stage `star_barriers`: star <-> held-out against regular <-> regular barriers."""
    ready = _ready(params, quiet, lambda settings, layout: layout.study_root("star"))
    if ready is None:
        return
    settings, layout = ready
    from netgeom.stages.star import describe, run_barriers

    typer.echo(describe(run_barriers(settings, layout)))


def _one_of(option: str, value: int, allowed: list[int], key: str) -> None:
    """The star stages train what params.yaml lists, and nothing else: the barriers read only those."""
    if value not in allowed:
        raise NetgeomError(option, f"{value} is not in {key} ({', '.join(map(str, allowed))}); add it there to train it")


def _ready(params: Path, quiet: bool, output):
    """(settings, layout) with torch set up, or None when star.enabled is false (the stage's
    `output(settings, layout)` folder then records that it was skipped), torch never imported."""
    settings, layout = setup(params, quiet, torch=False)
    if _skipped(settings, layout, output(settings, layout)):
        return None
    use_torch(settings)
    return settings, layout


def _skipped(settings, layout, folder) -> bool:
    """With star.enabled false each stage leaves a summary saying so where its output goes."""
    if settings.star.enabled:
        return False
    from netgeom.summary import write_skipped

    write_skipped(layout, folder, "star")
    typer.echo("star: skipped (star.enabled is false)")
    return True
