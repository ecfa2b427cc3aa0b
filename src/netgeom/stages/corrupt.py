"""Stage `corrupt`: noisy labels (plus clean labels and the flipped mask) for the training subset."""

from __future__ import annotations

import numpy as np
import pandas as pd

from netgeom.data.bundle import load_raw, read_split
from netgeom.data.noise import corrupt_labels
from netgeom.data.sources import get_source
from netgeom.io import atomic_write_json, atomic_write_parquet
from netgeom.layout import Layout
from netgeom.params import NoiseParams, Params, validate


def run_corrupt(params: Params, layout: Layout, noise: float | None = None) -> dict:
    """Corrupt at `noise` (default `noise.label`); returns the summary it writes."""
    p = params.noise.label if noise is None else noise
    # Grid values get the same checks as params.yaml's own `noise.label`.
    noise_params = validate({**params.noise.model_dump(), "label": p}, NoiseParams, prefix="noise.")
    params = params.model_copy(update={"noise": noise_params})
    split = read_split(layout.split_file)
    source = get_source(params.data.name, params.data)
    pool = load_raw(source, layout.data_root(params.data.root), "train", split)
    ids = np.asarray(split.train, dtype=np.int64)
    clean = split.relabel(pool.y[ids])
    noisy = corrupt_labels(clean, params.noise.kind, p, len(split.classes), params.noise.seed)
    table = pd.DataFrame({"sample_id": ids, "label": noisy, "clean_label": clean, "is_noisy": noisy != clean})
    summary = {
        "kind": params.noise.kind,
        "label": p,
        "seed": params.noise.seed,
        "input": params.noise.input,
        "per_image": params.noise.per_image,
        "train_size": int(len(ids)),
        "flipped": int(table["is_noisy"].sum()),
    }
    with layout.building(layout.labels_dir(p)) as out:
        atomic_write_parquet(out / layout.labels_file(p).name, table)
        atomic_write_json(out / layout.labels_summary(p).name, summary)
    return summary
