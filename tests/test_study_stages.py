"""Study stages on a tiny trained project: shard invariance, clean/noisy summaries, reports, and
bad input as one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import ok, refused, write_params

runner = CliRunner()




STUDY_RECIPE = (
    {"train": {"epochs": 3, "checkpoints": {"epochs": [1]}}, "grid": {"widths": [8], "noise": [0.2], "seed_offsets": [0, 1]}},
    [("split",), ("corrupt", "--noise", "0.2"), ("train", "--width", "8", "--noise", "0.2"),
     ("train", "--width", "8", "--noise", "0.2", "--replicate", "1")],
)


@pytest.fixture(scope="module")
def trained(trained_projects, tmp_path_factory):
    """Two trained replicates of one cell; the module's tests run their studies in it in turn."""
    root = trained_projects.copy(tmp_path_factory.mktemp("studies") / "project", *STUDY_RECIPE)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        yield root


def test_smoothness_merged_shards_equal_the_unsharded_result(trained):
    folder = trained / "artifacts" / "studies" / "smoothness" / "mlp_w8-n0.2-r0"
    ok("smoothness", "--width", "8", "--noise", "0.2")
    whole = pd.read_parquet(folder / "shard-000-of-001.parquet")
    summary = json.loads((folder / "summary.json").read_text())
    for i in range(3):
        out = ok("smoothness", "--width", "8", "--noise", "0.2", "--shard", f"{i}/3")
    assert "checkpoints" in out  # the last shard completes the summary
    parts = pd.concat([pd.read_parquet(folder / f"shard-{i:03d}-of-003.parquet") for i in range(3)], ignore_index=True)
    pd.testing.assert_frame_equal(whole, parts)
    assert json.loads((folder / "summary.json").read_text()) == summary
    final = summary["3"]
    assert final["samples"] == 64 and 0 < final["noisy"] < 64
    frob = final["jacobian_frobenius.crossentropy"]
    # the mean over all samples is the sample-weighted mean of the clean and noisy means
    n, k = final["samples"], final["noisy"]
    assert frob["all"] == pytest.approx(((n - k) * frob["clean"] + k * frob["noisy"]) / n)
    assert set(whole.columns) >= {"sample_id", "label", "clean_label", "is_noisy", "epoch", "jacobian_operator.logits"}
    # what the rows were computed with, beside them in every shard and in the summary
    meta = whole.attrs["netgeom"]
    assert meta == parts.attrs["netgeom"] == summary["metadata"]
    info = json.loads((trained / "artifacts" / "runs" / "mlp_w8-n0.2-r0" / "run.json").read_text())
    assert (meta["run"], meta["seed"], meta["model"], meta["data"]) == (info["name"], info["seed"], info["params"]["model"], info["dataset"])
    assert meta["noise"]["label"] == 0.2 and meta["noise"]["seed"] == info["params"]["noise"]["seed"] and meta["split"] == "train"
    assert [m["metric"] for m in meta["measures"]] == ["jacobian_frobenius", "jacobian_operator"] and meta["volume"]["strategy"] == "none"
    assert "tangent" not in meta  # no tangent measure here


def test_tangent_measures_say_their_divisor_and_what_jitter_does_on_grey_images(trained):
    folder = trained / "artifacts" / "studies" / "smoothness" / "mlp_w8-n0.2-r0"
    for step in (0.1, "distance"):
        write_params(trained, **STUDY_RECIPE[0], smoothness={"samples": 8, "checkpoints": "final", "tangent_step": step,
                                                              "measures": [{"metric": "tangent_jacobian", "normalization": "logits"}]})
        ok("smoothness", "--width", "8", "--noise", "0.2")
        tangent = json.loads((folder / "summary.json").read_text())["metadata"]["tangent"]
        assert tangent["divisor"] == step and tangent["saturation"].startswith("identity on 1-channel")
    write_params(trained, **STUDY_RECIPE[0])


def test_regions_shards_and_summary(trained):
    folder = trained / "artifacts" / "studies" / "regions" / "mlp_w8-n0.2-r0"
    ok("regions", "--width", "8", "--noise", "0.2")
    whole = pd.read_parquet(folder / "shard-000-of-001.parquet")
    for i in range(2):
        ok("regions", "--width", "8", "--noise", "0.2", "--shard", f"{i}/2")
    parts = pd.concat([pd.read_parquet(folder / f"shard-{i:03d}-of-002.parquet") for i in range(2)], ignore_index=True)
    pd.testing.assert_frame_equal(whole, parts)
    assert len(whole) == 8 and (whole["regions"] >= 8).all()  # >= one region per segment of 8
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["3"]["regions"]["all"] == pytest.approx(whole["regions"].mean())
    assert "absolute_deviation_0" in summary["per_logit"]["3"]


def test_interpolation_curves_do_not_depend_on_the_points_per_pass(trained):
    """interpolation.points_per_pass stacks several t in one vmapped pass: the same curves as the loop."""
    folder = trained / "artifacts" / "studies" / "interpolation" / "mlp_w8-n0.2-r0"
    curves = {}
    for per_pass in (1, 4):
        write_params(trained, **STUDY_RECIPE[0], interpolation={"points": 9, "points_per_pass": per_pass, "gauss_samples": 0,
                                                                 "random_inits": 1, "landscape": {"resolution": 3}})
        ok("interpolation", "--width", "8", "--noise", "0.2")
        curves[per_pass] = pd.read_parquet(folder / "curves.parquet")
    write_params(trained, **STUDY_RECIPE[0])
    assert len(curves[1]) == 9 * 3 + 9  # init -> final on three splits, one random init on train
    pd.testing.assert_frame_equal(curves[4], curves[1], rtol=1e-5, atol=1e-6)


def test_interpolation_barriers_and_report(trained):
    """The report on what this test runs itself (each test of the module may run alone)."""
    ok("smoothness", "--width", "8", "--noise", "0.2")
    ok("regions", "--width", "8", "--noise", "0.2")
    ok("interpolation", "--width", "8", "--noise", "0.2")
    ok("interpolation", "--width", "8", "--noise", "0.2", "--replicate", "1")
    folder = trained / "artifacts" / "studies" / "interpolation" / "mlp_w8-n0.2-r0"
    curves = pd.read_parquet(folder / "curves.parquet")
    run_metrics = json.loads((trained / "artifacts" / "runs" / "mlp_w8-n0.2-r0" / "metrics.json").read_text())
    end = curves[(curves["curve"] == "init-final") & (curves["split"] == "test")].sort_values("t").iloc[-1]
    assert end["loss"] == pytest.approx(run_metrics["test_loss"], rel=1e-5)  # t = 1 is the trained model
    final = json.loads((folder / "summary.json").read_text())["3"]  # the last epoch
    assert final["final_loss.test"]["all"] == end["loss"]  # what the MLI convergence filter reads
    out = ok("barriers")
    table = pd.read_parquet(trained / "artifacts" / "studies" / "barriers" / "barriers.parquet")
    assert set(table["matching"]) == {"none", "weights"} and (table["loss_barrier"] >= 0).all()
    assert "mean train loss barrier" in out
    ok("report")
    names = {p.name for p in (trained / "reports" / "figures").iterdir()}
    assert {"smoothness_vs_width.png", "regions_vs_width.png", "mli_curves.png", "barriers.png", "landscape.png"} <= names


def test_cold_sinkhorn_barriers_equal_the_weight_matching_ones(trained):
    """At a temperature near 0 each Sinkhorn assignment is the exact one, so the coordinate ascent
    takes the same steps as weight matching: the same permuted model and the same barriers."""
    import yaml

    params_file = trained / "params.yaml"
    before = params_file.read_text()
    params = yaml.safe_load(before)
    params.setdefault("barriers", {})["sinkhorn_temperature"] = 0.001
    try:
        params_file.write_text(yaml.safe_dump(params))
        ok("barriers")
        table = pd.read_parquet(trained / "artifacts" / "studies" / "barriers" / "barriers.parquet")
        assert set(table["matching"]) == {"none", "weights", "sinkhorn"}
        by = table.set_index(["run_a", "run_b", "split", "matching"])["loss_barrier"].unstack("matching")
        pd.testing.assert_series_equal(by["sinkhorn"], by["weights"], check_names=False, rtol=1e-9)
        params["barriers"]["sinkhorn_temperature"] = 0
        params_file.write_text(yaml.safe_dump(params))
        refused("barriers", key="barriers.sinkhorn_temperature")
    finally:
        params_file.write_text(before)


@pytest.mark.parametrize(
    ("groups", "command", "key"),
    [
        ({"smoothness": {"measures": [{"metric": "hessian"}]}}, ["smoothness"], "smoothness.measures[0].metric"),
        ({"smoothness": {"measures": [{"metric": "jacobian_frobenius", "normalization": "probit"}]}}, ["smoothness"], "normalization"),
        ({"smoothness": {"measures": [{"metric": "crossentropy", "normalization": "target_logit"}]}}, ["smoothness"], "target_logit"),
        ({"smoothness": {"checkpoints": [2]}}, ["smoothness"], "checkpoints"),
        ({"regions": {"anchors": 1}}, ["regions"], "regions.anchors"),
        ({"regions": {"radius": 8}}, ["regions"], "regions.radius"),
        ({"interpolation": {"points": 1}}, ["interpolation"], "interpolation.points"),
        ({"interpolation": {"bn": "average"}}, ["interpolation"], "interpolation.bn"),
    ],
)
def test_bad_study_input_is_one_line_exit_2(trained, groups, command, key):
    write_params(trained, train={"epochs": 3, "checkpoints": {"epochs": [1]}}, **groups)
    try:
        refused(*command, "--width", "8", "--noise", "0.2", key=key)
    finally:
        write_params(trained, train={"epochs": 3, "checkpoints": {"epochs": [1]}}, grid={"widths": [8], "noise": [0.2], "seed_offsets": [0, 1]})


@pytest.mark.parametrize("spec", ["3/3", "x", "1/0", "0/99999999999999999999"])
@pytest.mark.parametrize("study", ["smoothness", "regions"])
def test_a_bad_shard_spec_is_refused_and_leaves_the_results_there_alone(trained, study, spec):
    ok(study, "--width", "8", "--noise", "0.2")
    folder = trained / "artifacts" / "studies" / study / "mlp_w8-n0.2-r0"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    refused(study, "--width", "8", "--noise", "0.2", "--shard", spec, key="shard")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the refusal used to clear the folder first


def test_missing_run_or_checkpoint(trained):
    refused("smoothness", "--width", "16", "--noise", "0.2", key="run")
    ckpt = trained / "artifacts" / "runs" / "mlp_w8-n0.2-r1" / "checkpoints"
    for path in ckpt.iterdir():
        path.unlink()
    refused("regions", "--width", "8", "--noise", "0.2", "--replicate", "1", key="checkpoint")


def test_shards_over_a_process_pool_equal_the_sequential_result(trained):
    from netgeom.layout import Layout
    from netgeom.params import load_params
    from netgeom.runs import Cell
    from netgeom.groups.smoothness import SmoothnessParams
    from netgeom.stages.smoothness import run as run_smoothness

    params = load_params(trained / "params.yaml")
    folder = trained / "artifacts" / "studies" / "smoothness" / "mlp_w8-n0.2-r0"
    sequential = params.model_copy(update={"smoothness": SmoothnessParams(checkpoints="final", samples=64, shards=2)})
    run_smoothness(sequential, Layout(trained), Cell(8, 0.2, 0))
    first = [pd.read_parquet(folder / f"shard-{i:03d}-of-002.parquet") for i in range(2)]
    pooled = sequential.model_copy(update={"execution": sequential.execution.model_copy(update={"workers": 2})})
    run_smoothness(pooled, Layout(trained), Cell(8, 0.2, 0))
    for i in range(2):
        pd.testing.assert_frame_equal(first[i], pd.read_parquet(folder / f"shard-{i:03d}-of-002.parquet"))


def _unit_threads(index: int) -> tuple[int, int]:
    return index, torch.get_num_threads()


def test_a_pool_worker_computes_with_the_callers_thread_count():
    """The thread count splits a matmul's sums: a worker on its own default would change the
    numbers with execution.workers."""
    from netgeom.execution import run_units

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert run_units(_unit_threads, [(0,), (1,), (2,)], workers=2) == [(0, 2), (1, 2), (2, 2)]
        torch.set_num_threads(1)
        assert run_units(_unit_threads, [(0,), (1,)], workers=2) == [(0, 1), (1, 1)]
    finally:
        torch.set_num_threads(before)


def test_adhoc_curve_between_two_runs(trained):
    """Endpoints are each run's own final losses; matching keeps them; bad pairs are refused."""
    ok("train", "--width", "8", "--noise", "0.2", "--replicate", "2")  # r1 loses its checkpoints in another test
    out = trained / "curve.csv"
    text = ok("curve", "mlp_w8-n0.2-r0", "mlp_w8-n0.2-r2@final", "--points", "5", "--match", "--out", str(out))
    assert "train: loss_barrier=" in text
    curve = pd.read_csv(out)
    assert sorted(curve["t"].unique()) == [0.0, 0.25, 0.5, 0.75, 1.0]
    for t, replicate in ((0.0, 0), (1.0, 2)):
        metrics = json.loads((trained / "artifacts" / "runs" / f"mlp_w8-n0.2-r{replicate}" / "metrics.json").read_text())
        at = curve[curve["t"] == t].set_index("split")
        assert at.loc["train", "loss"] == pytest.approx(metrics["train_loss"], abs=1e-5)
        assert at.loc["test", "accuracy"] == pytest.approx(metrics["test_acc"], abs=1e-6)
    early = ok("curve", "mlp_w8-n0.2-r0@init", "mlp_w8-n0.2-r0@1", "--points", "3")
    assert "distance=" in early

    ok("train", "--width", "4", "--noise", "0.2")
    refused("curve", "mlp_w8-n0.2-r0", "mlp_w4-n0.2-r0", key="interpolation.models")
    refused("curve", "mlp_w8-n0.2-r0", "mlp_w8-n0.2-r2", "--points", "1", key="--points")  # the option's fault, not params.yaml's
    assert "recompute_ema" in refused("curve", "mlp_w8-n0.2-r0", "mlp_w8-n0.2-r2", "--bn", "average", key="--bn")
    refused("curve", "mlp_w8-n0.2-r0", "mlp_w8-n0.2-r2@7", key="checkpoint")
    refused("curve", "mlp_w8-n0.2-r0", "mlp_w8-n0.2-r2", "--out", str(trained / "curve.txt"), key="out")
    assert not (trained / "curve.txt").exists()


def test_hyperplanes_stage_tracks_every_layer_at_every_checkpoint(trained):
    out = ok("hyperplanes", "--width", "8", "--noise", "0.2")
    assert out.startswith("mlp_w8-n0.2-r0 hyperplanes: mass")
    folder = trained / "artifacts" / "studies" / "hyperplanes" / "mlp_w8-n0.2-r0"
    layers = pd.read_parquet(folder / "layers.parquet")
    assert sorted(layers["epoch"].unique()) == [0, 1, 3]  # every saved checkpoint
    assert list(layers[layers["epoch"] == 0]["layer"]) == ["1", "3"]  # the two linear layers of the MLP
    at_init = layers[layers["epoch"] == 0]
    assert (at_init["distance_fro"] == 0).all()  # distances are from the init itself
    summary = json.loads((folder / "summary.json").read_text())
    network = pd.read_parquet(folder / "network.parquet").set_index("epoch")
    assert summary["3"]["mass"]["all"] == pytest.approx(network.loc[3, "mass"])
    projections = pd.read_parquet(folder / "projections.parquet")
    assert sorted(projections["epoch"].unique()) == [0, 1, 3] and len(projections) == 3 * (8 + 10)  # filters: 8 hidden + 10 out
    # every checkpoint's filters give that checkpoint's per-layer mean and mass
    for (epoch, layer), rows in projections.groupby(["epoch", "layer"]):
        stats = layers[(layers["epoch"] == epoch) & (layers["layer"] == layer)].iloc[0]
        assert rows["normalised"].mean() == pytest.approx(stats["mean"]) and (rows["raw"] <= 0).mean() == pytest.approx(stats["mass"])


@pytest.mark.parametrize(
    ("groups", "key"),
    [
        ({"hyperplanes": {"with_linear": False}}, "hyperplanes.with_linear"),  # an MLP has no conv layer
        ({"hyperplanes": {"with_linear": True, "checkpoints": [2]}}, "hyperplanes.checkpoints"),
        ({"reinit": {"layers": ["features.9"]}}, "reinit.layers"),
        ({"reinit": {"epochs": [2]}}, "reinit.epochs"),
    ],
)
def test_bad_hyperplane_and_reinit_input_writes_nothing(trained, groups, key):
    study = next(iter(groups))
    write_params(trained, train={"epochs": 3, "checkpoints": {"epochs": [1]}}, **groups)
    try:
        ok("train", "--width", "8", "--noise", "0.2", "--replicate", "3")
        refused(study, "--width", "8", "--noise", "0.2", "--replicate", "3", key=key)
        assert not (trained / "artifacts" / "studies" / study / "mlp_w8-n0.2-r3").exists()
    finally:
        write_params(trained, train={"epochs": 3, "checkpoints": {"epochs": [1]}}, grid={"widths": [8], "noise": [0.2], "seed_offsets": [0, 1]})


def test_reinit_stage_resets_each_layer_to_each_checkpoint_and_a_fresh_draw(trained):
    write_params(trained, train={"epochs": 3, "checkpoints": {"epochs": [1]}}, reinit={"split": "train"})
    try:
        out = ok("reinit", "--width", "8", "--noise", "0.2")
    finally:
        write_params(trained, train={"epochs": 3, "checkpoints": {"epochs": [1]}}, grid={"widths": [8], "noise": [0.2], "seed_offsets": [0, 1]})
    assert "largest relative accuracy drop" in out
    table = pd.read_parquet(trained / "artifacts" / "studies" / "reinit" / "mlp_w8-n0.2-r0" / "reinit.parquet")
    assert set(table["group"]) == {"all", "clean", "noisy"}
    everyone = table[table["group"] == "all"]
    assert sorted(everyone["checkpoint"].unique()) == ["0", "1", "rand"] and set(everyone["layer"]) == {"1", "3"}
    metrics = json.loads((trained / "artifacts" / "runs" / "mlp_w8-n0.2-r0" / "metrics.json").read_text())
    assert everyone["trained_accuracy"].iloc[0] == pytest.approx(metrics["train_acc"], abs=1e-6)
    clean = table[table["group"] == "clean"]["trained_accuracy"].iloc[0]
    assert clean == pytest.approx(metrics["train_acc_clean"], abs=1e-6)


def _read_categories(opened: list[str], root: Path) -> set[str]:
    """What a stage read of the pipeline's inputs, from the files it opened: the raw data, the
    label files, the split, the training runs."""
    found = set()
    for path in opened:
        try:
            rel = Path(path).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            continue
        for prefix, category in (("data/", "data"), ("artifacts/labels/", "labels"), ("artifacts/splits/", "splits"), ("artifacts/runs/", "runs"), ("inits/", "inits")):
            if rel.startswith(prefix):
                found.add(category)
    return found


@pytest.mark.parametrize("study", ["smoothness", "regions", "interpolation", "hyperplanes", "reinit", "barriers"])
def test_a_stage_reads_only_the_inputs_its_registry_entry_declares(trained, study):
    """The registry's `reads` and `data` become the stage's DVC dependencies: a stage that reads
    data or labels its entry does not declare would not rerun when they change. The files it
    opens (an audit hook) must be declared."""
    import shutil

    from netgeom.stages.registry import STUDIES
    from tests.test_security import opened_files

    entry = next(e for e in STUDIES if e.name == study)
    shutil.rmtree(trained / "artifacts" / "studies" / study, ignore_errors=True)
    args = [study] if entry.scope == "grid" else [study, "--width", "8", "--noise", "0.2"]
    if entry.scope == "grid":  # both replicates whole (other tests here damage the second one)
        ok("train", "--width", "8", "--noise", "0.2", "--replicate", "1", "--fresh")
    with opened_files() as opened:
        ok(*args)
    used = _read_categories(opened, trained)
    declared = set(entry.reads) | ({"data"} if entry.data else set()) | ({"runs"} if entry.scope == "run" else set())
    assert used <= declared, f"{study} reads {sorted(used - declared)} without declaring it in stages/registry.py"
    assert used, "the audit saw no input at all: the check would be vacuous"


def test_reinit_inits_from_files_and_what_it_refuses(trained):
    """`reinit.inits_from`: weight files (or a .txt list of them) under inits/ as reset sources,
    read without running code; a missing file, a pickle with code, another architecture's weights
    and a file outside inits/ (no DVC dependency would see it change) are one line naming the
    setting."""
    import pickle
    import shutil

    from safetensors.torch import save_file

    from netgeom.runs import load_state, read_run

    run = read_run(trained / "artifacts" / "runs" / "mlp_w8-n0.2-r0")
    inits = trained / "inits"
    inits.mkdir(exist_ok=True)
    save_file(load_state(dict(run.checkpoints)[1]), str(inits / "snap_a.safetensors"))
    (inits / "list.txt").write_text("# snapshots\ninits/snap_a.safetensors\n\n")
    base = {"train": {"epochs": 3, "checkpoints": {"epochs": [1]}}, "grid": {"widths": [8], "noise": [0.2], "seed_offsets": [0, 1]}}
    try:
        write_params(trained, **base, reinit={"inits_from": ["inits/list.txt"], "rand": False})
        shutil.rmtree(trained / "artifacts" / "studies" / "reinit", ignore_errors=True)
        ok("reinit", "--width", "8", "--noise", "0.2")
        table = pd.read_parquet(trained / "artifacts" / "studies" / "reinit" / "mlp_w8-n0.2-r0" / "reinit.parquet")
        both = table[table["group"] == "all"]
        from_file, epoch1 = (both[both["checkpoint"] == c].reset_index(drop=True) for c in ("file:snap_a", "1"))
        assert len(from_file) and from_file["accuracy"].equals(epoch1["accuracy"])
        (inits / "code.pt").write_bytes(pickle.dumps(print))
        other = {"w": __import__("torch").zeros(3)}
        save_file(other, str(inits / "other.safetensors"))
        shutil.copy(inits / "snap_a.safetensors", trained / "outside.safetensors")
        (inits / "escapes.txt").write_text("outside.safetensors\n")
        for name, said in (("inits/missing.safetensors", "no such file"), ("inits/code.pt", "could run code"), ("inits/other.safetensors", "does not fit"),
                           ("outside.safetensors", "not under inits/"), ("inits/../outside.safetensors", "not under inits/"),
                           ("inits/escapes.txt", "not under inits/")):
            write_params(trained, **base, reinit={"inits_from": [name]})
            assert said in refused("reinit", "--width", "8", "--noise", "0.2", key="reinit.inits_from")
            if said in ("no such file", "not under inits/"):  # told from the path alone: `check`, before any training
                assert said in refused("check", key="reinit.inits_from")
    finally:
        write_params(trained, **base)


def test_the_mli_grid_sweeps_depths_and_learning_rates_and_groups_by_them(trained):
    """A list in mli.depth or an optimizer's mli.lr adds that axis: every combination trains once,
    each is the run a single-valued grid of its settings gives, and the groups name the axes."""
    base = {"width": 16, "seeds": [0], "epochs": 2, "points": 5, "optimizers": ["sgd"], "batch_norm": [False]}
    root = trained / "artifacts" / "studies" / "mli"
    write_params(trained, **STUDY_RECIPE[0], mli={**base, "depth": [1, 2], "lr": {"sgd": [0.1, 0.02]}})
    out = ok("mli")
    runs, fractions = pd.read_parquet(root / "runs.parquet"), pd.read_parquet(root / "fractions.parquet")
    assert sorted(zip(runs["depth"], runs["lr"])) == [(1, 0.02), (1, 0.1), (2, 0.02), (2, 0.1)]
    assert sorted(fractions["group_key"]) == ["d1_sgd_lr0.02", "d1_sgd_lr0.1", "d2_sgd_lr0.02", "d2_sgd_lr0.1"]
    assert (fractions["n_runs"] == 1).all() and "depth 2, SGD lr 0.02" in out
    write_params(trained, **STUDY_RECIPE[0], mli={**base, "depth": 2, "lr": {"sgd": 0.02}})
    ok("mli")
    single = pd.read_parquet(root / "runs.parquet")
    assert list(single["group_key"]) == ["sgd"]  # one value per axis: the default preset's keys
    swept = runs[(runs["depth"] == 2) & (runs["lr"] == 0.02)].iloc[0]
    for column in ("delta", "final_train_loss", "normalised_distance"):
        assert single[column].iloc[0] == swept[column], column  # the same run, bit for bit
    write_params(trained, **STUDY_RECIPE[0])


def test_the_mli_autoencoder_is_trained_on_its_reconstruction_error(trained):
    """mli.objective: reconstruction: the curve's loss is the mean squared reconstruction error
    (at t = 0 that of the seeded fresh autoencoder, computed here by hand), it has no accuracy,
    and training lowers the error."""
    import torch

    from netgeom.models.autoencoder import build_mlp_autoencoder
    from netgeom.params import load_params
    from netgeom.stages.mli import _clean_bundle
    from netgeom.layout import Layout

    mli = {"objective": "reconstruction", "autoencoder": [32, 8], "seeds": [3], "epochs": 3, "points": 5, "optimizers": ["adam"],
           "lr": {"adam": 0.01}, "batch_norm": [False]}
    write_params(trained, **STUDY_RECIPE[0], mli=mli)
    ok("mli")
    root = trained / "artifacts" / "studies" / "mli"
    runs, curves = pd.read_parquet(root / "runs.parquet"), pd.read_parquet(root / "curves.parquet")
    assert list(runs["arch"]) == ["mlp_autoencoder"] and runs["depth"].isna().all()
    data = _clean_bundle(load_params(trained / "params.yaml"), Layout(trained))
    torch.manual_seed(3)
    fresh = build_mlp_autoencoder(data.info.input_shape, (32, 8)).eval()
    with torch.no_grad():
        by_hand = (fresh(data.train.x) - data.train.x).pow(2).flatten(1).mean(1).mean().item()
    start = curves[curves["t"] == 0.0].iloc[0]
    assert start["loss"] == pytest.approx(by_hand, rel=1e-5) and curves["accuracy"].isna().all()
    assert 0 < runs["final_train_loss"].iloc[0] < by_hand and runs["final_train_acc"].isna().all()
    write_params(trained, **STUDY_RECIPE[0])


def test_the_report_shows_the_grid_params_yaml_names_now(trained_projects, tmp_path, monkeypatch):
    """A run folder of an earlier grid (DVC keeps a dropped stage's outputs) sat in every table and
    figure; a grid run not trained yet was silently absent; one whose settings changed since it
    trained was reported under today's settings."""
    recipe = ({"train": {"epochs": 2, "checkpoints": {"epochs": [1]}}, "grid": {"widths": [8, 16], "noise": [0.2], "seed_offsets": [0]}},
              [("split",), ("corrupt",), ("train", "--width", "8"), ("train", "--width", "16")])
    root = trained_projects.copy(tmp_path / "project", *recipe)
    monkeypatch.chdir(root)
    runs_csv = root / "reports" / "tables" / "runs.csv"

    def reported(**grid) -> tuple[list[str], str]:
        write_params(root, train=recipe[0]["train"], grid={"noise": [0.2], "seed_offsets": [0], **grid})
        out = ok("report")
        return sorted(pd.read_csv(runs_csv)["run"]), out

    names, out = reported(widths=[8, 16])
    assert names == ["mlp_w16-n0.2-r0", "mlp_w8-n0.2-r0"] and "left out" not in out and "not trained" not in out
    names, out = reported(widths=[8])
    assert names == ["mlp_w8-n0.2-r0"]
    assert "report: left out 1 run (mlp_w16-n0.2-r0): run folders outside grid.widths x grid.noise x grid.seed_offsets" in out
    names, out = reported(widths=[8, 16, 32])
    assert names == ["mlp_w16-n0.2-r0", "mlp_w8-n0.2-r0"]
    assert "report: 1 run (mlp_w32-n0.2-r0) of the grid is not trained yet; the report shows the other 2" in out
    ok("smoothness", "--width", "8")
    write_params(root, train=recipe[0]["train"], grid={"widths": [32], "noise": [0.2], "seed_offsets": [0]})
    assert "the report shows the other 0" in ok("report")  # study results of no grid run: none shown (was a missing-columns error)
    write_params(root, train={**recipe[0]["train"], "lr": 0.01}, grid=recipe[0]["grid"])
    assert "mlp_w16-n0.2-r0 was trained with train.lr 0.003, params.yaml now gives 0.01" in refused("report", key="run")
