"""The star-domain study in the report: barrier distributions, barrier against the number of
anchors, a few curves, and the stars' test accuracy beside the regular models'."""

from __future__ import annotations

from netgeom.io import read_parquet
from netgeom.report import figures_star as figures
from netgeom.report.context import Figure, ReportContext
from netgeom.report.wording import mean_spread

HEADLINE_SPLIT, HEADLINE_MATCHING = "train", "weights"
HEADLINE_LABELS = {
    "star_barrier": f"star ↔ held-out {HEADLINE_SPLIT}-loss barrier, mean ({HEADLINE_MATCHING} matched, largest star)",
    "regular_barrier": f"regular ↔ regular {HEADLINE_SPLIT}-loss barrier, mean ({HEADLINE_MATCHING} matched)",
    "p_value": "one-sided Mann-Whitney p (star barriers smaller)",
}


def report(context: ReportContext) -> list[Figure]:
    root = context.layout.study_root("star")
    if not (root / "barriers.parquet").exists():
        return []
    barriers, curves, tests = (read_parquet(root / f"{name}.parquet") for name in ("barriers", "curves", "tests"))
    accuracy = read_parquet(root / "accuracy.parquet")
    for name, frame in (("star_barriers", barriers), ("star_tests", tests), ("star_accuracy", accuracy)):
        context.write_table(name, frame)
    lines = [
        f"Width {row.width}, {row.split} loss, matching {row.matching}: star ↔ held-out {mean_spread(row.star_mean, row.star_std, int(row.star_n))}"
        f" vs regular ↔ regular {mean_spread(row.regular_mean, row.regular_std, int(row.regular_n))}; one-sided Mann-Whitney p = "
        + (f"{row.p_value:.3g}." if row.p_value == row.p_value else "n/a (too few pairs).")
        for row in tests.itertuples()
    ]
    acc = accuracy.groupby("kind")["test_acc"].mean()
    accuracy_text = ", ".join(f"{kind}s {acc[kind]:.3f}" for kind in ("star", "regular") if kind in acc) or "n/a"
    ensembles = accuracy[accuracy["kind"] == "ensemble"]
    if len(ensembles):  # the star against the ensemble of the same anchors, per anchor count
        stars = accuracy[accuracy["kind"] == "star"].groupby("anchors")["test_acc"].mean()
        accuracy_text += "; star vs the ensemble of its k anchors (softmax averaged): " + ", ".join(
            f"k={int(k)} {stars.get(k, float('nan')):.3f} vs {v:.3f}" for k, v in ensembles.groupby("anchors")["test_acc"].mean().items()
        )
    return [
        Figure(figures.star_barrier_distributions(barriers, context.figure_path("star_barriers"), tests),
               "Star ↔ held-out and regular ↔ regular loss barriers", "\n\n".join(lines)),
        Figure(figures.star_barrier_vs_anchors(barriers, context.figure_path("star_vs_anchors")),
               "Barrier against the number of anchors", f"{_by_anchors_text(barriers)} Mean test accuracy: {accuracy_text}."),
        Figure(figures.star_curves(curves, context.figure_path("star_curves")), "Loss along the paths: star → held-out and regular → regular",
               "Loss along the straight line between the two models of each pair, per weight matching."),
    ]


def _by_anchors_text(barriers) -> str:
    """The plotted headline series in words: the star's mean barrier per anchor count beside the
    regular pairs' (the headline split and matching, per width)."""
    chosen = barriers[(barriers["split"] == HEADLINE_SPLIT) & (barriers["matching"] == HEADLINE_MATCHING)]
    parts = []
    for width, part in chosen.groupby("width"):
        stars = part[part["kind"] == "star"].groupby("anchors")["loss_barrier"].mean()
        regular = part.loc[part["kind"] == "regular", "loss_barrier"].mean()
        if len(stars):
            parts.append(f"width {width}: " + ", ".join(f"k={int(k)} {v:.3g}" for k, v in stars.items()) + f" (regular ↔ regular {regular:.3g})")
    if not parts:
        return ""
    return f"Star ↔ held-out {HEADLINE_SPLIT}-loss barrier by anchors, {HEADLINE_MATCHING} matched: " + "; ".join(parts) + "."


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
