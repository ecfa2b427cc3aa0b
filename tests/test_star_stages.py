"""The star study as stages: star training is regular training at t = 0, resumes bit-exactly,
barriers are symmetric, and bad settings are refused in one line (issue 13)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from netgeom.layout import Layout
from netgeom.params import load_params
from netgeom.runs import read_run
from netgeom.training.checkpoints import load_checkpoint
from tests.conftest import crash_at_evaluation, ok, refused, write_params

runner = CliRunner()
STAR = {"widths": [8], "noise": 0.2, "anchors": [100, 101], "held_out": [200, 201], "anchor_counts": [1, 2], "epochs": 3, "points": 5,
        "t": "uniform", "mu": 0.0, "calibration_samples": 256}




@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    import os

    from netgeom.data import get_source

    root = tmp_path_factory.mktemp("star")
    get_source("digits").materialise(root / "data")
    old = os.getcwd()
    os.chdir(root)
    write_params(root, model={"arch": "mlp", "width": 16, "depth": 1, "batch_norm": True},
                 train={"epochs": 3, "checkpoints": {"epochs": [1]}}, star=STAR)
    ok("split"), ok("corrupt")
    for seed in (100, 101, 200, 201):
        ok("star", "source", "--width", "8", "--seed", str(seed))
    yield root
    os.chdir(old)


def test_star_training_with_t_zero_is_regular_training(sources):
    """One anchor, t fixed at 0, mu = 0: the same batches and the same parameter updates as
    `netgeom train`'s loop (BN buffers aside: the star refreshes its own before evaluating)."""
    from netgeom.runs import build_model, load_cell_data
    from netgeom.stages.star import source_params
    from netgeom.studies import star as star_study
    from netgeom.training.loop import TrainingHooks, train

    params = source_params(load_params(sources / "params.yaml"), 8, 7)
    data = load_cell_data(params, Layout(sources))
    anchor = load_checkpoint(read_run(sources / "artifacts/star/sources/mlp_w8-n0.2-s100").final_checkpoint())[0]

    def make_objective(model):
        placed = star_study.anchor_parameters(model, anchor)

        def objective(model, x, y, generator):
            _, t = star_study.draw_anchor_and_t(generator, 1, "constant", constant=0.0)
            return star_study.star_objective(model, dict(model.named_parameters()), placed, t, x, y)

        return objective

    regular, star = build_model(params, data), build_model(params, data)
    train(regular, data, params.train, seed=params.seed, workdir=sources / "w-regular")
    train(star, data, params.train, seed=params.seed, workdir=sources / "w-star", hooks=TrainingHooks(make_objective,
          lambda m: star_study.refresh_bn_statistics(m, data.train.x[:256])))
    for (name, a), (_, b) in zip(regular.named_parameters(), star.named_parameters()):
        assert torch.equal(a, b), name


def test_star_run_is_a_training_run_that_resumes_bit_exactly(sources, monkeypatch):
    from netgeom.stages.star import run_star

    params, layout = load_params(sources / "params.yaml"), Layout(sources)
    ok("star", "train", "--width", "8", "--anchors", "2")
    folder = sources / "artifacts/star/stars/mlp_w8-n0.2-star2"
    reference = load_checkpoint(read_run(folder).final_checkpoint())[0]
    info = read_run(folder).info
    assert info["star"]["anchors"] == ["mlp_w8-n0.2-s100", "mlp_w8-n0.2-s101"] and [e for e, _ in read_run(folder).checkpoints] == [0, 1, 3]

    with crash_at_evaluation(monkeypatch):
        run_star(params, layout, 8, 2, resume=False)
    run_star(params, layout, 8, 2)
    resumed = load_checkpoint(read_run(folder).final_checkpoint())[0]
    assert all(torch.equal(reference[k], v) for k, v in resumed.items())


def test_a_star_with_realigned_anchors_is_its_own_run_and_resumes_bit_exactly(sources, tmp_path, monkeypatch):
    import shutil

    from netgeom.stages.star import run_star

    root = tmp_path / "project"
    shutil.copytree(sources, root, ignore=shutil.ignore_patterns("stars"))
    monkeypatch.chdir(root)
    write_params(root, model={"arch": "mlp", "width": 16, "depth": 1, "batch_norm": True},
                 train={"epochs": 3, "checkpoints": {"epochs": [1]}}, star={**STAR, "realign": True})
    params, layout = load_params(root / "params.yaml"), Layout(root)
    folder = root / "artifacts/star/stars/mlp_w8-n0.2-star2"
    run_star(params, layout, 8, 2)
    realigned = load_checkpoint(read_run(folder).final_checkpoint())[0]
    assert read_run(folder).info["star"]["realign"] is True
    with crash_at_evaluation(monkeypatch):
        run_star(params, layout, 8, 2, resume=False)
    run_star(params, layout, 8, 2)
    assert all(torch.equal(realigned[k], v) for k, v in load_checkpoint(read_run(folder).final_checkpoint())[0].items())
    plain = load_checkpoint(read_run(sources / "artifacts/star/stars/mlp_w8-n0.2-star2").final_checkpoint())[0]
    assert any(not torch.equal(plain[k], realigned[k]) for k in plain)  # the anchors moved, so did the star


def test_an_anti_star_is_its_own_run(sources, tmp_path, monkeypatch):
    """star.anti retrains the star (its identity says so); that it raises the barrier is the
    objective's test in tests/test_star.py."""
    import shutil

    from netgeom.stages.star import run_star

    root = tmp_path / "project"
    shutil.copytree(sources, root, ignore=shutil.ignore_patterns("stars"))
    monkeypatch.chdir(root)
    params = {"model": {"arch": "mlp", "width": 16, "depth": 1, "batch_norm": True}, "train": {"epochs": 3, "checkpoints": {"epochs": [1]}}}
    finals = {}
    for anti in (False, True):
        write_params(root, **params, star={**STAR, "mu": 1.0, "anti": anti})
        run_star(load_params(root / "params.yaml"), Layout(root), 8, 1)
        run = read_run(root / "artifacts/star/stars/mlp_w8-n0.2-star1")
        assert run.info["star"].get("anti", False) is anti
        finals[anti] = load_checkpoint(run.final_checkpoint())[0]
    assert any(not torch.equal(finals[False][k], finals[True][k]) for k in finals[False])


def test_barriers_are_symmetric_and_zero_from_a_model_to_itself(sources):
    from netgeom.runs import load_cell_data, model_for_run
    from netgeom.groups.interpolation import InterpolationParams
    from netgeom.stages.interpolation import barrier_curve
    from netgeom.stages.star import source_params
    from netgeom.studies import curve_summaries as cs
    from netgeom.studies.interpolation import curve_values

    params = source_params(load_params(sources / "params.yaml"), 8, 0)
    data = load_cell_data(params, Layout(sources))
    a, b = (read_run(sources / f"artifacts/star/sources/mlp_w8-n0.2-s{s}") for s in (200, 201))
    model = model_for_run(a.info)
    sa, sb = (load_checkpoint(r.final_checkpoint())[0] for r in (a, b))
    settings = InterpolationParams(points=5, bn="recompute")

    def barrier(x, y):
        t, loss = curve_values(barrier_curve(model, x, y, data, settings), "train", "loss")
        return cs.loss_barrier(t, loss)

    assert barrier(sa, sb) == pytest.approx(barrier(sb, sa), abs=1e-6) and barrier(sa, sb) > 0
    # Interior points get BN statistics recomputed on the calibration subset while the endpoints
    # keep their own, so a model to itself is flat once its statistics are those same ones.
    from netgeom.stages.interpolation import calibration
    from netgeom.studies.interpolation import recalibrate_bn

    own = recalibrate_bn(model, sa, calibration(data, settings))
    assert barrier(own, own) == pytest.approx(0.0, abs=1e-6)


def test_star_barriers_compare_stars_with_held_out_models(sources):
    ok("star", "train", "--width", "8", "--anchors", "1")
    ok("star", "train", "--width", "8", "--anchors", "2")
    out = ok("star", "barriers")
    assert "star_barriers w8 (weights)" in out
    table = pd.read_parquet(sources / "artifacts/studies/star/barriers.parquet")
    stars = table[table["kind"] == "star"]
    assert set(stars["anchors"]) == {1.0, 2.0} and set(stars["model_b"]) == {"mlp_w8-n0.2-s200", "mlp_w8-n0.2-s201"}
    regular = table[table["kind"] == "regular"]
    assert set(zip(regular["model_a"], regular["model_b"])) == {("mlp_w8-n0.2-s200", "mlp_w8-n0.2-s201")}
    assert set(table["split"]) == {"train", "test"} and set(table["matching"]) == {"none", "weights"}
    tests = pd.read_parquet(sources / "artifacts/studies/star/tests.parquet")
    assert (tests["star_n"] == 2).all() and (tests["regular_n"] == 1).all()  # the largest star against each held-out model


def test_a_star_cell_params_yaml_does_not_list_is_refused_naming_the_option(sources):
    before = sorted(p.name for p in (sources / "artifacts" / "star" / "sources").iterdir())
    assert "star.widths" in refused("star", "source", "--width", "32", "--seed", str(STAR["anchors"][0]), key="--width")
    assert "star.held_out" in refused("star", "source", "--width", "8", "--seed", "987654", key="--seed")
    assert "star.widths" in refused("star", "train", "--width", "7", "--anchors", "1", key="--width")
    assert "star.anchor_counts" in refused("star", "train", "--width", "8", "--anchors", "3", key="--anchors")
    assert sorted(p.name for p in (sources / "artifacts" / "star" / "sources").iterdir()) == before


@pytest.mark.parametrize(
    ("star", "key"),
    [
        ({"anchors": []}, "star.anchors"),
        ({"held_out": [200]}, "star.held_out"),
        ({"held_out": [101, 200]}, "star.held_out"),  # a held-out model among the anchors
        ({"t": "gamma"}, "star.t"),
        ({"anchor_counts": [1]}, "star.anchor_counts"),  # must include the number of anchors
        ({"noise": 0.0}, "star.noise"),  # not one of grid.noise: no labels for it
        ({"noise": 0}, "star.noise"),
    ],
)
def test_bad_star_settings_are_one_line_and_write_nothing(sources, star, key):
    write_params(sources, star={**STAR, **star}, model={"arch": "mlp", "width": 16, "depth": 1, "batch_norm": True},
                 train={"epochs": 3, "checkpoints": {"epochs": [1]}})
    try:
        before = sorted(p.name for p in (sources / "artifacts" / "star" / "sources").iterdir())
        refused("star", "source", "--width", "8", "--seed", str(STAR["held_out"][0]), key=key)
        refused("check", key=key)
        assert sorted(p.name for p in (sources / "artifacts" / "star" / "sources").iterdir()) == before
    finally:
        write_params(sources, model={"arch": "mlp", "width": 16, "depth": 1, "batch_norm": True},
                     train={"epochs": 3, "checkpoints": {"epochs": [1]}}, star=STAR)


def test_a_switched_off_star_still_needs_its_noise_level_among_the_grids(sources):
    """dvc.yaml's star stages name artifacts/labels/n<star.noise> even with star.enabled false;
    check says so in one line before DVC fails to prepare them."""
    write_params(sources, star={**STAR, "enabled": False, "noise": 0.0}, model={"arch": "mlp", "width": 16, "depth": 1, "batch_norm": True},
                 train={"epochs": 3, "checkpoints": {"epochs": [1]}})
    try:
        assert "DVC needs them even with star.enabled false" in refused("check", key="star.noise")
    finally:
        write_params(sources, model={"arch": "mlp", "width": 16, "depth": 1, "batch_norm": True},
                     train={"epochs": 3, "checkpoints": {"epochs": [1]}}, star=STAR)
