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
    long["noise"] = long["noise"].map("label noise {:g}".format)  # categorical: distinct colours
    figure, axis = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=long, x="width", y="error", hue="noise", style="split", markers=True, ax=axis, palette="colorblind")
    axis.set_xscale("log", base=2)
    axis.set_title("Error against width (the peak marks the interpolation threshold)")
    return save(figure, path)


def study_vs_width(table: pd.DataFrame, runs: pd.DataFrame, path: Path, title: str) -> Path:
    """Each measure at the final checkpoint against width (clean vs noisy samples), one row per
    noise level, with test error in the first column for the double-descent link."""
    measures = sorted(table["measure"].unique())
    noises = sorted(table["noise"].unique())
    figure, axes = plt.subplots(len(noises), len(measures) + 1, figsize=(4 * (len(measures) + 1), 3.2 * len(noises)), squeeze=False)
    for r, noise in enumerate(noises):
        error = runs[runs["noise"] == noise].melt(id_vars=["width"], value_vars=["train_error", "test_error"], var_name="split", value_name="error")
        sns.lineplot(data=error, x="width", y="error", hue="split", marker="o", ax=axes[r, 0], palette=["tab:blue", "tab:red"])
        axes[r, 0].set_title(f"noise {noise}: error")
        for c, measure in enumerate(measures, start=1):
            subset = table[(table["noise"] == noise) & (table["measure"] == measure)]
            sns.lineplot(data=subset, x="width", y="value", hue="group", marker="o", ax=axes[r, c], hue_order=["all", "clean", "noisy"])
            axes[r, c].set_title(f"noise {noise}: {measure}")
        for axis in axes[r]:
            axis.set_xscale("log", base=2)
    figure.suptitle(title, y=1.01)
    figure.tight_layout()
    return save(figure, path)


def study_vs_epoch(table: pd.DataFrame, curves: pd.DataFrame, width: int, path: Path, title: str) -> Path:
    """Epoch-wise view of one width: test/train error and every measure across checkpoints."""
    measures = sorted(table["measure"].unique())
    figure, axes = plt.subplots(1, len(measures) + 1, figsize=(4 * (len(measures) + 1), 3.2), squeeze=False)
    errors = curves[curves["width"] == width].melt(id_vars=["epoch", "noise"], value_vars=["train_error", "test_error"], var_name="split", value_name="error")
    sns.lineplot(data=errors.assign(noise=errors["noise"].astype(str)), x="epoch", y="error", hue="noise", style="split", ax=axes[0, 0], palette="colorblind")
    axes[0, 0].set_title(f"width {width}: error")
    for c, measure in enumerate(measures, start=1):
        subset = table[(table["width"] == width) & (table["measure"] == measure) & (table["group"] != "all")]
        sns.lineplot(data=subset.assign(noise=subset["noise"].astype(str)), x="epoch", y="value", hue="noise", style="group", marker="o", ax=axes[0, c], palette="colorblind")
        axes[0, c].set_title(measure)
    for axis in axes[0]:
        axis.set_xscale("symlog", linthresh=10)
        axis.set_xlim(left=0)
    figure.suptitle(title, y=1.03)
    figure.tight_layout()
    return save(figure, path)


def mli_curves(curves: pd.DataFrame, monotone: pd.DataFrame, path: Path) -> Path:
    """Train loss from init (t=0) to the final weights (t=1), one panel per noise level;
    dashed lines are the curves that are not monotonic."""
    data = curves[(curves["curve"] == "init-final") & (curves["split"] == "train")].merge(monotone, on="run")
    grid = sns.relplot(
        data=data, x="t", y="loss", hue="width", style="monotone", style_order=[True, False], col="noise", kind="line",
        palette="viridis", hue_norm=matplotlib.colors.LogNorm(), height=3.2, aspect=1.2, errorbar=None,
    )
    grid.set_titles("label noise {col_name}")
    grid.figure.suptitle("Monotonic linear interpolation: train loss along init -> final", y=1.03)
    return save(grid.figure, path)


def delta_vs_distance(summary: pd.DataFrame, path: Path) -> Path:
    """Non-monotonicity (Delta) against the normalised distance travelled in weight space."""
    figure, axis = plt.subplots(figsize=(5.5, 4))
    sns.scatterplot(data=summary, x="normalised_distance", y="delta.train", hue="noise", size="width", ax=axis, palette="rocket_r")
    axis.set_title("Delta against distance travelled")
    axis.set_xlabel("||theta_T - theta_0|| / ||theta_0||")
    return save(figure, path)


def barriers(table: pd.DataFrame, path: Path) -> Path:
    """Loss barriers between seed replicates against width, before and after weight matching."""
    data = table[table["split"] == "train"]
    figure, axis = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=data, x="width", y="loss_barrier", hue="matching", style="noise", marker="o", ax=axis)
    axis.set_xscale("log", base=2)
    axis.set_title("Train-loss barrier between replicates")
    return save(figure, path)


def landscape(grid: pd.DataFrame, trajectory: pd.DataFrame, run: str, path: Path) -> Path:
    """Train loss on the plane through (theta_0, theta_0', theta_T) and the projected trajectory."""
    data = grid[grid["split"] == "train"].pivot(index="y", columns="x", values="loss")
    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    contour = axis.contourf(data.columns, data.index, data.values, levels=20, cmap="viridis")
    figure.colorbar(contour, ax=axis, label="train loss")
    axis.plot(trajectory["x"], trajectory["y"], "w.-", label="training trajectory")
    axis.plot(trajectory["x"].iloc[[0, -1]], trajectory["y"].iloc[[0, -1]], "r--", label="linear path")
    axis.legend(loc="best", fontsize=8)
    axis.set_title(f"Loss landscape, {run}")
    return save(figure, path)


def mli_preset(curves: pd.DataFrame, fractions: pd.DataFrame, path: Path) -> Path:
    """Left: init -> final train-loss curves by optimizer and BN. Right: the fraction of
    converged runs whose curve is not monotonic, per group."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    data = curves[curves["split"] == "train"].assign(bn=lambda f: f["batch_norm"].map({True: "BN", False: "no BN"}))
    sns.lineplot(data=data, x="t", y="loss", hue="optimizer", style="bn", units="seed", estimator=None, ax=left)
    left.set_yscale("log")
    left.set_title("Train loss from init (t=0) to trained (t=1)")
    bars = fractions.assign(group=lambda f: f["optimizer"] + f["batch_norm"].map({True: " + BN", False: ""}))
    sns.barplot(data=bars, x="group", y="frac_non_monotonic", ax=right, color="tab:purple")
    right.set_ylim(0, 1)
    right.set_title("Fraction of converged runs that are non-monotonic")
    figure.tight_layout()
    return save(figure, path)
