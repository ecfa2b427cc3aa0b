"""Crashes, corrupt files, malicious files and concurrent writers never corrupt a result.

Each test reproduces one way a result or the MLflow record used to be corrupted while every
command exited 0 (issue 10), and checks the fixed behaviour.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from netgeom.cli import app
from netgeom.errors import NetgeomError
from netgeom.layout import Layout
from netgeom.params import load_params
from netgeom.runs import Cell, read_run
from netgeom.training.checkpoints import load_checkpoint
from tests.conftest import crash_at_evaluation, ok, refused, write_params

runner = CliRunner()
RUN = "mlp_w16-n0.2-r0"




def netgeom(*args, cwd: Path, env: dict | None = None, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "NETGEOM_QUIET": "1", **(env or {})}
    full_env.pop("DVC_ROOT", None)
    done = subprocess.run([sys.executable, "-m", "netgeom", *args], cwd=cwd, env=full_env, capture_output=True, text=True, **kwargs)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture
def prepared(project):
    write_params(project, train={"epochs": 4, "checkpoints": {"epochs": [1, 2, 3]}})
    ok("split"), ok("corrupt")
    return project


RELIABILITY_RECIPE = ({"train": {"epochs": 4, "checkpoints": {"epochs": [1, 2, 3]}}}, [("split",), ("corrupt",), ("train",)])


@pytest.fixture
def trained(trained_projects, tmp_path, monkeypatch):
    """`prepared` with the default cell trained (a fresh copy of the shared trained project)."""
    root = trained_projects.copy(tmp_path / "trained", *RELIABILITY_RECIPE)
    monkeypatch.chdir(root)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return root


def interrupt(*args):
    raise KeyboardInterrupt


def final_weights(root: Path, run: str = RUN) -> dict[str, torch.Tensor]:
    return load_checkpoint(read_run(root / "artifacts" / "runs" / run).final_checkpoint())[0]


# --------------------------------------------------------------------------- 1. identity


def test_run_identity_covers_the_seed_and_each_seed_gets_its_own_mlflow_run(prepared, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    layout = Layout(prepared)
    write_params(prepared, mlflow={"enabled": True, "experiment": "seeds"}, train={"epochs": 2, "checkpoints": {"epochs": [1]}}, seed=42)
    ok("train"), ok("smoothness"), ok("mlflow", "sync")
    info_42 = read_run(layout.run_dir(RUN)).info
    write_params(prepared, mlflow={"enabled": True, "experiment": "seeds"}, train={"epochs": 2, "checkpoints": {"epochs": [1]}}, seed=43)
    ok("train"), ok("smoothness"), ok("mlflow", "sync")
    info_43 = read_run(layout.run_dir(RUN)).info
    assert info_42["run"] == info_43["run"] and info_42["params_hash"] != info_43["params_hash"]

    from netgeom.tracking import runs_table

    runs = runs_table(layout, "seeds").set_index("tags.mlflow.runName")
    assert sorted(runs.index) == ["mlp w16 n0.2 s42", "mlp w16 n0.2 s43"]
    client = mlflow.MlflowClient()
    for name, seed in (("mlp w16 n0.2 s42", "42"), ("mlp w16 n0.2 s43", "43")):
        assert runs.loc[name, "params.seed"] == seed and runs.loc[name, "tags.netgeom.complete"] == "true"
        history = client.get_metric_history(runs.loc[name, "run_id"], "smoothness/jacobian_frobenius.crossentropy.all")
        assert [m.step for m in history] == [2]  # one value per step: never another seed's on top


def test_identity_covers_the_data_content(prepared):
    """Same params, other data files (a replaced dataset): another identity, not a skip."""
    ok("train")
    first = read_run(prepared / "artifacts" / "runs" / RUN).info["params_hash"]
    x = np.load(prepared / "data" / "digits" / "train_x.npy")
    np.save(prepared / "data" / "digits" / "train_x.npy", x[:, :, ::-1].copy())
    ok("split")  # what dvc repro runs first: split.json records the files' digest, which loaders check
    ok("train")
    assert read_run(prepared / "artifacts" / "runs" / RUN).info["params_hash"] != first


def test_a_damaged_finished_run_is_said_and_trained_again(prepared):
    ok("train")
    info = prepared / "artifacts" / "runs" / RUN / "run.json"
    complete = info.read_text()
    info.write_text(complete[: len(complete) // 2])
    out = ok("train")
    assert "run.json: is not a valid JSON file" in out and f"training {RUN} again" in out and "re-create" not in out
    assert json.loads(info.read_text())["params_hash"] == json.loads(complete)["params_hash"]


def test_identity_covers_the_training_code(prepared, monkeypatch):
    """An edit of the code that trains (here: its digest) trains again on a direct `netgeom
    train`, as `dvc repro` would; back on the old code, the old identity and the same weights."""
    import netgeom.code
    from safetensors.torch import load_file

    ok("train")
    folder = prepared / "artifacts" / "runs" / RUN
    last = read_run(folder).checkpoints[-1][1]
    first, weights = read_run(folder).info["params_hash"], load_file(last)
    real = netgeom.code.code_digest
    monkeypatch.setattr(netgeom.code, "code_digest", lambda *modules: "an-edited-training-loop")
    ok("train")
    assert read_run(folder).info["params_hash"] != first
    monkeypatch.setattr(netgeom.code, "code_digest", real)
    ok("train")
    assert read_run(folder).info["params_hash"] == first
    again = load_file(last)
    assert all(torch.equal(weights[k], again[k]) for k in weights)


# --------------------------------------------------------------------------- 3. finalisation


@pytest.mark.parametrize("crash_at", ["assembled", "published_aside"])
def test_a_crash_while_finishing_leaves_a_complete_run_and_the_rerun_completes_it(prepared, monkeypatch, crash_at):
    from netgeom import io
    from netgeom.stages import train as stage

    ok("train")
    before = final_weights(prepared)
    run_dir = prepared / "artifacts" / "runs" / RUN
    ok("train", "--fresh")  # a complete previous run is in place while the next one finishes

    class Crash(Exception):
        pass

    real_replace = os.replace

    def crash_after_moving_the_old_run_aside(src, dst):
        real_replace(src, dst)
        if Path(dst).name.endswith(".replaced"):
            raise Crash

    def crash_after_assembly(*args):
        raise Crash

    with monkeypatch.context() as patch, pytest.raises(Crash):
        if crash_at == "assembled":
            patch.setattr(stage, "_publish", crash_after_assembly)
        else:
            patch.setattr(io.os, "replace", crash_after_moving_the_old_run_aside)
        stage.run_train(load_params(prepared / "params.yaml"), Layout(prepared), Cell(16, 0.2, 0), resume=False)
    if crash_at == "assembled":  # the old complete run is untouched
        assert len(read_run(run_dir).checkpoints) == 5
    else:  # neither run is half there: the old one waits aside, the new one is complete
        assert not run_dir.exists()

    trained = []
    monkeypatch.setattr(stage, "train", lambda *a, **k: trained.append(1))
    ok("train")  # publishes the assembled run without training again
    assert not trained
    run = read_run(run_dir)
    assert [e for e, _ in run.checkpoints] == [0, 1, 2, 3, 4]
    assert all(torch.equal(before[k], v) for k, v in final_weights(prepared).items())
    assert not list((prepared / ".netgeom" / "staging").glob(f"{RUN}*"))


def test_a_rerun_never_calls_a_run_with_missing_checkpoints_finished(prepared, monkeypatch):
    from netgeom.stages import train as stage

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(stage, "_assemble", interrupt)
        stage.run_train(load_params(prepared / "params.yaml"), Layout(prepared), Cell(16, 0.2, 0))
    staging = prepared / ".netgeom" / "staging" / RUN
    (staging / "e0002.safetensors").unlink()
    line = refused("train", key="train")
    assert "[2]" in line and "--fresh" in line
    assert not (prepared / "artifacts" / "runs" / RUN).exists()
    ok("train", "--fresh")
    assert [e for e, _ in read_run(prepared / "artifacts" / "runs" / RUN).checkpoints] == [0, 1, 2, 3, 4]


def test_killed_training_resumes_to_bit_identical_weights(prepared):
    """kill -9 at several moments, resume each time: the same final weights as one clean run."""
    write_params(prepared, train={"epochs": 40, "checkpoints": {"every": 1}})
    netgeom("train", cwd=prepared)
    reference = final_weights(prepared)
    (prepared / "artifacts" / "runs" / RUN).rename(prepared / "reference")
    kills, staging = 0, Layout(prepared).staging_dir(RUN)
    # each kill lands right after the epoch's checkpoint (its JSON lands last), while the resume
    # state may be half-written: at epochs spread over the run, whatever the machine's speed
    for epoch in (5, 15, 25, 35):
        process = subprocess.Popen([sys.executable, "-m", "netgeom", "train", "--quiet"], cwd=prepared,
                                   env={**os.environ, "NETGEOM_QUIET": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not (staging / f"e{epoch:04d}.json").exists() and process.poll() is None:
            time.sleep(0.01)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=600)
    assert kills == 4  # each run resumes at or before its kill, so it meets the next epoch alive
    netgeom("train", cwd=prepared)
    resumed = final_weights(prepared)
    assert all(torch.equal(reference[k], v) for k, v in resumed.items())


# --------------------------------------------------------------------------- 4. resume state


def test_the_resume_state_is_one_file_and_a_torn_one_starts_the_run_over(prepared, monkeypatch):
    from netgeom.stages import train as stage

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(stage, "_assemble", interrupt)
        stage.run_train(load_params(prepared / "params.yaml"), Layout(prepared), Cell(16, 0.2, 0))
    staging = prepared / ".netgeom" / "staging" / RUN
    assert sorted(p.name for p in staging.iterdir() if p.name.startswith("state")) == ["state.safetensors"]
    state = staging / "state.safetensors"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # torn by a full disk
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 0 and "starting this run over from epoch 0" in result.output
    ok("train", "--fresh")
    clean = final_weights(prepared)
    (prepared / "artifacts" / "runs" / RUN / "run.json").unlink()  # force a retrain below
    ok("train")
    assert all(torch.equal(clean[k], v) for k, v in final_weights(prepared).items())


def test_a_resumed_history_keeps_its_columns_in_order(prepared, monkeypatch):
    from netgeom.stages.train import run_train

    ok("train")
    uninterrupted = pd.read_csv(prepared / "artifacts" / "runs" / RUN / "history.csv")
    with crash_at_evaluation(monkeypatch):
        run_train(load_params(prepared / "params.yaml"), Layout(prepared), Cell(16, 0.2, 0), resume=False)
    ok("train")
    resumed = pd.read_csv(prepared / "artifacts" / "runs" / RUN / "history.csv")
    assert list(resumed.columns) == list(uninterrupted.columns)
    pd.testing.assert_frame_equal(resumed.drop(columns="epoch_seconds"), uninterrupted.drop(columns="epoch_seconds"))


# --------------------------------------------------------------------------- 5. malicious data


def _malicious_pickle(path: Path, marker: Path) -> None:
    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"data": Exploit(), "labels": [0]}))


@pytest.mark.parametrize("command", [["data", "info", "cifar10"], ["split"]])
def test_a_malicious_cifar_batch_is_refused_without_running_it(project, command):
    folder = project / "data" / "cifar-10-batches-py"
    marker = project / "pwned"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        _malicious_pickle(folder / name, marker)
    write_params(project, data={"name": "cifar10", "val_size": 0.1})
    result = runner.invoke(app, command)
    if command[0] == "data":  # `data info` only reports presence; loading is where it would run
        assert result.exit_code == 0, result.output
        result = runner.invoke(app, ["split"])
    assert result.exit_code == 2, result.output
    assert "data_batch_1" in result.output and "refused" in result.output
    assert not marker.exists()


# --------------------------------------------------------------------------- 6, 9. MLflow store


def test_a_failed_store_creation_leaves_nothing_behind(project, monkeypatch):
    from mlflow.store.tracking import sqlalchemy_store

    from netgeom import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    layout = Layout(project)

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C during the schema migrations

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(sqlalchemy_store.SqlAlchemyStore, "__init__", interrupted)
        tracking.connect(layout, "x")
    assert not layout.mlflow_db.exists() and not list(layout.mlruns.glob("*.tmp"))
    tracking.connect(layout, "x")  # the next attempt creates a complete store
    assert layout.mlflow_db.exists()


def test_a_corrupt_store_is_one_line_naming_the_file(trained, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_params(trained, mlflow={"enabled": True, "experiment": "x"}, train={"epochs": 4, "checkpoints": {"epochs": [1, 2, 3]}})
    db = trained / "mlruns" / "mlflow.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(3000))
    line = refused("mlflow", "sync", key=str(db))
    assert "not a usable MLflow store" in line


def test_concurrent_first_trainings_and_syncs_make_one_complete_run_each(prepared):
    """Four first trainings started by hand at once create the store and log into it; two syncs
    race on the same runs."""
    write_params(prepared, mlflow={"enabled": True, "experiment": "race"}, train={"epochs": 2, "checkpoints": {"epochs": [1]}},
                 grid={"widths": [4, 8, 16, 32], "noise": [0.2], "seed_offsets": [0]})
    env = {"MLFLOW_TRACKING_URI": ""}
    processes = [
        subprocess.Popen([sys.executable, "-m", "netgeom", "train", "--width", str(w), "--quiet"], cwd=prepared,
                         env={**os.environ, **env, "NETGEOM_QUIET": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for w in (4, 8, 16, 32)
    ]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
    # lose both MLflow runs, then rebuild them from two syncs at once
    mlflow.set_tracking_uri(f"sqlite:///{prepared / 'mlruns' / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("race").experiment_id
    for run in client.search_runs([experiment]):
        client.delete_run(run.info.run_id)
    syncs = [
        subprocess.Popen([sys.executable, "-m", "netgeom", "mlflow", "sync"], cwd=prepared,
                         env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for process in syncs:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
    runs = client.search_runs([experiment])
    assert sorted(r.data.tags["netgeom.run"] for r in runs) == ["mlp_w16-n0.2-r0", "mlp_w32-n0.2-r0", "mlp_w4-n0.2-r0", "mlp_w8-n0.2-r0"]
    assert all(r.data.tags.get("netgeom.complete") == "true" for r in runs)
    models = mlflow.search_logged_models(experiment_ids=[experiment], output_format="list")
    by_run = {}
    for model in models:
        by_run.setdefault(model.source_run_id, []).append(model)
    assert sorted(len(v) for k, v in by_run.items() if k in {r.info.run_id for r in runs}) == [1, 1, 1, 1]  # the final checkpoints


# --------------------------------------------------------------------------- 7. missing checkpoints


def test_missing_checkpoints_are_refused_by_every_reader(trained):
    checkpoints = trained / "artifacts" / "runs" / RUN / "checkpoints"
    (checkpoints / "e0000.safetensors").unlink()
    line = refused("interpolation", key="run")
    assert RUN in line and "[0]" in line
    refused("curve", f"{RUN}@init", RUN, key="run")
    refused("smoothness", key="run")


def test_curve_out_naming_a_folder_is_refused_before_any_work(prepared, tmp_path):
    (tmp_path / "d.csv").mkdir()
    refused("curve", f"{RUN}@init", RUN, "-o", str(tmp_path / "d.csv"), key="out")


def test_curve_at_init_needs_an_epoch_zero_checkpoint(prepared):
    write_params(prepared, train={"epochs": 3, "checkpoints": {"init": False, "epochs": [1]}})
    ok("train")
    refused("curve", f"{RUN}@init", RUN, key="train.checkpoints.init")
    refused("interpolation", key="train.checkpoints.init")


# --------------------------------------------------------------------------- 8. corrupt inputs


CORRUPTIONS = {
    "checkpoints/e0004.json": ("artifacts/runs/" + RUN, ["smoothness"]),
    "run.json": ("artifacts/runs/" + RUN, ["smoothness"]),
    "history.csv": ("artifacts/runs/" + RUN, ["report"]),
    "metrics.json": ("artifacts/runs/" + RUN, ["report"]),
    "labels.parquet": ("artifacts/labels/n0.2", ["train", "--fresh"]),
    "split.json": ("artifacts/splits", ["corrupt"]),
    "checkpoints/e0004.safetensors": ("artifacts/runs/" + RUN, ["smoothness"]),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_a_corrupt_input_file_is_one_line_naming_it(trained, name):
    folder, command = CORRUPTIONS[name]
    path = trained / folder / name
    path.write_bytes(b"\x00garbage{" + path.read_bytes()[:40])
    refused(*command, key=name.split("/")[-1])


def test_a_corrupt_study_summary_stops_the_report_before_it_changes_anything(trained):
    write_params(trained, train=RELIABILITY_RECIPE[0]["train"], grid={"widths": [16], "noise": [0.2], "seed_offsets": [0]})  # the report shows the grid's runs: RUN's
    ok("smoothness"), ok("report")
    before = {p.relative_to(trained): p.read_bytes() for p in (trained / "reports").rglob("*") if p.is_file()}
    summary = trained / "artifacts" / "studies" / "smoothness" / RUN / "summary.json"
    summary.write_text('{"4": {"broken"')
    refused("report", key="summary.json")
    after = {p.relative_to(trained): p.read_bytes() for p in (trained / "reports").rglob("*") if p.is_file()}
    assert after == before


# --------------------------------------------------------------------------- 10. params


@pytest.mark.parametrize(
    ("groups", "key"),
    [
        ({"mlflow": {"enabled": "maybe"}}, "mlflow.enabled"),
        ({"execution": {"threads": 0}}, "execution.threads"),
        ({"colour": 1}, "colour"),
        ({"grid": {"widths": [8, 8], "noise": [0.2], "seed_offsets": [0]}}, "grid.widths"),
        ({"grid": {"widths": [8], "noise": [0.2, 0.2], "seed_offsets": [0]}}, "grid.noise"),
        ({"train": {"lr": float("inf")}}, "train.lr"),
        ({"train": {"lr": float("nan")}}, "train.lr"),
        ({"regions": {"paht": 3}}, "regions.paht"),
        # numpy's and sklearn's generators refuse these with a traceback inside a stage
        ({"seed": -1}, "seed"),
        ({"noise": {"kind": "symmetric", "label": 0.2, "seed": -3}}, "noise.seed"),
        ({"data": {"name": "digits", "split_seed": 2**32}}, "data.split_seed"),
        ({"grid": {"widths": [8], "noise": [0.2], "seed_offsets": [0, -1]}}, "grid.seed_offsets[1]"),
        ({"smoothness": {"sample_seed": -1}}, "smoothness.sample_seed"),
        ({"star": {"widths": [0]}}, "star.widths[0]"),
    ],
)
def test_every_group_is_validated_by_the_check_stage(project, groups, key):
    write_params(project, **groups)
    refused("check", key=key)
    assert not (project / "mlruns").exists() and not (project / "artifacts").exists()


def test_an_empty_params_file_and_a_wrong_data_root(project):
    (project / "params.yaml").write_text("")
    refused("split", key="params")
    write_params(project, data={"name": "digits", "root": "elsewhere"})
    line = refused("split", key="data.root")
    assert "elsewhere" in line


# --------------------------------------------------------------------------- 11. smaller


def test_outputs_follow_the_umask(trained):
    umask = os.umask(0)
    os.umask(umask)
    for path in (trained / "artifacts" / "runs" / RUN).rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_training_that_ends_at_chance_level_warns(prepared):
    write_params(prepared, train={"epochs": 2, "lr": 1e6, "checkpoints": {"epochs": [1]}, "stop_loss": None})
    result = runner.invoke(app, ["train"])
    if result.exit_code == 2:  # a diverging loss is refused earlier, naming the last checkpoint
        assert "last good checkpoint" in result.output
        return
    assert "ended at chance level" in result.output
    assert json.loads((prepared / "artifacts" / "runs" / RUN / "metrics.json").read_text())["at_chance"] is True


def test_label_noise_refuses_out_of_range_labels_and_single_classes():
    from netgeom.data.noise import corrupt_labels

    with pytest.raises(NetgeomError, match="labels: 1 labels lie outside 0..2"):
        corrupt_labels(np.array([0, 1, 3]), "symmetric", 0.5, 3, 0)
    with pytest.raises(NetgeomError, match="noise.kind: symmetric noise"):
        corrupt_labels(np.zeros(4, dtype=np.int64), "symmetric", 0.5, 1, 0)
