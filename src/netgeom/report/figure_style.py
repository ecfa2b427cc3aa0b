"""What every report figure shares: the house style, palettes, axes and deterministic saving.

Figures are built by `*_figure` functions that return a matplotlib Figure (tests inspect it)
and saved by thin wrappers that take an output path and return it. Everything is drawn with
explicit orders and palettes so the same tables give the same pixels.
"""

from __future__ import annotations

import textwrap

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

from netgeom.errors import NetgeomError  # noqa: E402
from netgeom.io import atomic_write  # noqa: E402

DPI = 120
SPLIT_STYLES = {"test": "-", "train": "--"}
GROUP_COLOURS = {"all": "0.35", "clean": "#0173b2", "noisy": "#d55e00"}
# Dates and tool versions in the file would make identical figures differ byte for byte.
_NO_METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None}, "pdf": {"CreationDate": None, "Producer": None, "Creator": None}}
_RC = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8, "legend.title_fontsize": 8,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "figure.titlesize": 11, "svg.hashsalt": "netgeom",
    "axes.spines.top": False, "axes.spines.right": False,
}  # fmt: skip


@contextmanager
def house_style() -> Iterator[None]:
    """Seaborn's white grid with fonts sized for a 120 dpi PNG, without touching global state."""
    with sns.axes_style("whitegrid"), plt.rc_context(_RC):
        yield


def save(figure: Figure, path: str | Path) -> Path:
    """Write `figure` atomically (format from the suffix), close it and return the path."""
    path = Path(path)
    fmt = path.suffix[1:].lower()
    if not fmt:
        raise NetgeomError("report.format", f"{path}: the figure file name needs a suffix (.png, .svg, .pdf)")
    with house_style():
        atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=DPI, bbox_inches="tight", format=fmt, metadata=_NO_METADATA.get(fmt)))
    plt.close(figure)
    return path


def require_columns(table: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise NetgeomError("report", f"{what} table lacks columns {missing}; has {list(table.columns)}")


# --------------------------------------------------------------------------- labels and palettes


def noise_label(noise: float) -> str:
    return f"label noise {noise:g}"


def sorted_values(series: pd.Series) -> list:
    """Distinct values in numeric order (widths sort as numbers, never as strings)."""
    return sorted(pd.unique(series.dropna()))


def width_palette(widths: Sequence) -> dict:
    """Sequential colours, narrow = dark purple to wide = green; viridis' pale yellow end is cut off
    because it vanishes on a white background."""
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.82, max(len(widths), 1)))
    return {w: colours[i] for i, w in enumerate(widths)}


def categorical_palette(values: Sequence) -> dict:
    return dict(zip(values, sns.color_palette("colorblind", max(len(values), 1))))


def line_handle(label: str, colour="0.2", linestyle: str = "-", marker: str | None = None) -> Line2D:
    """A legend entry that stands for a colour or a line style rather than one drawn line."""
    return Line2D([], [], color=colour, linestyle=linestyle, marker=marker, label=label)


def legend_right(figure: Figure, handles: Sequence, title: str | None = None, **options):
    """One legend for the whole figure, outside the axes on the right, so it never hides data."""
    return figure.legend(
        handles=list(handles), title=title, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, **options
    )


def legend_outside(axis, handles: Sequence | None = None, title: str | None = None, **options):
    """The axis' legend to its right, outside the data area."""
    kwargs = {"handles": list(handles)} if handles is not None else {}
    return axis.legend(**kwargs, title=title, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, borderaxespad=0, **options)


# --------------------------------------------------------------------------- axes


def integer_label(value: float, _position=None) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:.0e}"


def width_axis(axis, widths: Sequence, label: str = "width (log2 scale)") -> None:
    """Log2 axis whose ticks are exactly the widths that were trained, written as numbers."""
    axis.set_xscale("log", base=2)
    axis.xaxis.set_major_locator(FixedLocator([float(w) for w in widths]))
    axis.xaxis.set_major_formatter(FuncFormatter(integer_label))
    axis.xaxis.set_minor_locator(NullLocator())
    axis.set_xlabel(label)


def epoch_ticks(max_epoch: float) -> list[float]:
    top = max(float(max_epoch), 1.0)
    return [0.0] + [10.0**k for k in range(int(np.floor(np.log10(top))) + 1)]


def epoch_axis(axis, max_epoch: float, label: str = "epoch (symlog scale)") -> None:
    """Symlog epochs: linear between 0 and 1, logarithmic after, so epoch 0 (the init) stays on
    the axis and the early epochs, where most of the change happens, get room."""
    axis.set_xscale("symlog", linthresh=1.0, linscale=0.5)
    axis.set_xlim(0, max(float(max_epoch), 1.0) * 1.05)
    axis.xaxis.set_major_locator(FixedLocator(epoch_ticks(max_epoch)))
    axis.xaxis.set_major_formatter(FuncFormatter(integer_label))
    axis.xaxis.set_minor_locator(NullLocator())
    axis.set_xlabel(label)


WIDE_RANGE = 100.0  # a positive measure whose values span more than this factor reads on a log axis


def measure_axis(axis, values: pd.Series, label: str, wrap: int = 20) -> None:
    """The y axis of a measure: logarithmic where its values are positive and span more than
    WIDE_RANGE (a loss gradient that falls by 10^4 once the labels are fit flattened onto zero on
    a linear axis), linear else."""
    values = values.dropna()
    wide = len(values) and (values > 0).all() and values.max() / values.min() > WIDE_RANGE
    if wide:
        axis.set_yscale("log")
    axis.set_ylabel(textwrap.fill(label, wrap) + ("\n(log scale)" if wide else ""))


def mean_and_std(table: pd.DataFrame, by: Sequence[str], value: str) -> pd.DataFrame:
    """Mean, sample std (0 for a single value) and count of `value` per group, sorted by the keys."""
    grouped = table.groupby(list(by), sort=True)[value]
    out = grouped.agg(mean="mean", std="std", n="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def plot_mean_line(axis, frame: pd.DataFrame, x: str, *, label: str, colour, linestyle: str = "-", marker: str | None = None, **options):
    """One line through the means, with a +-1 std band where there are replicates."""
    (line,) = axis.plot(frame[x], frame["mean"], color=colour, linestyle=linestyle, marker=marker, label=label, **options)
    if (frame["n"] > 1).any():
        axis.fill_between(frame[x], frame["mean"] - frame["std"], frame["mean"] + frame["std"], color=colour, alpha=0.15, linewidth=0)
    return line
