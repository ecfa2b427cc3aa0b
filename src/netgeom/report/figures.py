"""Seaborn figures of the pipeline's tables; every function returns the saved path."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from netgeom.io import atomic_write  # noqa: E402


def save(figure, path: Path) -> Path:
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=120, bbox_inches="tight", format=path.suffix[1:]))
    plt.close(figure)
    return path


def learning_curves(curves: pd.DataFrame, path: Path) -> Path:
    """Train and test error against epoch, one panel per noise level, colour = width."""
    long = curves.melt(
        id_vars=["epoch", "width", "noise", "replicate"], value_vars=["train_error", "test_error"], var_name="split", value_name="error"
    )
    long["split"] = long["split"].str.removesuffix("_error")
    grid = sns.relplot(
        data=long, x="epoch", y="error", hue="width", style="split", col="noise", kind="line",
        palette="viridis", height=3.2, aspect=1.2, errorbar=None, hue_norm=matplotlib.colors.LogNorm(),
    )
    grid.set_titles("label noise {col_name}")
    grid.figure.suptitle("Learning curves", y=1.03)
    return save(grid.figure, path)


def error_vs_width(runs: pd.DataFrame, path: Path) -> Path:
    """Model-wise double descent: final train/test error against width, one line per noise level."""
    long = runs.melt(id_vars=["width", "noise"], value_vars=["train_error", "test_error"], var_name="split", value_name="error")
    long["split"] = long["split"].str.removesuffix("_error")
    figure, axis = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=long, x="width", y="error", hue="noise", style="split", markers=True, ax=axis, palette="rocket_r")
    axis.set_xscale("log", base=2)
    axis.set_title("Error against width (the peak marks the interpolation threshold)")
    return save(figure, path)
