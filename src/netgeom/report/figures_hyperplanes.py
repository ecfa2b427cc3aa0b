"""Figures of the hyperplane study: are conv filters biased towards the diagonal after training,
and are the biased layers the ones that cannot be re-initialised?

Input tables (see `netgeom.studies.hyperplanes` and `netgeom.studies.reinit`):
- projections: `projection_table` rows of several checkpoints: epoch, layer, kind, stage,
  block, filter, raw, normalised;
- evolution: `hyperplane_evolution`: epoch, layer, stage, block, mass, mean, ... (one row per
  epoch and layer); a plain `layer_statistics` table (no epoch) is accepted where noted;
- reinit: `reinit_sweep`: layer, position, checkpoint ("<epoch>" | "rand"), epoch, accuracy,
  trained_accuracy, relative_drop, ...
Layers are drawn in forward order: by (stage, block) for the hyperplane tables, by position for
the re-init table. Each public function saves to `path` and returns it; its `*_figure` twin
returns the Figure.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from scipy.stats import spearmanr

from netgeom.report.wording import correlation
from netgeom.report.figure_style import (
    epoch_axis,
    house_style,
    legend_outside,
    legend_right,
    line_handle,
    require_columns,
    save,
    width_palette,
)

RAND = "rand"
PROJECTION_LABEL = "normalised projection ⟨w, 1⟩ / (‖w‖ √D)"


def forward_layers(table: pd.DataFrame) -> list[str]:
    """Layer names in forward order, by the (stage, block) key the hyperplane study assigns."""
    keys = table[["layer", "stage", "block"]].drop_duplicates("layer")
    return list(keys.sort_values(["stage", "block"], kind="stable")["layer"])


def _layer_tick(table: pd.DataFrame, layer: str) -> str:
    row = table[table["layer"] == layer].iloc[0]
    return f"{layer}\n(stage {int(row['stage'])}, block {int(row['block'])})"


# About this many characters of a tick label fit under one heatmap column (~1.1 in at 9 pt).
COLUMN_CHARS = 13


def _rotate_if_crowded(axis, count: int) -> None:
    """Slant the x tick labels when they would run into each other: many layers, or long names
    such as '12 · Linear 1024→10'."""
    longest = max((len(label.get_text()) for label in axis.get_xticklabels()), default=0)
    if count > 6 or longest > COLUMN_CHARS:
        axis.tick_params(axis="x", labelrotation=45)
        for label in axis.get_xticklabels():
            label.set_horizontalalignment("right")


# --------------------------------------------------------------------------- projections


def projection_distributions_figure(projections: pd.DataFrame) -> Figure:
    """Per layer, the normalised projections at init (left half, grey) and at the final checkpoint
    (right half, orange) as split violins with quartiles; 0 = a filter orthogonal to the diagonal."""
    require_columns(projections, ["epoch", "layer", "stage", "block", "normalised"], "projection")
    first, last = projections["epoch"].min(), projections["epoch"].max()
    when = {first: f"init (epoch {first})", last: f"final (epoch {last})"}
    data = projections[projections["epoch"].isin([first, last])].assign(when=lambda f: f["epoch"].map(when))
    layers, hues = forward_layers(data), list(dict.fromkeys(when.values()))
    with house_style():
        figure, axis = plt.subplots(figsize=(max(6.0, 1.0 * len(layers) + 2), 4.0))
        sns.violinplot(
            data=data, x="layer", y="normalised", hue="when", order=layers, hue_order=hues, split=len(hues) == 2,
            inner="quart", cut=0, density_norm="width", palette=["0.75", "#de8f05"][-len(hues):], linewidth=0.8, ax=axis,
        )  # fmt: skip
        axis.axhline(0.0, color="0.3", linewidth=0.8, linestyle="--")
        axis.set_xticks(range(len(layers)), [_layer_tick(data, layer) for layer in layers])
        _rotate_if_crowded(axis, len(layers))
        axis.set_xlabel("layer (forward order)")
        axis.set_ylabel(PROJECTION_LABEL)
        axis.set_title("Filter projections on the diagonal of the positive orthant, init vs final\n(above 0: a filter leaning towards the diagonal)")
        axis.legend(title="checkpoint", loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, borderaxespad=0)
    return figure


def projection_distributions(projections: pd.DataFrame, path: Path) -> Path:
    return save(projection_distributions_figure(projections), path)


# --------------------------------------------------------------------------- evolution


def mass_across_epochs_figure(evolution: pd.DataFrame) -> Figure:
    """Left: `mass` (fraction of projections <= 0; 0.5 = unbiased) per layer across checkpoints.
    Right: the mean normalised projection. Colour = depth (dark = first layer)."""
    require_columns(evolution, ["epoch", "layer", "stage", "block", "mass", "mean"], "hyperplane evolution")
    layers = forward_layers(evolution)
    colours = width_palette(layers)
    with house_style():
        figure, (left, right) = plt.subplots(1, 2, figsize=(10.0, 3.6))
        for layer in layers:
            rows = evolution[evolution["layer"] == layer].sort_values("epoch")
            left.plot(rows["epoch"], rows["mass"], color=colours[layer], marker="o", markersize=3, label=layer)
            right.plot(rows["epoch"], rows["mean"], color=colours[layer], marker="o", markersize=3, label=layer)
        left.axhline(0.5, color="0.3", linestyle="--", linewidth=0.9)
        right.axhline(0.0, color="0.3", linestyle="--", linewidth=0.9)
        left.set_ylabel("mass: fraction of filters with projection ≤ 0")
        left.set_title("Negative mass per layer (dashed: 0.5 = unbiased)")
        right.set_ylabel("mean " + PROJECTION_LABEL.split(" ", 1)[1])
        right.set_title("Mean normalised projection per layer")
        for axis in (left, right):
            epoch_axis(axis, evolution["epoch"].max())
        legend_right(figure, [line_handle(layer, colours[layer], marker="o") for layer in layers], title="layer (forward order)")
        figure.tight_layout()
    return figure


def mass_across_epochs(evolution: pd.DataFrame, path: Path) -> Path:
    return save(mass_across_epochs_figure(evolution), path)


# --------------------------------------------------------------------------- re-initialisation


def checkpoint_order(reinit: pd.DataFrame) -> list[str]:
    """Checkpoint names by epoch, then reset sources from files (in order), then `rand`."""
    names = list(dict.fromkeys(reinit["checkpoint"].astype(str)))
    epochs = sorted(int(c) for c in names if c.isdigit())
    files = [c for c in names if not c.isdigit() and c != RAND]
    return [str(e) for e in epochs] + files + ([RAND] if RAND in names else [])


def reinit_layers(reinit: pd.DataFrame) -> list[str]:
    return list(reinit[["layer", "position"]].drop_duplicates("layer").sort_values("position", kind="stable")["layer"])


def checkpoint_label(name: str) -> str:
    if name == RAND:
        return "rand (fresh init)"
    return f"epoch {name}" if name.isdigit() else name.replace("file:", "file ", 1)


def reinit_heatmap_figure(reinit: pd.DataFrame, labels: Mapping[str, str] | None = None) -> Figure:
    """Relative accuracy drop when one layer (column, forward order) is reset to a checkpoint
    (row: epochs, then a fresh random init); annotated; a diverging colour scale fixed to [-1, 1]
    and centred on 0, so a reset that does better (a negative drop) stands out from one that
    changes nothing (under [0, 1] both were the same colour). `labels`
    names the layers (`report.layer_names`); the trained accuracy goes in the caption."""
    require_columns(reinit, ["layer", "position", "checkpoint", "relative_drop", "trained_accuracy"], "reinit")
    rows, layers = checkpoint_order(reinit), reinit_layers(reinit)
    table = reinit.assign(checkpoint=reinit["checkpoint"].astype(str))
    drop = table.pivot_table(index="checkpoint", columns="layer", values="relative_drop", aggfunc="mean").reindex(index=rows, columns=layers)
    labels = labels or {}
    with house_style():
        figure, axis = plt.subplots(figsize=(max(5.6, 1.1 * len(layers) + 3.0), max(2.6, 0.45 * len(rows) + 1.8)))
        sns.heatmap(
            drop, ax=axis, annot=True, fmt=".2f", cmap="vlag", vmin=-1.0, vmax=1.0, center=0.0, linewidths=0.5, linecolor="white",
            cbar_kws={"label": "relative accuracy drop"}, annot_kws={"fontsize": 8},
        )  # fmt: skip
        axis.set_yticks(np.arange(len(rows)) + 0.5, [checkpoint_label(r) for r in rows], rotation=0)
        axis.set_xticks(np.arange(len(layers)) + 0.5, [labels.get(layer, layer) for layer in layers])
        _rotate_if_crowded(axis, len(layers))
        axis.set_xlabel("layer reset (forward order)")
        axis.set_ylabel("weights reset to")
        axis.set_title("Accuracy drop when one layer is reset", loc="left")
    return figure


def reinit_heatmap(reinit: pd.DataFrame, path: Path, labels: Mapping[str, str] | None = None) -> Path:
    return save(reinit_heatmap_figure(reinit, labels), path)


# --------------------------------------------------------------------------- the seed's claim


INIT = "0"


def reference_checkpoint(reinit: pd.DataFrame) -> str:
    """The reset the seed's claim is about: the layer back at its initial value (epoch 0), where
    the sweep has it ("when the bias is not observed, the layer can be reset to its value at
    initialisation without considerable loss"), else `rand`, else the earliest epoch."""
    order = checkpoint_order(reinit)
    return INIT if INIT in order else RAND if RAND in order else order[0]


def bias_and_drop(hyperplanes: pd.DataFrame, reinit: pd.DataFrame, checkpoint: str | None = None) -> pd.DataFrame:
    """Per layer in both tables: bias = |mass - 0.5| at the last epoch, drop = relative_drop at
    `checkpoint` (default `reference_checkpoint`), and the layer's stage, block. When both tables
    carry a `replicate` column (seeds of one cell), one row per replicate and layer."""
    require_columns(hyperplanes, ["layer", "stage", "block", "mass"], "hyperplane statistics")
    require_columns(reinit, ["layer", "checkpoint", "relative_drop"], "reinit")
    keys = ["replicate"] if "replicate" in hyperplanes and "replicate" in reinit else []
    final = hyperplanes
    if "epoch" in hyperplanes:
        last = hyperplanes.groupby(keys)["epoch"].transform("max") if keys else hyperplanes["epoch"].max()
        final = hyperplanes[hyperplanes["epoch"] == last]
    checkpoint = checkpoint or reference_checkpoint(reinit)
    drops = reinit[reinit["checkpoint"].astype(str) == checkpoint].groupby([*keys, "layer"], as_index=False)["relative_drop"].mean()
    bias = final.groupby([*keys, "layer", "stage", "block"], as_index=False)["mass"].mean()
    bias["bias"] = (bias["mass"] - 0.5).abs()
    return bias.merge(drops, on=[*keys, "layer"]).sort_values([*keys, "stage", "block"]).reset_index(drop=True)


def rank_correlations(points: pd.DataFrame) -> dict:
    """Spearman's rho of bias against drop, per replicate (key None without replicates); NaN
    below three layers."""
    groups = points.groupby("replicate") if "replicate" in points else [(None, points)]
    return {key: spearmanr(group["bias"], group["relative_drop"]).statistic if len(group) >= 3 else float("nan") for key, group in groups}


REPLICATE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def bias_vs_reinit_figure(hyperplanes: pd.DataFrame, reinit: pd.DataFrame, checkpoint: str | None = None, labels: Mapping[str, str] | None = None) -> Figure:
    """One point per layer: projection bias |mass - 0.5| (final checkpoint) against the relative
    accuracy drop when that layer is reset (to its init, else `rand`); the seed claims biased
    layers are the critical ones (points rising to the right). Spearman's rho per seed in the
    legend when the tables carry a `replicate` column (one marker per seed), in the caption else.

    hyperplanes: `hyperplane_evolution` (last epoch used) or `layer_statistics`; reinit: `reinit_sweep`."""
    points = bias_and_drop(hyperplanes, reinit, checkpoint)
    checkpoint = checkpoint or reference_checkpoint(reinit)
    colours = width_palette(list(dict.fromkeys(points["layer"])))
    rhos = rank_correlations(points)
    replicates = list(rhos)
    with house_style():
        figure, axis = plt.subplots(figsize=(6.4, 4.4))
        for row in points.itertuples(index=False):
            marker = REPLICATE_MARKERS[replicates.index(getattr(row, "replicate", None)) % len(REPLICATE_MARKERS)]
            axis.scatter(row.bias, row.relative_drop, s=50, marker=marker, color=colours[row.layer], edgecolor="black", linewidth=0.6, zorder=3)
        # Layers are named in the legend, not beside the points: the robust layers pile up near
        # the origin, where per-point names ran over each other.
        handles = [plt.Line2D([], [], marker="o", linestyle="", color=colours[layer], markeredgecolor="black") for layer in colours]
        names = [(labels or {}).get(layer, layer) for layer in colours]
        if len(replicates) > 1:
            handles += [plt.Line2D([], [], marker=REPLICATE_MARKERS[i % len(REPLICATE_MARKERS)], linestyle="", color="grey", markeredgecolor="black")
                        for i in range(len(replicates))]  # fmt: skip
            names += [f"replicate {r}: ρ = {correlation(rho, points['layer'].nunique())}" for r, rho in rhos.items()]
        legend_outside(axis, handles, title="layer (colour)" + (", seed (marker)" if len(replicates) > 1 else ""), labels=names, fontsize=8)
        axis.set_xlim(left=0)
        axis.set_xlabel("projection bias |mass − 0.5| at the final checkpoint")
        axis.set_ylabel(f"relative accuracy drop, layer reset to {checkpoint_label(checkpoint)}")
        axis.set_title("Projection bias against the accuracy drop when the layer is reset, per layer")
    return figure


def bias_vs_reinit(hyperplanes: pd.DataFrame, reinit: pd.DataFrame, path: Path, checkpoint: str | None = None, labels: Mapping[str, str] | None = None) -> Path:
    return save(bias_vs_reinit_figure(hyperplanes, reinit, checkpoint, labels), path)
