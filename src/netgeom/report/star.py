"""The star-domain study in the report: barrier distributions, barrier against the number of
anchors, a few curves, and the stars' test accuracy beside the regular models'."""

from __future__ import annotations

from netgeom.io import read_parquet
from netgeom.report import figures_star as figures
from netgeom.report.context import Figure, ReportContext

HEADLINE_SPLIT, HEADLINE_MATCHING = "train", "weights"


def report(context: ReportContext) -> list[Figure]:
    root = context.layout.study_root("star")
    if not (root / "barriers.parquet").exists():
        return []
    barriers, curves, tests = (read_parquet(root / f"{name}.parquet") for name in ("barriers", "curves", "tests"))
    accuracy = read_parquet(root / "accuracy.parquet")
    for name, frame in (("star_barriers", barriers), ("star_tests", tests), ("star_accuracy", accuracy)):
        context.write_table(name, frame)
    lines = [
        f"width {row.width}, {row.split}, matching {row.matching}: star {row.star_mean:.3g} +- {row.star_std:.2g} vs regular "
        f"{row.regular_mean:.3g} +- {row.regular_std:.2g} (one-sided Mann-Whitney p = {row.p_value:.3g})"
        for row in tests.itertuples()
    ]
    acc = accuracy.groupby("kind")["test_acc"].mean()
    return [
        Figure(figures.star_barrier_distributions(barriers, context.figure_path("star_barriers")),
               "Star <-> held-out against regular <-> regular train-loss barriers", "; ".join(lines)),
        Figure(figures.star_barrier_vs_anchors(barriers, context.figure_path("star_vs_anchors")),
               "Barrier against the number of anchors", f"Mean test accuracy: stars {acc.get('star', float('nan')):.3f}, regular {acc.get('regular', float('nan')):.3f}."),
        Figure(figures.star_curves(curves, context.figure_path("star_curves")), "Curves: star -> held-out vs regular -> regular", ""),
    ]


def metrics(context: ReportContext) -> dict[str, dict[str, float]]:
    """Headline: the star and regular mean train-loss barriers after matching (largest star)."""
    root = context.layout.study_root("star")
    if not (root / "tests.parquet").exists():
        return {}
    tests = read_parquet(root / "tests.parquet")
    chosen = tests[(tests["split"] == HEADLINE_SPLIT) & (tests["matching"] == HEADLINE_MATCHING)]
    if chosen.empty:
        return {}
    row = chosen.iloc[0]
    return {"star": {"star_barrier": float(row["star_mean"]), "regular_barrier": float(row["regular_mean"]), "p_value": float(row["p_value"])}}
