"""How the report puts things in words: readable names for metric keys and measures, and numbers
that never read "nan" (a spread of one value, a correlation of two points: say why there is none).

Keys stay as they are in summary.json and MLflow (stable for scripts and `dvc exp show`); only what
a person reads changes. A study adds the labels of its headline metrics as `HEADLINE_LABELS` in its
report module; `headline_label` looks there first.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

# The training headline (stages/report.py). "Peak" is used for one thing only: the highest test
# error among the widths that fit their training labels (the double-descent peak).
TRAINING_LABELS = {
    "peak_test_error": "double-descent peak: highest test error among the widths that fit the training labels (among all widths where none does: see the interpolation threshold)",
    "peak_width": "width of the double-descent peak (of the highest test error where no width fits)",
    "test_error_rise": "largest test-error rise above the best narrower width",
    "rise_width": "width of that rise",
    "threshold_width": "interpolation threshold: first width with train error <= 1%",
    "test_error_widest": "test error of the widest model",
}

MEASURES = {
    "jacobian_frobenius": "input-Jacobian Frobenius norm",
    "jacobian_operator": "input-Jacobian operator norm",
    "absolute_deviation": "absolute deviation from the affine interpolation",
    "crossings": "linear regions crossed per path",
    "density": "linear-region density",
    "volume": "Monte-Carlo volume",
}
OF = {"crossentropy": "of the cross-entropy loss", "logits": "of the logits", "softmax": "of the softmax", "loss": "of the loss"}


AXIS_NAMES = {  # where the full name runs past a panel's height; the panel's title has it whole
    "absolute_deviation": "absolute deviation",
    "crossings": "regions crossed per path",
}


def measure_name(key: str) -> str:
    """'jacobian_operator.logits' -> 'input-Jacobian operator norm' (an axis label's length)."""
    name = key.partition(".")[0]
    return AXIS_NAMES.get(name) or MEASURES.get(name, name.replace("_", " "))


def measure_label(key: str) -> str:
    """'jacobian_operator.logits' -> 'input-Jacobian operator norm of the logits'."""
    name, _, of = key.partition(".")
    text = MEASURES.get(name, name.replace("_", " "))
    return f"{text} {OF.get(of, of.replace('_', ' '))}".strip()


def group_label(group: str) -> str:
    """'noise_20pct' -> 'label noise 20%'; a study's group -> its name."""
    matched = re.fullmatch(r"noise_(.+)pct", group)
    return f"label noise {matched.group(1)}%" if matched else group.replace("_", " ")


def headline_label(group: str, key: str, study_labels: Mapping[str, str] | None = None) -> str:
    """The headline table's row name for summary.json's `group.key`."""
    study_labels = study_labels or {}
    text = study_labels.get(key) or TRAINING_LABELS.get(key)
    if text is None:
        replicate = re.fullmatch(r"(.+)_replicate(\d+)", key)  # the grid's replicate index, not its seed
        base = study_labels.get(replicate.group(1)) if replicate else None
        text = f"{base}, replicate {replicate.group(2)}" if base else key.replace("_", " ")
    return f"{group_label(group)}: {text}"


def mean_spread(mean: float, std: float, n: int, unit: str = "pair") -> str:
    """'0.377 +- 0.021 (n=4)'; one value has no spread: '0.377, spread n/a (one pair)'."""
    if n == 0 or not math.isfinite(mean):
        return f"n/a (no {unit}s)"
    if n == 1 or not math.isfinite(std):
        return f"{mean:.3g}, spread n/a (one {unit})"
    return f"{mean:.3g} ± {std:.2g} (n={n})"


def correlation(rho: float, n: int, what: str = "layers", needs: int = 3) -> str:
    """'0.42' or, where it cannot be computed, 'n/a (2 layers; needs 3)'."""
    if n < needs or not math.isfinite(rho):
        return f"n/a ({n} {what}; needs {needs} with distinct values)"
    return f"{rho:.2f}"
