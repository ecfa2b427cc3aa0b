"""Stages `star_source`, `star` and `star_barriers`: the star-domain hypothesis (starlight seed).

star_source@<width>-<seed>  a regular training of the star cell with its own seed: the N anchors
                            and the H held-out models -> artifacts/star/sources/<run>/
star@<width>-<count>        a star model trained against the first `count` anchors: each
                            minibatch draws one anchor n and one t and follows the cross-entropy
                            at (1 - t) theta* + t theta_n -> artifacts/star/stars/<run>/
star_barriers               barriers star <-> held-out against regular <-> regular among the
                            held-out models, before and after weight matching, on train and test;
                            barrier against the number of anchors; a one-sided Mann-Whitney test
                            -> artifacts/studies/star/

Sources and stars are training runs like any other (checkpoints on the schedule, bit-exact
resume, an MLflow run each); a star's identity covers its anchors' identities, t and mu.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd

from netgeom.errors import NetgeomError
from netgeom.groups.star import StarParams, check_cell, source_name, star_name
from netgeom.io import atomic_write_parquet
from netgeom import layout as paths
from netgeom.layout import IN_DVC_YAML, RUN_FILE, Layout, noise_tag
from netgeom.params import EXECUTION_PARAMS, Params
from netgeom.runs import TRAINING_CODE, Cell, cell_params, load_cell_data, load_state, model_for_run, read_run, study_device
from netgeom.stages.barriers import pair_barriers
from netgeom.groups.interpolation import InterpolationParams
from netgeom.summary import Summary, write_summary
from netgeom.stages.train import finished, train_run
from netgeom.training import TrainingHooks
from netgeom.studies import star as star_study

SPLITS = ("train", "test")




def source_params(params: Params, width: int, seed: int) -> Params:
    """The star cell's params for one source model: its own seed, `star.epochs` epochs."""
    p: StarParams = params.star
    cell = cell_params(params, Cell(width, p.noise, 0))
    train = cell.train.model_copy(update={"epochs": p.epochs, "checkpoints": cell.train.checkpoints.model_copy(update={"epochs": [e for e in cell.train.checkpoints.epochs if e <= p.epochs]})})
    return cell.model_copy(update={"seed": seed, "train": train})


def run_source(params: Params, layout: Layout, width: int, seed: int, resume: bool = True, track: bool = False) -> Path:
    """Train one source model (an anchor or a held-out model) of the star cell."""
    p: StarParams = params.star
    check_cell(params)
    if seed not in p.anchors + p.held_out:
        raise NetgeomError("star.anchors", f"seed {seed} is neither an anchor nor a held-out model: {p.anchors} / {p.held_out}")
    settings = source_params(params, width, seed)
    name = source_name(params, width, seed)
    role = "anchor" if seed in p.anchors else "held_out"
    folder = train_run(
        settings, layout, name=name, target=layout.star_source_dir(name), cell=Cell(width, p.noise, 0),
        info_extra={"star": {"role": role}}, resume=resume,
    )
    return finished(params, layout, folder, track)


def _anchor_runs(params: Params, layout: Layout, width: int, count: int) -> list:
    runs = []
    for seed in params.star.anchors[:count]:
        folder = layout.star_source_dir(source_name(params, width, seed))
        if not (folder / RUN_FILE).exists():
            raise NetgeomError("star.anchors", f"{folder} is missing; run `dvc repro star_source` first")
        runs.append(read_run(folder))
    return runs


def run_star(params: Params, layout: Layout, width: int, count: int, resume: bool = True, track: bool = False) -> Path:
    """Train a star model against the first `count` anchors."""
    p: StarParams = params.star
    if count not in p.anchor_counts:
        raise NetgeomError("star.anchor_counts", f"{count} is not among {p.anchor_counts}")
    anchors = _anchor_runs(params, layout, width, count)
    states = [load_state(run.final_checkpoint(), fits=model_for_run(run.info)) for run in anchors]
    star_study.check_anchor_architectures(states)
    settings = source_params(params, width, params.seed)
    data = load_cell_data(settings, layout)
    calibration_inputs = data.train.x[: p.calibration_samples]

    placed: list = []
    # star.realign: the anchors are re-aligned to the star before the first step of every epoch
    # (from the star as the last epoch left it), also after a resume, which replays bit-exactly.
    due = {"realign": p.realign}

    def make_objective(model):
        placed[:] = [star_study.anchor_parameters(model, state) for state in states]

        def objective(model, inputs, targets, generator):
            if due["realign"]:
                states[:] = star_study.realign_anchors(model, model.state_dict(), states)
                placed[:] = [star_study.anchor_parameters(model, state) for state in states]
                due["realign"] = False
            n, t = star_study.draw_anchor_and_t(generator, len(placed), p.t)
            return star_study.star_objective(model, dict(model.named_parameters()), placed[n], t, inputs, targets, mu=p.mu,
                                             label_smoothing=settings.train.label_smoothing, anti=p.anti)

        return objective

    def refresh(model) -> None:  # the star's own BN statistics before every evaluation and checkpoint
        star_study.refresh_bn_statistics(model, calibration_inputs.to(next(model.parameters()).device))

    def realign_next(epoch: int, row: dict) -> None:
        due["realign"] = True

    name = star_name(params, width, count)
    options = {**({"realign": True} if p.realign else {}), **({"anti": True} if p.anti else {})}  # absent when off: old stars keep their identity
    # calibration_samples refreshes the star's BN statistics before every checkpoint: it changes them
    identity = {"anchors": [run.info["params_hash"] for run in anchors], "t": p.t, "mu": p.mu, "calibration_samples": p.calibration_samples,
                **options}
    info = {"star": {"anchors": [run.name for run in anchors], "t": p.t, "mu": p.mu, "calibration_samples": p.calibration_samples, **options}}
    display = f"star{count} {params.model.arch} w{width} {noise_tag(p.noise)} s{settings.seed}"
    folder = train_run(
        settings, layout, name=name, target=layout.star_dir(name), cell=Cell(width, p.noise, 0), data=data,
        identity_extra=identity, info_extra=info, hooks=TrainingHooks(make_objective, refresh, realign_next if p.realign else None),
        code=(*TRAINING_CODE, __name__), resume=resume,
        display=display,
    )
    return finished(params, layout, folder, track)


def _curve_settings(p: StarParams) -> InterpolationParams:
    """The published protocol: 11 points, endpoints evaluated directly, BN recomputed inside
    (`star.bn: endpoint_ema`: the seed's own moving average from endpoint A's statistics)."""
    return InterpolationParams(points=p.points, bn=p.bn, calibration_samples=p.calibration_samples)


def run_barriers(params: Params, layout: Layout) -> Summary:
    p: StarParams = params.star
    rows, curves = [], []
    settings = _curve_settings(p)
    device = study_device(params)
    for width in p.widths:
        held_out = [read_run(layout.star_source_dir(source_name(params, width, s))) for s in p.held_out]
        stars = {count: read_run(layout.star_dir(star_name(params, width, count))) for count in p.anchor_counts}
        data = load_cell_data(source_params(params, width, params.seed), layout, device)
        pairs = [("star", count, stars[count], h) for count in p.anchor_counts for h in held_out]
        pairs += [("regular", None, a, b) for a, b in itertools.combinations(held_out, 2)]
        for kind, count, run_a, run_b in pairs:
            pair = {"kind": kind, "anchors": count, "width": width, "model_a": run_a.name, "model_b": run_b.name}
            more_curves, more_rows = pair_barriers(
                run_a, run_b, data, settings, match=p.matching, seed=params.seed, device=device, pair=pair, splits=SPLITS,
                sinkhorn_temperature=p.sinkhorn_temperature,
            )
            curves += more_curves
            rows += more_rows
    table = pd.DataFrame(rows)
    tests = star_study.hypothesis_test(
        table[(table["kind"] == "regular") | (table["anchors"] == max(p.anchor_counts))], by=["width", "split", "matching"], value="loss_barrier"
    )
    with layout.building(layout.study_root("star")) as folder:
        atomic_write_parquet(folder / "barriers.parquet", table)
        atomic_write_parquet(folder / "curves.parquet", pd.concat(curves, ignore_index=True))
        atomic_write_parquet(folder / "tests.parquet", tests)
        accuracy = _test_accuracies(params, layout, device)
        atomic_write_parquet(folder / "accuracy.parquet", accuracy)
        summary = Summary(extra={"tests": tests.to_dict("records"), "accuracy": accuracy.to_dict("records")})
        write_summary(folder, summary)
    return summary


def _test_accuracies(params: Params, layout: Layout, device=None) -> pd.DataFrame:
    """The stars' own test accuracy beside the regular (held-out) models' and beside the ensemble
    of the same k anchors (softmax averaged: the starlight seed's baseline)."""
    p: StarParams = params.star
    rows = []
    for width in p.widths:
        data = load_cell_data(source_params(params, width, params.seed), layout, device)
        anchors = []
        for seed in p.anchors:
            run = read_run(layout.star_source_dir(source_name(params, width, seed)))
            anchors.append(model_for_run(run.info, run.final_checkpoint(), device=device))
        for count in p.anchor_counts:
            run = read_run(layout.star_dir(star_name(params, width, count)))
            rows.append({"width": width, "kind": "star", "anchors": count, "model": run.name, "test_acc": run.metrics["test_acc"]})
            x, y = data.test
            rows.append({"width": width, "kind": "ensemble", "anchors": count, "model": f"ensemble of {count} anchors",
                         "test_acc": star_study.ensemble_accuracy(anchors[:count], x, y)})  # fmt: skip
        for seed in p.held_out:
            run = read_run(layout.star_source_dir(source_name(params, width, seed)))
            rows.append({"width": width, "kind": "regular", "anchors": None, "model": run.name, "test_acc": run.metrics["test_acc"]})
    return pd.DataFrame(rows)


def dvc_stages(code: list[str]) -> dict:
    """The study's DVC stages: sources (anchors, held-out) -> stars -> barriers."""
    dvc, arch, noise = IN_DVC_YAML, "${model.arch}", "${star.noise}"
    source_out = dvc.star_source_dir(paths.star_source_name(arch, "${item.width}", noise, "${item.seed}"))
    star_out = dvc.star_dir(paths.star_name(arch, "${item.width}", noise, "${item.count}"))
    inputs = [dvc.splits_dir.as_posix(), dvc.labels_dir(noise).as_posix(), *code]  # split.json stands for the data
    trains_from = [*inputs, dvc.pretrained.as_posix()]  # a `model.pretrained` file the trainings start from
    trained_with = ["data", "noise", "model", "train", "star.noise", "star.epochs", *EXECUTION_PARAMS]
    source = {
        "cmd": "netgeom star source --width ${item.width} --seed ${item.seed} --no-track --quiet",
        "deps": trains_from,
        "params": trained_with,
        "outs": [source_out.as_posix()],
    }
    return {
        "star_anchor": {"matrix": {"width": "${star.widths}", "seed": "${star.anchors}"}, **source},
        "star_held_out": {"matrix": {"width": "${star.widths}", "seed": "${star.held_out}"}, **source},
        "star": {
            "matrix": {"width": "${star.widths}", "count": "${star.anchor_counts}"},
            "cmd": "netgeom star train --width ${item.width} --anchors ${item.count} --no-track --quiet",
            "deps": [source_out.parent.as_posix(), *trains_from],
            "params": ["seed", *trained_with, "star.anchors", "star.t", "star.mu", "star.calibration_samples", "star.realign", "star.anti"],
            "outs": [star_out.as_posix()],
        },
        "star_barriers": {
            "cmd": "netgeom star barriers --quiet",
            "deps": [dvc.star_root.as_posix(), *inputs],
            "params": ["seed", "star", *EXECUTION_PARAMS],
            "outs": [dvc.study_root("star").as_posix()],
        },
    }


def describe(summary: Summary) -> str:
    lines = []
    for row in summary.extra["tests"]:
        if row["split"] == "train":
            lines.append(
                f"star_barriers w{row['width']} ({row['matching']}): star {row['star_mean']:.3g} +- {row['star_std']:.2g} vs regular "
                f"{row['regular_mean']:.3g} +- {row['regular_std']:.2g} (p = {row['p_value']:.3g})"
            )
    return "\n".join(lines)
