"""Every report figure draws from small synthetic tables with the real columns, writes a non-empty
image, and passes checks a reader would make (real widths in the legend, one line per noise
level, legends off the data, titled axes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.legend import Legend
from matplotlib.lines import Line2D

from netgeom.report import figures, figures_hyperplanes, figures_star

WIDTHS = [4, 8, 16, 64, 128, 1024]
NOISES = [0.0, 0.2]
EPOCHS = [0, 1, 2, 5, 10, 50, 200]


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def runs_table(replicates: int = 2) -> pd.DataFrame:
    """The runs table of report/tables.py, with a test-error peak at width 64 under noise."""
    rng, rows = _rng(), []
    for w in WIDTHS:
        for n in NOISES:
            for r in range(replicates):
                peak = 0.25 * n * np.exp(-((np.log2(w) - 6) ** 2) / 2)
                train = max(0.0, 0.3 * n * (1 - np.log2(w) / 6)) + 0.01 * rng.random()
                rows.append({"run": f"mlp_w{w}-n{n}-r{r}", "arch": "mlp", "width": w, "noise": n, "replicate": r, "seed": 42 + r,
                             "parameters": 100 * w, "train_error": train, "test_error": 0.08 + peak + 0.01 * rng.random()})  # fmt: skip
    return pd.DataFrame(rows)


def curves_table() -> pd.DataFrame:
    runs, rows = runs_table(replicates=1), []
    for run in runs.itertuples():
        for e in EPOCHS:
            decay = 1 / (1 + e)
            rows.append({"run": run.run, "epoch": e, "width": run.width, "noise": run.noise, "replicate": run.replicate,
                         "train_error": run.train_error + 0.8 * decay, "test_error": run.test_error + 0.7 * decay})  # fmt: skip
    return pd.DataFrame(rows)


def study_table(measures=("jacobian_norm", "lipschitz")) -> pd.DataFrame:
    runs, rows = runs_table(replicates=1), []
    for run in runs.itertuples():
        groups = ["all", "clean", "noisy"] if run.noise > 0 else ["all", "clean"]
        for e in (0, 10, 200):
            for m in measures:
                for g in groups:
                    rows.append({"run": run.run, "epoch": e, "measure": m, "group": g, "value": (1 + e) ** 0.3 * (2 if g == "noisy" else 1),
                                 "width": run.width, "noise": run.noise, "replicate": run.replicate,
                                 "test_error": run.test_error, "train_error": run.train_error})  # fmt: skip
    return pd.DataFrame(rows)


def final_study_table() -> pd.DataFrame:
    """What the report passes to study_vs_width: each run's last checkpoint only."""
    table = study_table()
    return table[table["epoch"] == table["epoch"].max()]


def interpolation_tables():
    runs = runs_table(replicates=1)
    t = np.linspace(0, 1, 9)
    curves = pd.concat(
        [pd.DataFrame({"t": t, "split": "train", "loss": 2.3 * (1 - t) ** 2 + 0.01 + 0.05 * (i % 3 == 0) * np.sin(np.pi * t) ** 8,
                       "accuracy": t, "curve": "init-final", "run": r.run, "width": r.width, "noise": r.noise})
         for i, r in enumerate(runs.itertuples())], ignore_index=True,
    )  # fmt: skip
    wide = runs[["run", "width", "noise"]].assign(
        normalised_distance=np.linspace(0.5, 3.0, len(runs)),
        **{"delta.train": [0.0 if i % 3 else 1e-3 * (i + 1) for i in range(len(runs))]},
    )
    wide["monotone.train"] = (wide["delta.train"] == 0).astype(float)
    monotone = wide[["run"]].assign(monotone=wide["monotone.train"].astype(bool))
    return curves, monotone, wide


def landscape_tables():
    xs, ys = np.linspace(-0.5, 3.5, 7), np.linspace(-0.6, 3.6, 7)
    grid = pd.DataFrame([{"x": x, "y": y, "split": "train", "loss": 0.01 + (x - 3) ** 2 + 0.5 * y**2, "accuracy": 0.5} for y in ys for x in xs])
    trajectory = pd.DataFrame({"epoch": [0, 1, 10, 100], "x": [0.0, 1.2, 2.5, 3.0], "y": [0.0, 0.3, 0.2, 0.0]})
    return grid, trajectory


def mli_preset_tables():
    t = np.linspace(0, 1, 7)
    curves = pd.concat(
        [pd.DataFrame({"t": t, "split": "train", "loss": 2.3 * (1 - t) + 0.01, "accuracy": t, "optimizer": o, "batch_norm": b, "seed": s})
         for o in ("adam", "sgd") for b in (False, True) for s in (0, 1)], ignore_index=True,
    )  # fmt: skip
    fractions = pd.DataFrame({
        "optimizer": ["adam", "adam", "sgd", "sgd"], "batch_norm": [False, True, False, True],
        "n_runs": [2, 2, 2, 2], "n_converged": [2, 2, 2, 0], "n_non_finite": [0, 0, 0, 0],
        "n_non_monotonic": [0, 1, 0, 0], "frac_non_monotonic": [0.0, 0.5, 0.0, np.nan], "mean_delta_non_monotonic": [np.nan, 0.1, np.nan, np.nan],
    })  # fmt: skip
    return curves, fractions


def barriers_table():
    rows = []
    for w in WIDTHS[:4]:
        for m in ("none", "weights"):
            for split in ("train", "test"):
                rows.append({"run_a": f"w{w}-r0", "run_b": f"w{w}-r1", "width": w, "noise": 0.2, "matching": m, "split": split,
                             "loss_barrier": (0.5 if m == "none" else 0.1) / np.log2(w), "accuracy_barrier": -0.1})  # fmt: skip
    return pd.DataFrame(rows)


def star_tables():
    rng, rows, curve_rows = _rng(1), [], []
    pairs = [("star", a, f"star{a}", f"held{h}") for a in (1, 2, 4, 8) for h in range(4)]
    pairs += [("regular", np.nan, f"reg{i}", f"reg{j}") for i in range(4) for j in range(i + 1, 4)]
    for kind, anchors, a, b in pairs:
        for split in ("train", "test"):
            for matching in ("none", "weights"):
                base = (0.3 / (1 + (anchors if kind == "star" else 0))) + (0.4 if kind == "regular" else 0)
                barrier = base * (0.3 if matching == "weights" else 1) + 0.02 * rng.random()
                rows.append({"kind": kind, "anchors": anchors, "width": 64, "model_a": a, "model_b": b, "split": split, "matching": matching,
                             "loss_barrier": barrier, "accuracy_barrier": -barrier / 3})  # fmt: skip
                for t in np.linspace(0, 1, 7):
                    curve_rows.append({"kind": kind, "anchors": anchors, "model_a": a, "model_b": b, "split": split, "matching": matching,
                                       "t": t, "loss": 0.1 + 4 * barrier * t * (1 - t), "accuracy": 0.9})  # fmt: skip
    return pd.DataFrame(rows), pd.DataFrame(curve_rows)


LAYERS = [("features.0", 0, 0), ("features.3", 1, 0), ("features.6", 2, 0), ("features.8", 2, 1)]


def projections_table():
    rng, frames = _rng(2), []
    for epoch, shift in ((0, 0.0), (5, 0.1), (20, 0.25)):
        for i, (layer, stage, block) in enumerate(LAYERS):
            n = 16 * (i + 1)
            normalised = np.clip(rng.normal(shift / (i + 1), 0.2, n), -1, 1)
            frames.append(pd.DataFrame({"epoch": epoch, "layer": layer, "kind": "conv", "stage": stage, "block": block,
                                        "filter": np.arange(n), "raw": normalised * 3, "normalised": normalised}))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def evolution_table():
    projections = projections_table()
    grouped = projections.groupby(["epoch", "layer", "kind", "stage", "block"], sort=False)
    table = grouped.agg(mean=("normalised", "mean"), mass=("normalised", lambda p: float(np.mean(p <= 0)))).reset_index()
    return table.sort_values(["epoch", "stage", "block"]).reset_index(drop=True)


def reinit_table():
    rows = []
    for position, (layer, _, _) in enumerate(LAYERS + [("classifier", 3, 0)]):
        for checkpoint in ("0", "5", "20", "rand"):
            # the init's drops rise with depth (0, 0.1, ..), a fresh draw's fall (0.8, 0.6, ..)
            drop = 0.1 * position if checkpoint == "0" else 0.0 if checkpoint == "20" else max(0.0, 0.8 - 0.2 * position) * (0.5 if checkpoint == "5" else 1)
            rows.append({"layer": layer, "position": position, "checkpoint": checkpoint, "epoch": None if checkpoint == "rand" else int(checkpoint),
                         "accuracy": 0.9 * (1 - drop), "loss": 1.0, "trained_accuracy": 0.9, "trained_loss": 0.3,
                         "relative_drop": drop, "prefix_cached": True})  # fmt: skip
    table = pd.DataFrame(rows)
    table["epoch"] = table["epoch"].astype("Int64")
    return table


@pytest.fixture(autouse=True)
def close_figures():
    """Builders hand back open figures; close them so tests do not pile up windows in pyplot."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


# --------------------------------------------------------------------------- every figure writes an image

curves_i, monotone_i, wide_i = interpolation_tables()
grid_l, trajectory_l = landscape_tables()
preset_curves, preset_fractions = mli_preset_tables()
star_barriers, star_curves_table = star_tables()

FIGURES = {
    "learning_curves": lambda p: figures.learning_curves(curves_table(), p),
    "error_vs_width": lambda p: figures.error_vs_width(runs_table(), p),
    "smoothness_vs_width": lambda p: figures.study_vs_width(final_study_table(), runs_table(), p, "Smoothness against width"),
    "smoothness_vs_epoch": lambda p: figures.study_vs_epoch(study_table(), curves_table(), 64, p, "Epoch-wise view, width 64"),
    "mli_curves": lambda p: figures.mli_curves(curves_i, monotone_i, p),
    "delta_vs_distance": lambda p: figures.delta_vs_distance(wide_i, p),
    "barriers": lambda p: figures.barriers(barriers_table(), p),
    "landscape": lambda p: figures.landscape(grid_l, trajectory_l, "mlp_w64-n0.2-r0", p, second_init=(0.4, 3.0)),
    "mli_preset": lambda p: figures.mli_preset(preset_curves, preset_fractions, p),
    "star_barrier_distributions": lambda p: figures_star.star_barrier_distributions(star_barriers, p),
    "star_barrier_vs_anchors": lambda p: figures_star.star_barrier_vs_anchors(star_barriers, p),
    "star_curves": lambda p: figures_star.star_curves(star_curves_table, p),
    "projection_distributions": lambda p: figures_hyperplanes.projection_distributions(projections_table(), p),
    "mass_across_epochs": lambda p: figures_hyperplanes.mass_across_epochs(evolution_table(), p),
    "reinit_heatmap": lambda p: figures_hyperplanes.reinit_heatmap(reinit_table(), p),
    "bias_vs_reinit": lambda p: figures_hyperplanes.bias_vs_reinit(evolution_table(), reinit_table(), p),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_figure_writes_a_non_empty_png_and_nothing_else(name, tmp_path):
    path = tmp_path / f"{name}.png"
    assert FIGURES[name](path) == path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file left behind


def test_figures_are_deterministic(tmp_path):
    first = figures.error_vs_width(runs_table(), tmp_path / "a.png").read_bytes()
    assert figures.error_vs_width(runs_table(), tmp_path / "b.png").read_bytes() == first
    svg = [figures.learning_curves(curves_table(), tmp_path / f"{n}.svg").read_text() for n in "ab"]
    assert svg[0] == svg[1]


# --------------------------------------------------------------------------- what a reader checks


def _all_axes_titled(figure) -> list[str]:
    """Names of data axes (not colorbars) that lack an x or y label."""
    bad = []
    for axis in figure.axes:
        if axis.get_label() == "<colorbar>":
            continue
        shared = axis.get_shared_x_axes().get_siblings(axis)  # a shared x axis is labelled once, below
        if not any(a.get_xlabel().strip() for a in shared):
            bad.append(f"{axis.get_title()}: x")
        if not axis.get_ylabel().strip():
            bad.append(f"{axis.get_title()}: y")
    return bad


def _legends(figure) -> list[Legend]:
    return list(figure.legends) + [a.get_legend() for a in figure.axes if a.get_legend() is not None]


def _legend_overlaps_data(figure) -> bool:
    """True when a legend's box covers any drawn data point of any axes."""
    figure.canvas.draw()
    for legend in _legends(figure):
        box = legend.get_window_extent()
        for axis in figure.axes:
            for line in axis.get_lines():
                xy = line.get_xydata()
                if len(xy):
                    if box.count_contains(axis.transData.transform(xy[np.isfinite(xy).all(axis=1)])):
                        return True
    return False


FIGURE_BUILDERS = {
    "learning_curves": lambda: figures.learning_curves_figure(curves_table()),
    "error_vs_width": lambda: figures.error_vs_width_figure(runs_table()),
    "study_vs_width": lambda: figures.study_vs_width_figure(final_study_table(), runs_table(), "t"),
    "study_vs_epoch": lambda: figures.study_vs_epoch_figure(study_table(), curves_table(), 64, "t"),
    "mli_curves": lambda: figures.mli_curves_figure(curves_i, monotone_i),
    "delta_vs_distance": lambda: figures.delta_vs_distance_figure(wide_i),
    "barriers": lambda: figures.barriers_figure(barriers_table()),
    "landscape": lambda: figures.landscape_figure(grid_l, trajectory_l, "run"),
    "mli_preset": lambda: figures.mli_preset_figure(preset_curves, preset_fractions),
    "star_barrier_distributions": lambda: figures_star.star_barrier_distributions_figure(star_barriers),
    "star_barrier_vs_anchors": lambda: figures_star.star_barrier_vs_anchors_figure(star_barriers),
    "star_curves": lambda: figures_star.star_curves_figure(star_curves_table),
    "projection_distributions": lambda: figures_hyperplanes.projection_distributions_figure(projections_table()),
    "mass_across_epochs": lambda: figures_hyperplanes.mass_across_epochs_figure(evolution_table()),
    "reinit_heatmap": lambda: figures_hyperplanes.reinit_heatmap_figure(reinit_table()),
    "bias_vs_reinit": lambda: figures_hyperplanes.bias_vs_reinit_figure(evolution_table(), reinit_table()),
}


@pytest.mark.parametrize("name", sorted(FIGURE_BUILDERS))
def test_every_axis_is_titled_and_no_legend_covers_a_line(name):
    figure = FIGURE_BUILDERS[name]()
    assert _all_axes_titled(figure) == []
    assert not _legend_overlaps_data(figure), "a legend sits on plotted data"


def test_learning_curves_legend_is_the_real_widths_in_order_on_a_log_epoch_axis():
    figure = figures.learning_curves_figure(curves_table())
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == [str(w) for w in WIDTHS]
    assert legend.get_title().get_text() == "width"
    assert {axis.get_xscale() for axis in figure.axes} == {"symlog"}
    assert min(axis.get_xlim()[0] for axis in figure.axes) == 0
    # one panel per noise level and split; each panel one line per width
    assert len(figure.axes) == 2 * len(NOISES)
    assert all(len(axis.get_lines()) == len(WIDTHS) for axis in figure.axes)
    colours = [tuple(h.get_color()) for h in legend.legend_handles]
    assert len(set(colours)) == len(WIDTHS)


def test_error_vs_width_has_one_line_per_noise_level_and_split_and_the_legend_clears_the_peak():
    runs = runs_table()
    figure = figures.error_vs_width_figure(runs)
    (axis,) = figure.axes
    labels = [line.get_label() for line in axis.get_lines()]
    for noise in NOISES:
        for split in ("train", "test"):
            assert labels.count(f"label noise {noise:g}, {split}") == 1
    assert len(labels) == 2 * len(NOISES)
    assert axis.get_xscale() == "log"
    assert [t.get_text() for t in axis.get_xticklabels()] == [str(w) for w in WIDTHS]
    assert axis.get_xlabel() and axis.get_ylabel()
    # the peak: highest mean test error at the noisiest level
    means = runs[runs["noise"] == max(NOISES)].groupby("width")["test_error"].mean()
    figure.canvas.draw()
    peak = axis.transData.transform((means.idxmax(), means.max()))
    assert not axis.get_legend().get_window_extent().contains(*peak)


def test_legend_overlap_check_can_fail():
    """The overlap helper detects a legend placed on the data (so the tests above mean something)."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots()
    axis.plot([0, 1, 2], [0, 1, 0], label="data")
    axis.legend(loc="center")
    axis.set_ylim(-0.1, 1.1)
    axis.plot([0.9, 1.0, 1.1], [0.5, 0.5, 0.5])
    assert _legend_overlaps_data(figure)
    plt.close(figure)


def test_delta_vs_distance_shows_small_deltas_and_marks_zero():
    figure = figures.delta_vs_distance_figure(wide_i)
    (axis,) = figure.axes
    assert axis.get_yscale() == "symlog"
    assert any(isinstance(line, Line2D) and tuple(line.get_ydata()) == (0, 0) for line in axis.get_lines())
    bottom, top = axis.get_ylim()
    assert bottom < 0 < wide_i["delta.train"].max() < top
    non_monotonic = int((~wide_i["monotone.train"].astype(bool)).sum())
    assert non_monotonic > 0 and "of" not in axis.get_title()  # a title says what is plotted; the count is the caption's
    colours = {tuple(np.round(c.get_facecolor()[0][:3], 3)) for c in axis.collections if len(c.get_offsets())}
    assert len(colours) == len(NOISES) and all(sum(c) < 2.7 for c in colours)  # distinct, not near-white


def test_mli_preset_tells_a_zero_bar_from_a_missing_group():
    figure = figures.mli_preset_figure(preset_curves, preset_fractions)
    bars = figure.axes[1]
    notes = [t.get_text() for t in bars.texts]
    assert notes == ["0/2", "1/2", "0/2", "no converged\nruns"]


def test_landscape_marks_the_inits_the_final_weights_and_labels_its_axes():
    figure = figures.landscape_figure(grid_l, trajectory_l, "run", second_init=(0.4, 3.0))
    axis = figure.axes[0]
    labels = {line.get_label() for line in axis.get_lines()}
    assert {r"$\theta_0$ init (epoch 0)", r"$\theta_T$ final (epoch 100)", r"$\theta_0'$ second init"} <= labels
    assert r"\theta_T" in axis.get_xlabel() and "second init" in axis.get_ylabel()
    assert "weight-space distance" in axis.get_xlabel()


def test_reinit_heatmap_rows_are_epochs_then_rand_and_columns_follow_forward_order():
    figure = figures_hyperplanes.reinit_heatmap_figure(reinit_table().sample(frac=1, random_state=0))
    axis = figure.axes[0]
    assert [t.get_text() for t in axis.get_yticklabels()] == ["epoch 0", "epoch 5", "epoch 20", "rand (fresh init)"]
    assert [t.get_text() for t in axis.get_xticklabels()] == [layer for layer, _, _ in LAYERS] + ["classifier"]
    assert len(axis.texts) == 4 * 5  # every cell annotated


def test_reinit_heatmap_tells_a_reset_that_does_better_from_one_that_changes_nothing():
    """Drops of -0.15 (the reset model is better) were coloured as 0 under a [0, 1] scale."""
    table = reinit_table()
    better = (table["checkpoint"] == "20") & (table["position"] == 0)
    table.loc[better, "relative_drop"] = -0.15
    axis = figures_hyperplanes.reinit_heatmap_figure(table).axes[0]
    colours = axis.collections[0].get_facecolors()  # row-major: row "epoch 20" is the third
    width = len(LAYERS) + 1
    negative, zero, positive = colours[2 * width], colours[2 * width + 1], colours[3 * width]  # -0.15, 0, rand's 0.8
    assert not np.allclose(negative, zero) and not np.allclose(positive, zero)
    assert negative[2] > negative[0] and positive[0] > positive[2]  # blue below 0, red above


@pytest.mark.parametrize("names", [
    {layer: layer for layer, _, _ in LAYERS + [("classifier", 3, 0)]},  # short names stay level
    {"features.0": "1 · Linear 784→1024", "features.3": "4 · Linear 1024→256", "features.6": "5 · Linear 256→1024",
     "features.8": "8 · Linear 1024→256", "classifier": "12 · Linear 1024→10"},  # the bottleneck MLP's
], ids=["short", "long"])
def test_reinit_heatmap_tick_labels_never_overlap(names):
    figure = figures_hyperplanes.reinit_heatmap_figure(reinit_table(), labels=names)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in figure.axes[0].get_xticklabels()]
    assert len(boxes) == 5
    assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:])), [t.get_text() for t in figure.axes[0].get_xticklabels()]


def test_study_axis_labels_stay_beside_their_own_panels():
    # "absolute deviation from the affine interpolation" on one line ran past the top of a lower
    # panel into the one above it.
    table = study_table(("absolute_deviation", "crossings", "density", "jacobian_frobenius.crossentropy", "jacobian_operator.logits"))
    figure = figures.study_vs_width_figure(table[table["epoch"] == 200], runs_table(), "t")
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    for axis in figure.axes:
        label, frame = axis.yaxis.label.get_window_extent(renderer), axis.get_window_extent(renderer)
        if axis.get_ylabel():
            assert frame.y0 - 2 <= label.y0 and label.y1 <= frame.y1 + 2, axis.get_ylabel()


def test_bias_vs_reinit_joins_layers_and_reads_the_reset_to_init_the_seeds_claim_is_about():
    sweep = reinit_table()
    points = figures_hyperplanes.bias_and_drop(evolution_table(), sweep)
    assert list(points["layer"]) == [layer for layer, _, _ in LAYERS]  # the linear layer has no projection
    assert points["relative_drop"].tolist() == pytest.approx([0.0, 0.1, 0.2, 0.3])  # epoch 0's drops
    assert (points["bias"] >= 0).all() and (points["bias"] <= 0.5).all()
    rand = figures_hyperplanes.bias_and_drop(evolution_table(), sweep, "rand")
    assert rand["relative_drop"].tolist() == pytest.approx([0.8, 0.6, 0.4, 0.2])
    # a sweep without the init falls back to rand, then to the earliest epoch
    assert figures_hyperplanes.reference_checkpoint(sweep[sweep["checkpoint"] != "0"]) == "rand"
    assert figures_hyperplanes.reference_checkpoint(sweep[~sweep["checkpoint"].isin(["0", "rand"])]) == "5"
    figure = figures_hyperplanes.bias_vs_reinit_figure(evolution_table(), sweep)
    assert figure.axes[0].get_ylabel().endswith("reset to epoch 0")


def test_bias_vs_reinit_with_replicates_gives_one_point_and_one_rho_per_seed():
    """Seed 1 reverses seed 0's drops: rho flips sign, and each seed keeps its own points."""
    evolution, sweep = evolution_table(), reinit_table()
    reversed_sweep = sweep.copy()
    reversed_sweep["relative_drop"] = sweep.groupby("checkpoint")["relative_drop"].transform(lambda d: d.to_numpy()[::-1])
    hyperplanes = pd.concat([evolution.assign(replicate=0), evolution.assign(replicate=1)], ignore_index=True)
    sweeps = pd.concat([sweep.assign(replicate=0), reversed_sweep.assign(replicate=1)], ignore_index=True)
    points = figures_hyperplanes.bias_and_drop(hyperplanes, sweeps)
    single = figures_hyperplanes.bias_and_drop(evolution, sweep)
    assert len(points) == 2 * len(single)
    assert points.query("replicate == 0")["relative_drop"].tolist() == single["relative_drop"].tolist()
    rhos = figures_hyperplanes.rank_correlations(points)
    alone = figures_hyperplanes.rank_correlations(single)[None]
    assert set(rhos) == {0, 1} and rhos[0] == pytest.approx(alone)
    assert rhos[1] == pytest.approx(-rhos[0]) and abs(rhos[0]) > 0.5  # drops in reverse layer order
    figure = figures_hyperplanes.bias_vs_reinit_figure(hyperplanes, sweeps)
    legend = figure.axes[0].get_legend()
    layers = list(dict.fromkeys(points["layer"]))
    assert [t.get_text() for t in legend.get_texts()] == layers + [f"replicate {r}: ρ = {rho:.2f}" for r, rho in rhos.items()]
    assert not figure.axes[0].texts  # names live in the legend, not over the points
    assert len(figure.axes[0].collections) == len(points)


def test_star_distributions_use_the_largest_star_and_carry_p_values():
    figure = figures_star.star_barrier_distributions_figure(star_barriers)
    width = star_barriers["width"].iloc[0]
    assert [a.get_title() for a in figure.axes] == [f"width {width}, train split", f"width {width}, test split"]
    ticks = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert ticks[0].startswith("none\np = ") and ticks[1].startswith("weights\np = ")
    assert "8 anchors" in figure._suptitle.get_text()
    assert set(figures_star.largest_star(star_barriers).query("kind == 'star'")["anchors"]) == {8}


def test_star_distributions_show_the_stages_tests_not_a_recomputation():
    """The p-values come from the tests the star stage wrote (tests.parquet), per width: the figure
    and the table never disagree, also on a width sweep."""
    from netgeom.studies.star import hypothesis_test

    sweep = pd.concat([star_barriers, star_barriers.assign(width=star_barriers["width"] * 2)], ignore_index=True)
    tests = hypothesis_test(figures_star.largest_star(sweep), by=["width", "split", "matching"], value="loss_barrier")
    tests.loc[tests["width"] == tests["width"].max(), "p_value"] = 0.0123
    figure = figures_star.star_barrier_distributions_figure(sweep, tests)
    assert len(figure.axes) == 4
    wide = [t.get_text() for axis in figure.axes[2:] for t in axis.get_xticklabels()]
    narrow = [t.get_text() for axis in figure.axes[:2] for t in axis.get_xticklabels()]
    assert all(t.endswith("p = 0.012") for t in wide) and not any(t.endswith("p = 0.012") for t in narrow)


def test_star_vs_anchors_axis_is_the_anchor_counts():
    figure = figures_star.star_barrier_vs_anchors_figure(star_barriers)
    axis = figure.axes[0]
    assert axis.get_xscale() == "log"
    assert [t.get_text() for t in axis.get_xticklabels()] == ["1", "2", "4", "8"]


def test_a_missing_column_is_one_clear_error():
    from netgeom.errors import NetgeomError

    with pytest.raises(NetgeomError, match="runs table lacks columns \\['test_error'\\]"):
        figures.error_vs_width_figure(runs_table().drop(columns="test_error"))


def test_a_measure_spanning_decades_gets_a_log_axis_and_a_narrow_one_stays_linear():
    """The cross-entropy's input gradient falls by 10^4 once the labels are fit: on a linear axis
    every width past the threshold sat on zero."""
    table = study_table()  # falling by 10x per width (the model-wise figure) and per checkpoint (the epoch-wise one)
    steep = table.assign(measure="jacobian_frobenius.crossentropy", value=10.0 ** -(table["width"].rank(method="dense") + 2 * table["epoch"].rank(method="dense")))
    flat = table.assign(measure="jacobian_operator.logits", value=1.0 + table["width"] / table["width"].max() + table["epoch"] / 1000)
    both = pd.concat([steep, flat], ignore_index=True)
    final = both[both["epoch"] == both["epoch"].max()]
    assert final.loc[final["measure"] == steep["measure"][0], "value"].agg(lambda v: v.max() / v.min()) > 1e3
    for figure in (figures.study_vs_width_figure(final, runs_table(), "t"), figures.study_vs_epoch_figure(both, curves_table(), 64, "t")):
        scales = {axis.get_title().replace("\n", " "): (axis.get_yscale(), axis.get_ylabel().replace("\n", " ")) for axis in figure.axes if axis.get_ylabel()}
        logs = [title for title, (scale, _) in scales.items() if scale == "log"]
        assert logs and all("cross-entropy" in title for title in logs), scales
        assert all("log scale" in label for scale, label in scales.values() if scale == "log")
        assert any(scale == "linear" and "operator" in title for title, (scale, _) in scales.items())
