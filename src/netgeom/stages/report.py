"""Stage `report`: tables, figures, headline metrics and one page over every run and study.

The report is rendered aside (.netgeom/report/) and published over reports/ in one move: a bad
input stops the stage before reports/ changes, and a crash never leaves old and new figures
mixed. Each registered study contributes its own figures through its stage module's `report`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import yaml

from netgeom.io import atomic_write_json
from netgeom.layout import Layout, run_folders
from netgeom.params import Params
from netgeom.progress import note
from netgeom.report import figures, tables
from netgeom.report.tables import INTERPOLATION_THRESHOLD, double_descent_peak, interpolation_threshold, noise_key, test_error_rise
from netgeom.provenance import git_commit
from netgeom.report.context import Figure, ReportContext
from netgeom.report.dvc_plots import write_figure_order
from netgeom.report.page import PageFigure, PageSection, csv_tables, write_report_page
from netgeom.report.wording import headline_label
from netgeom.cell import grid_cells
from netgeom.runs import cell_name, cell_params, check_trained_with, read_run
from netgeom.stages.registry import STUDIES, report_module
from netgeom.stages.sync import sync_report, sync_runs

def run_report(params: Params, layout: Layout) -> dict:
    with layout.building(layout.reports) as rendered:
        summary = render(params, layout, rendered)
    sync_runs(params, layout)  # every training (grid, star), then the studies attached to them
    sync_report(params, layout)
    return summary


def render(params: Params, layout: Layout, folder: Path) -> dict:
    """Write the whole report into `folder`; returns the headline metrics (summary.json)."""
    runs, curves = grid_tables(params, layout)
    (folder / "tables").mkdir(parents=True, exist_ok=True)
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    peak = params.report.epochwise_width or (peak_width(runs) if len(runs) else None)
    context = ReportContext(params, layout, runs, curves, folder, peak, focus_run(runs, peak))
    shown: list[Figure] = []
    if len(runs):
        shown += [replace(f, section="Training") for f in _training_figures(context)]
    for entry in STUDIES:
        shown += [replace(f, section=entry.name) for f in report_module(entry).report(context)]
    headline = headline_metrics(context)
    atomic_write_json(folder / "summary.json", headline)
    labels = {key: text for module in map(report_module, STUDIES) for key, text in getattr(module, "HEADLINE_LABELS", {}).items()}
    intros = {"Training": "Every run of the grid (widths x label-noise levels x replicates)."} | {e.name: e.help for e in STUDIES}
    write_report_page(
        folder, _sections(folder, shown, intros), title="netgeom report", git_commit=git_commit(str(layout.root)),
        params_text=yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False), tables=csv_tables(folder),
        headline={headline_label(key, name, labels): _value_text(value) for key, values in headline.items() for name, value in values.items()},
    )
    write_figure_order(folder, shown, layout.reports.relative_to(layout.root).as_posix())
    return headline


SHOWN_NAMES = 4  # run names a notice lists


def grid_tables(params: Params, layout: Layout) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs table and learning curves of the grid params.yaml names now. Run folders of an
    earlier grid stay in artifacts/runs/ (DVC keeps a dropped stage's outputs) and are left out;
    a grid run that its settings would not train now (params.yaml edited, no `dvc repro`) is
    refused as the studies refuse it; runs not trained yet are named, the rest still reported."""
    cells = {cell_name(params, cell): cell for cell in grid_cells(params)}
    found = run_folders(layout.runs_root)
    # Every folder is read (a corrupt file under artifacts/runs/ is refused, shown or not); only the grid's are shown.
    runs, curves = tables.runs_table(found), tables.curves_table(found)
    shown = [folder for folder in found if folder.name in cells]
    for folder in shown:
        check_trained_with(read_run(folder), cell_params(params, cells[folder.name]))
    left_out = [folder.name for folder in found if folder.name not in cells]
    if left_out:
        note(f"report: left out {_names(left_out)}: run folders outside grid.widths x grid.noise x grid.seed_offsets")
    missing = [name for name in cells if name not in {folder.name for folder in found}]
    if missing:
        note(f"report: {_names(missing)} of the grid {'is' if len(missing) == 1 else 'are'} not trained yet; the report shows the other {len(shown)}")
    return _of_runs(runs, cells), _of_runs(curves, cells)


def _of_runs(table: pd.DataFrame, names) -> pd.DataFrame:
    return table[table["run"].isin(list(names))].reset_index(drop=True) if len(table) else table


def _names(names: list[str]) -> str:
    more = f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else ""
    return f"{len(names)} run{'s' if len(names) != 1 else ''} ({', '.join(names[:SHOWN_NAMES])}{more})"


def _sections(folder: Path, shown: list[Figure], intros: dict[str, str]) -> list[PageSection]:
    """One page section per study, in registry order (training first), titled by the study's
    name (short: the page's navigation) with its one-line description as the intro."""
    sections: dict[str, list[Figure]] = {}
    for figure in shown:
        sections.setdefault(figure.section, []).append(figure)
    return [
        PageSection(title, [PageFigure(f.path.relative_to(folder), f.title, f.caption) for f in figures], text=intros.get(title, ""))
        for title, figures in sections.items()
    ]


def _value_text(value) -> str:
    return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _training_figures(context: ReportContext) -> list[Figure]:
    runs, curves = context.runs, context.curves
    grid = tables.grid_table(runs, ["train_error", "test_error", "val_error", "train_acc_noisy", "parameters"])
    for name, frame in {"runs": runs, "curves": curves, "grid": grid}.items():
        context.write_table(name, frame)
    by_width = figures.error_vs_width(runs, context.figure_path("error_vs_width"))
    learning = figures.learning_curves(curves, context.figure_path("learning_curves"))
    return [
        Figure(by_width, "Final train and test error against width", _error_caption(runs)),
        Figure(learning, "Learning curves", "Test (top row) and train (bottom row) error per epoch, a column per noise level, a line per width."),
    ]


def _error_caption(runs: pd.DataFrame) -> str:
    parts = []
    for noise, group in runs.groupby("noise"):
        by_width = group.groupby("width")["test_error"].mean()
        threshold = interpolation_threshold(group)
        width, error = double_descent_peak(group)
        rise_width, rise = test_error_rise(group)
        parts.append(
            f"Label noise {noise:g}: test error {', '.join(f'{v:.2f}' for v in by_width)} over widths {', '.join(map(str, by_width.index))}"
            + (f"; train error reaches 0 at width {threshold}, highest test error from there on {error:.2f} at width {width}" if threshold else "; no width fits the training labels")
            + (f"; largest rise above the narrower widths' best {rise:.3f} at width {rise_width}." if rise > 0 else "; the test error never rises with width.")
        )
    return "\n\n".join(parts)


def peak_run(runs: pd.DataFrame) -> pd.Series:
    """The run at the double-descent peak: at the highest noise level, the highest test error
    among the runs that interpolate, i.e. at or past the threshold. Falls back to the highest
    test error when nothing interpolates."""
    noisiest = runs[runs["noise"] == runs["noise"].max()]
    interpolating = noisiest[noisiest["train_error"] <= INTERPOLATION_THRESHOLD]
    pool = interpolating if len(interpolating) else noisiest
    return pool.loc[pool["test_error"].idxmax()]


def peak_width(runs: pd.DataFrame) -> int:
    return int(peak_run(runs)["width"])


def focus_run(runs: pd.DataFrame, width: int | None) -> str | None:
    """The run single-run figures show: `width` at the highest noise level, first replicate."""
    if width is None or runs.empty:
        return None
    chosen = runs[(runs["width"] == width) & (runs["noise"] == runs["noise"].max())].sort_values("replicate")
    return str(chosen["run"].iloc[0]) if len(chosen) else None


def headline_metrics(context: ReportContext) -> dict:
    """The handful of numbers a seed experiment is compared on, per noise level (summary.json);
    per-run numbers live in tables/runs.csv. Studies add theirs through `metrics(context)`."""
    runs = context.runs
    headline: dict[str, dict] = {}
    for noise, group in runs.groupby("noise") if len(runs) else []:
        width, error = double_descent_peak(group)
        rise_width, rise = test_error_rise(group)
        headline[noise_key(noise)] = {
            "peak_test_error": error,
            "peak_width": width,
            "test_error_rise": rise,
            "rise_width": rise_width,
            "threshold_width": interpolation_threshold(group),
            "test_error_widest": float(group.groupby("width")["test_error"].mean().iloc[-1]),
        }
    for module in map(report_module, STUDIES):
        for key, values in (module.metrics(context) if hasattr(module, "metrics") else {}).items():
            headline.setdefault(key, {}).update(values)
    return headline
