"""Stage `mli`: the MLI paper's main comparison on embedded data, as one small preset.

Trains optimizer x batch-norm x seed variants of one architecture on the clean training labels,
takes the init -> final curve of each, applies the convergence filter and reports the fraction
of non-monotonic runs per group (the paper: Adam-trained nets violate MLI far more often).
Writes artifacts/studies/mli/: runs.parquet, curves.parquet, fractions.parquet.
"""

from __future__ import annotations

import itertools
import shutil

import pandas as pd
import torch

from netgeom.data.bundle import load_bundle, read_split
from netgeom.groups.mli import DEFAULT_LR, MliParams
from netgeom.data.sources import get_source
from netgeom.io import atomic_write_parquet
from netgeom.layout import Layout
from netgeom.models import create_model
from netgeom.params import Params, TrainParams, validate
from netgeom.progress import progress
from netgeom.runs import study_device
from netgeom.summary import Summary, write_summary
from netgeom.studies import curve_summaries as cs
from netgeom.studies import weight_space as ws
from netgeom.studies.interpolation import curve_values, interpolation_curve
from netgeom.training.loop import train




def _clean_bundle(params: Params, layout: Layout):
    split = read_split(layout.split_file)
    pool = get_source(params.data.name, params.data).load(layout.data_root(params.data.root), "train")
    clean = split.relabel(pool.y[split.train])
    labels = pd.DataFrame({"sample_id": split.train, "label": clean, "clean_label": clean})
    clean_params = params.model_copy(update={"noise": params.noise.model_copy(update={"input": "none"})})
    return load_bundle(clean_params, split, labels, layout.data_root(params.data.root))


def run(params: Params, layout: Layout) -> Summary:
    p: MliParams = params.mli
    device = study_device(params)
    data = _clean_bundle(params, layout).to(device)
    eval_sets = {"train": (data.train.x, data.train.y)}
    rows, curves = [], []
    configs = list(itertools.product(p.optimizers, p.batch_norm, p.seeds))
    for optimizer, batch_norm, seed in progress(configs, desc="mli", total=len(configs)):
        settings = validate(
            {"epochs": p.epochs, "optimizer": optimizer, "lr": p.lr.get(optimizer, DEFAULT_LR[optimizer]), "batch_size": params.train.batch_size,
             "eval_every": p.epochs, "checkpoints": {"epochs": []}},
            TrainParams, prefix="mli.",
        )
        torch.manual_seed(seed)
        model = create_model(p.arch, data.info.input_shape, data.info.num_classes, width=p.width, depth=p.depth, batch_norm=batch_norm).to(device)
        theta_0 = {k: v.clone() for k, v in model.state_dict().items()}
        work = layout.staging_dir(f"mli-{optimizer}-bn{int(batch_norm)}-s{seed}")
        result = train(model, data, settings, seed=seed, workdir=work, resume=False, device=device)
        shutil.rmtree(work, ignore_errors=True)  # only the curve matters here
        curve = interpolation_curve(model, theta_0, model.state_dict(), eval_sets, n=p.points, bn="recompute", calibration_inputs=data.train.x[: p.calibration_samples])
        _, loss = curve_values(curve, "train", "loss")
        config = {"optimizer": optimizer, "batch_norm": batch_norm, "seed": seed}
        rows.append(
            {**config, "delta": cs.largest_rise(loss), "final_train_loss": result.final["train_loss"],
             "final_train_acc": result.final["train_acc"], "test_acc": result.final["test_acc"],
             "normalised_distance": ws.normalised_weight_distance(theta_0, model.state_dict())}
        )
        curves.append(curve.assign(**config))
    runs = pd.DataFrame(rows)
    fractions = cs.non_monotonic_fraction(runs, ["optimizer", "batch_norm"], max_final_loss=p.max_final_loss, tol=p.tol)
    folder = layout.study_root("mli")
    atomic_write_parquet(folder / "runs.parquet", runs)
    atomic_write_parquet(folder / "curves.parquet", pd.concat(curves, ignore_index=True))
    atomic_write_parquet(folder / "fractions.parquet", fractions)
    summary = Summary(extra={"fractions": fractions.to_dict("records")})
    write_summary(folder, summary)
    return summary


def describe(summary: Summary) -> str:
    return "\n".join(
        f"mli: {row['optimizer']:5s} bn={row['batch_norm']!s:5s} non-monotonic {row['n_non_monotonic']}/{row['n_converged']} converged"
        for row in summary.extra["fractions"]
    )
