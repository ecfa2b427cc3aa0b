"""MLflow tracking into a temporary SQLite store: one run per training, a model per checkpoint."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from netgeom.cli import app
from netgeom.layout import Layout
from netgeom.stages.sync import sync_runs
from netgeom.tracking import logged_models, runs_table, tracking_uri
from tests.conftest import write_params


@pytest.fixture
def tracked(project, monkeypatch):
    return train_tracked(project, monkeypatch)


def train_tracked(project, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_params(project, mlflow={"enabled": True, "experiment": "test", "log_models": "all"}, train={"epochs": 2, "checkpoints": {"epochs": [1]}})
    runner = CliRunner()
    for command in (["split"], ["corrupt"], ["train"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, result.output
    return project


def test_one_run_with_params_metrics_and_a_model_per_checkpoint(tracked):
    layout = Layout(tracked)
    assert tracking_uri(layout) == f"sqlite:///{tracked / 'mlruns' / 'mlflow.db'}"
    runs = runs_table(layout, "test")
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["params.model.arch"] == "mlp" and run["params.train.epochs"] == "2"
    assert run["tags.netgeom.run"] == "mlp_w16-n0.2-r0" and len(run["tags.git.commit"]) > 0
    history = mlflow.MlflowClient().get_metric_history(run["run_id"], "Eval/test_acc")
    assert [m.step for m in history] == [0, 1, 2]
    assert run["tags.mlflow.runName"] == "mlp w16 n0.2 s1"
    models = sorted(logged_models(layout, "test"), key=lambda m: m.name)
    assert [m.name for m in models] == ["mlp_w16-n0_2-r0-s1-e0000", "mlp_w16-n0_2-r0-s1-e0001", "mlp_w16-n0_2-r0-s1-e0002"]
    assert models[0].params["width"] == "16" and models[0].params["seed"] == "1"
    assert all(m.source_run_id == run["run_id"] for m in models)
    # the logged model is the checkpoint: same outputs as the weights on disk
    from netgeom.runs import model_for_run, read_run

    folder = tracked / "artifacts" / "runs" / "mlp_w16-n0.2-r0"
    final = read_run(folder).checkpoints[-1][1]
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    loaded = mlflow.pytorch.load_model(models[-1].model_uri)
    import torch

    expected = model_for_run(read_run(folder).info, final)(torch.from_numpy(x))
    assert torch.allclose(loaded(torch.from_numpy(x)), expected, atol=1e-6)


def test_sync_is_idempotent_and_rebuilds_a_lost_store(tracked):
    from netgeom.params import load_params

    layout, params = Layout(tracked), load_params(tracked / "params.yaml")
    first = sync_runs(params, layout)
    assert sync_runs(params, layout) == first and len(runs_table(layout, "test")) == 1
    # a run lost from the store (deleted, or never logged because DVC restored the stage from
    # its run cache) is rebuilt from the DVC outputs
    mlflow.MlflowClient().delete_run(first[0])
    rebuilt = sync_runs(params, layout)
    assert len(rebuilt) == 1 and rebuilt != first
    assert len(runs_table(layout, "test")) == 1
    elsewhere = params.model_copy(update={"mlflow": params.mlflow.model_copy(update={"experiment": "fresh"})})
    sync_runs(elsewhere, layout)
    assert len(runs_table(layout, "fresh")) == 1 and len(logged_models(layout, "fresh")) == 3


@pytest.mark.parametrize("lose", ["run.json", "checkpoint", "model"])
def test_sync_relogs_a_complete_run_whose_files_left_the_artifact_store(tracked, lose, capsys):
    """The complete tag says a run was logged in full; its files can still go (mlruns/artifacts
    pruned, a model's folder deleted). Sync checks the local store and logs such a run again."""
    import shutil

    from netgeom.params import load_params
    from netgeom.tracking import _local_artifacts

    layout, params = Layout(tracked), load_params(tracked / "params.yaml")
    params = params.model_copy(update={"mlflow": params.mlflow.model_copy(update={"log_models": "final"})})
    first = sync_runs(params, layout)
    assert sync_runs(params, layout) == first  # all there: found, not logged again
    client = mlflow.MlflowClient()
    folder = _local_artifacts(client.get_run(first[0]).info.artifact_uri)
    models = [m for m in logged_models(layout, "test") if m.source_run_id == first[0]]
    assert [m.name for m in models] == ["mlp_w16-n0_2-r0-s1-e0002"]
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == [
        "e0000.json", "e0000.safetensors", "e0001.json", "e0001.safetensors"]
    gone = {"run.json": folder / "run.json", "checkpoint": folder / "checkpoints" / "e0001.safetensors",
            "model": _local_artifacts(models[0].artifact_location)}[lose]
    shutil.rmtree(gone) if gone.is_dir() else gone.unlink()
    capsys.readouterr()
    again = sync_runs(params, layout)
    assert again != first and "lacks" in capsys.readouterr().err
    assert client.get_run(first[0]).info.lifecycle_stage == "deleted"
    assert len(runs_table(layout, "test")) == 1
    run = client.get_run(again[0])
    assert (_local_artifacts(run.info.artifact_uri) / "run.json").is_file()
    assert (_local_artifacts(run.info.artifact_uri) / "checkpoints" / "e0001.safetensors").is_file()
    model = [m for m in logged_models(layout, "test") if m.source_run_id == again[0]]
    assert len(model) == 1 and (_local_artifacts(model[0].artifact_location) / "MLmodel").is_file()
    assert sync_runs(params, layout) == again


def test_a_report_run_cut_off_while_it_uploaded_is_logged_again(tracked):
    """The report run is found by its content digest; one left RUNNING (killed mid-upload) or
    lacking files is not the report: it is replaced."""
    from netgeom.params import load_params
    from netgeom.stages.sync import sync_report
    from netgeom.tracking import REPORT_TAG, _local_artifacts

    layout, params = Layout(tracked), load_params(tracked / "params.yaml")
    layout.reports.mkdir(parents=True, exist_ok=True)
    (layout.reports / "figures").mkdir(exist_ok=True)
    (layout.reports / "figures" / "a.png").write_bytes(b"png")
    layout.report_summary.write_text('{"smoothness": {"peak": 0.5}}')
    first = sync_report(params, layout)
    assert sync_report(params, layout) == first
    client = mlflow.MlflowClient()
    (_local_artifacts(client.get_run(first).info.artifact_uri) / "report" / "figures" / "a.png").unlink()
    second = sync_report(params, layout)
    assert second != first and client.get_run(first).info.lifecycle_stage == "deleted"
    client.set_terminated(second, "RUNNING")  # as a process killed before set_terminated leaves it
    third = sync_report(params, layout)
    assert third != second and client.get_run(third).info.status == "FINISHED"
    assert client.get_run(third).data.tags[REPORT_TAG] == client.get_run(first).data.tags[REPORT_TAG]
    assert client.get_run(third).data.metrics == {"smoothness/peak": 0.5}
    assert sync_report(params, layout) == third


def test_a_retraining_with_the_same_params_gets_its_own_run_and_supersedes_the_old_one(tracked):
    """Same name and params hash, another training (new code, a GPU rerun): the store must not
    keep the old models and metrics as if they were the new run's."""
    from netgeom.params import load_params
    from netgeom.provenance import run_digest
    from netgeom.runs import read_run

    layout, params = Layout(tracked), load_params(tracked / "params.yaml")
    (old,) = sync_runs(params, layout)
    result = CliRunner().invoke(app, ["train", "--fresh"])
    assert result.exit_code == 0, result.output
    (new,) = sync_runs(params, layout)
    assert new != old
    runs = runs_table(layout, "test").set_index("run_id")
    assert len(runs) == 2 and runs.loc[old, "tags.netgeom.params_hash"] == runs.loc[new, "tags.netgeom.params_hash"]
    assert runs.loc[old, "tags.netgeom.superseded_by"] == new and pd.isna(runs.loc[new, "tags.netgeom.superseded_by"])
    run = read_run(tracked / "artifacts" / "runs" / "mlp_w16-n0.2-r0")
    assert runs.loc[new, "tags.netgeom.instance"] == run_digest(run.info) != runs.loc[old, "tags.netgeom.instance"]


def test_by_default_only_the_final_checkpoint_is_a_logged_model_and_the_others_are_artifacts(project, monkeypatch):
    """MLflow 3.17's runs table shows models for the 50 newest logged models only: one per run
    keeps every run's Models column filled; no checkpoint is lost."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_params(project, mlflow={"enabled": True, "experiment": "final"}, train={"epochs": 2, "checkpoints": {"epochs": [1]}})
    for command in (["split"], ["corrupt"], ["train"]):
        assert CliRunner().invoke(app, command).exit_code == 0
    layout = Layout(project)
    models = logged_models(layout, "final")
    assert [m.name for m in models] == ["mlp_w16-n0_2-r0-s1-e0002"] and models[0].tags["netgeom.epoch"] == "2"
    run_id = runs_table(layout, "final").iloc[0]["run_id"]
    stored = sorted(a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "checkpoints"))
    assert stored == [f"checkpoints/e000{e}.{s}" for e in (0, 1) for s in ("json", "safetensors")]
    from netgeom.training import load_checkpoint

    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoints/e0001.safetensors")
    weights, _ = load_checkpoint(local)
    on_disk, _ = load_checkpoint(project / "artifacts" / "runs" / "mlp_w16-n0.2-r0" / "checkpoints" / "e0001.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in on_disk.items())


def test_an_explicit_tracking_uri_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking_uri(Layout(tmp_path)) == "http://127.0.0.1:5999"


def test_study_summaries_attach_to_the_training_run_once(tracked):
    runner = CliRunner()
    assert runner.invoke(app, ["smoothness"]).exit_code == 0
    layout = Layout(tracked)
    for _ in range(2):  # the second sync finds the same digest and logs nothing
        assert runner.invoke(app, ["mlflow", "sync"]).exit_code == 0
    run_id = runs_table(layout, "test").iloc[0]["run_id"]
    history = mlflow.MlflowClient().get_metric_history(run_id, "smoothness/jacobian_frobenius.crossentropy.all")
    assert [m.step for m in history] == [2]  # checkpoints: "final" in the test params
    final_model = [m for m in logged_models(layout, "test") if m.name.endswith("-e0002")][0]
    linked = {m.key: m.value for m in mlflow.get_logged_model(final_model.model_id).metrics or []}
    assert linked["smoothness/jacobian_frobenius.crossentropy.all"] == history[0].value
    assert "Eval/test_acc" in linked  # the training metrics of that epoch are linked too
    artifacts = mlflow.MlflowClient().list_artifacts(run_id, "studies/smoothness")
    assert [a.path for a in artifacts] == ["studies/smoothness/summary.json"]


def test_the_run_names_its_data_source_and_errors_for_the_runs_table(project, monkeypatch):
    """The runs table's Dataset, Source and comparison columns: the data (digest = the tensors'
    content hash from run.json), the stage and commit that trained it, errors = 1 - accuracy."""
    import json
    import subprocess

    from netgeom.runs import read_run

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "code"], cwd=project, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    from netgeom.provenance import git_commit

    git_commit.cache_clear()
    tracked = train_tracked(project, monkeypatch)
    assert len(commit) == 40

    info = read_run(tracked / "artifacts" / "runs" / "mlp_w16-n0.2-r0").info
    run = mlflow.MlflowClient().get_run(runs_table(Layout(tracked), "test").iloc[0]["run_id"])
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "digits-noise0.2" and dataset.dataset.digest == info["dataset"]["digest"][:12]
    assert json.loads(dataset.dataset.profile)["num_rows"] == info["dataset"]["train_size"] > 0
    assert {t.key: t.value for t in dataset.tags}["mlflow.data.context"] == "train"
    tags = run.data.tags
    assert tags["mlflow.source.git.commit"] == tags["git.commit"] == info["git_commit"] == commit
    assert tags["mlflow.source.name"] and tags["dvc.exp_name"] == "workspace"  # not a `dvc exp run`
    client = mlflow.MlflowClient()
    for acc, error in (("Eval/test_acc", "Eval/test_error"), ("Train/acc", "Train/error")):
        accs = {m.step: m.value for m in client.get_metric_history(run.info.run_id, acc)}
        errors = {m.step: m.value for m in client.get_metric_history(run.info.run_id, error)}
        assert accs.keys() == errors.keys() and all(abs(errors[s] - (1 - accs[s])) < 1e-12 for s in accs)


def test_model_names_are_unique_and_never_repeat_the_seed():
    from netgeom.tracking import checkpoint_model_name

    assert checkpoint_model_name({"run": "mlp_w64-n0.2-r0", "seed": 42}, 500) == "mlp_w64-n0_2-r0-s42-e0500"
    assert checkpoint_model_name({"run": "mlp_w64-n0.0-s1000", "seed": 1000}, 10) == "mlp_w64-n0_0-s1000-e0010"
    assert checkpoint_model_name({"run": "mlp_w64-n0.0-s10", "seed": 1000}, 10) == "mlp_w64-n0_0-s10-s1000-e0010"


def test_a_library_call_of_the_training_stage_logs_its_own_run(project, monkeypatch):
    """`run_train(..., track=True)` logs the run itself (no CLI needed); the default leaves it to
    the report stage, as the pipeline does."""
    from netgeom.params import load_params
    from netgeom.stages.train import run_train
    from tests.conftest import ok

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_params(project, mlflow={"enabled": True, "experiment": "lib"}, train={"epochs": 1, "checkpoints": {"epochs": []}})
    ok("split")
    ok("corrupt")
    layout, params = Layout(project), load_params(project / "params.yaml")
    folder = run_train(params, layout)
    assert not (project / "mlruns" / "mlflow.db").exists()  # untracked: nothing logged, no store
    assert run_train(params, layout, track=True) == folder  # done already: only logged now
    runs = runs_table(layout, "lib")
    assert list(runs["tags.netgeom.run"]) == [folder.name]
