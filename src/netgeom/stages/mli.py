"""Stage `mli`: the MLI paper's main comparison on embedded data, as one small preset.

Trains optimizer x batch-norm x seed variants (and, where params list several, architectures,
depths and learning rates) on the clean training labels, takes the init -> final curve of each,
applies the convergence filter and reports the fraction of non-monotonic runs per group (the
paper: Adam-trained nets violate MLI far more often).
`mli.objective: reconstruction` trains the seed's MNIST autoencoders instead (mean squared
error; their curves have no accuracy). Writes artifacts/studies/mli/: runs.parquet,
curves.parquet, fractions.parquet.
"""

from __future__ import annotations

import itertools
import shutil

import pandas as pd
import torch

from netgeom.data.bundle import load_bundle, load_raw, read_split
from netgeom.groups.mli import MliParams
from netgeom.data.sources import get_source
from netgeom.io import atomic_write_parquet
from netgeom.layout import Layout
from netgeom.models import accepted_options, create_model
from netgeom.models.autoencoder import build_mlp_autoencoder
from netgeom.params import Params, TrainParams, validate
from netgeom.progress import progress
from netgeom.runs import study_device
from netgeom.summary import Summary, write_summary
from netgeom.studies import curve_summaries as cs
from netgeom.studies import weight_space as ws
from netgeom.studies.interpolation import curve_values, interpolation_curve
from netgeom.training.loop import TrainingHooks, predict, train




def _clean_bundle(params: Params, layout: Layout):
    split = read_split(layout.split_file)
    pool = load_raw(get_source(params.data.name, params.data), layout.data_root(params.data.root), "train", split)
    clean = split.relabel(pool.y[split.train])
    labels = pd.DataFrame({"sample_id": split.train, "label": clean, "clean_label": clean})
    clean_params = params.model_copy(update={"noise": params.noise.model_copy(update={"input": "none"})})
    return load_bundle(clean_params, split, labels, layout.data_root(params.data.root))


GROUP_AXES = ["arch", "depth", "optimizer", "lr", "batch_norm"]
AUTOENCODER = "mlp_autoencoder"


def squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared reconstruction error (the curve's loss for an autoencoder)."""
    return (outputs - targets).pow(2).flatten(1).mean(1)


def _reconstruction_loss(model, inputs, targets, generator) -> torch.Tensor:
    return squared_error(model(inputs), inputs).mean()


def _reconstruction_metrics(model, data, batch_size: int) -> dict[str, float]:
    """`<split>_loss`: the mean squared reconstruction error of each split (no accuracy)."""
    metrics = {}
    for name, (x, _) in data.eval_sets().items():
        metrics[f"{name}_loss"] = squared_error(predict(model, x, batch_size), x).mean().item() if len(x) else float("nan")
        metrics[f"{name}_acc"] = float("nan")
    return metrics


RECONSTRUCTION = TrainingHooks(make_objective=lambda model: _reconstruction_loss, evaluate=_reconstruction_metrics)


def configs(p: MliParams) -> list[dict]:
    """Every trained variant, in a fixed order; a family without a depth option gets depth None
    (once, not once per listed depth)."""
    out = []
    for arch in [AUTOENCODER] if p.objective == "reconstruction" else p.archs:
        depths = p.depths if arch != AUTOENCODER and "depth" in accepted_options(arch) else [None]
        for depth, optimizer in itertools.product(depths, p.optimizers):
            for lr, batch_norm, seed in itertools.product(p.lrs(optimizer), p.batch_norm, p.seeds):
                out.append({"arch": arch, "depth": depth, "optimizer": optimizer, "lr": lr, "batch_norm": batch_norm, "seed": seed})
    return out


def group_names(p: MliParams, config: dict) -> tuple[str, str]:
    """(summary key stem, figure label) of a config's group: optimizer and BN always, the other
    axes only where params list several values, so the default preset keeps its keys (sgd_bn)."""
    key, label = config["optimizer"], {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}[config["optimizer"]]
    if len(p.lrs(config["optimizer"])) > 1:
        key, label = f"{key}_lr{config['lr']:g}", f"{label} lr {config['lr']:g}"
    if config["batch_norm"]:
        key, label = f"{key}_bn", f"{label} + BN"
    if len(p.archs) > 1 and config["arch"] != AUTOENCODER:
        key, label = f"{config['arch']}_{key}", f"{config['arch']} {label}"
    if len(p.depths) > 1 and config["depth"] is not None:
        key, label = f"d{config['depth']}_{key}", f"depth {config['depth']}, {label}"
    return key, label


def run(params: Params, layout: Layout) -> Summary:
    p: MliParams = params.mli
    device = study_device(params)
    data = _clean_bundle(params, layout).to(device)
    reconstruct = p.objective == "reconstruction"
    eval_sets = {"train": (data.train.x, data.train.x if reconstruct else data.train.y)}
    curve_loss = {"loss_fn": squared_error} if reconstruct else {}
    rows, curves = [], []
    variants = configs(p)
    for config in progress(variants, desc="mli", total=len(variants)):
        arch, depth, optimizer, lr, batch_norm, seed = (config[k] for k in ("arch", "depth", "optimizer", "lr", "batch_norm", "seed"))
        settings = validate(
            {"epochs": p.epochs, "optimizer": optimizer, "lr": lr, "batch_size": params.train.batch_size,
             "eval_every": p.epochs, "checkpoints": {"epochs": []}},
            TrainParams, prefix="mli.",
        )
        torch.manual_seed(seed)
        if reconstruct:
            model = build_mlp_autoencoder(data.info.input_shape, tuple(p.autoencoder), batch_norm).to(device)
        else:
            options = {"width": p.width, "batch_norm": batch_norm, **({"depth": depth} if depth is not None else {})}
            model = create_model(arch, data.info.input_shape, data.info.num_classes, **options).to(device)
        theta_0 = {k: v.clone() for k, v in model.state_dict().items()}
        work = layout.staging_dir(f"mli-{arch}-d{depth}-{optimizer}-lr{lr:g}-bn{int(batch_norm)}-s{seed}")
        result = train(model, data, settings, seed=seed, workdir=work, resume=False, device=device,
                       **({"hooks": RECONSTRUCTION} if reconstruct else {}))
        shutil.rmtree(work, ignore_errors=True)  # only the curve matters here
        curve = interpolation_curve(model, theta_0, model.state_dict(), eval_sets, n=p.points, bn="recompute",
                                    calibration_inputs=data.train.x[: p.calibration_samples], **curve_loss)
        _, loss = curve_values(curve, "train", "loss")
        key, label = group_names(p, config)
        config = {**config, "group_key": key, "group": label}
        rows.append(
            {**config, "delta": cs.largest_rise(loss), "final_train_loss": result.final["train_loss"],
             "final_train_acc": result.final["train_acc"], "test_acc": result.final["test_acc"],
             "normalised_distance": ws.normalised_weight_distance(theta_0, model.state_dict())}
        )
        curves.append(curve.assign(**config))
    runs = pd.DataFrame(rows).astype({"depth": "Int64"})  # None for a family without depth
    fractions = cs.non_monotonic_fraction(runs, [*GROUP_AXES, "group_key", "group"], max_final_loss=p.max_final_loss, tol=p.tol)
    summary = Summary(extra={"fractions": fractions.to_dict("records")})
    with layout.building(layout.study_root("mli")) as out:
        atomic_write_parquet(out / "runs.parquet", runs)
        atomic_write_parquet(out / "curves.parquet", pd.concat(curves, ignore_index=True))
        atomic_write_parquet(out / "fractions.parquet", fractions)
        write_summary(out, summary)
    return summary


def describe(summary: Summary) -> str:
    return "\n".join(
        f"mli: {row['group']}: non-monotonic {row['n_non_monotonic']}/{row['n_converged']} converged"
        for row in summary.extra["fractions"]
    )
