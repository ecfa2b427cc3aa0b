"""Faults a researcher's machine throws at a run: the disk filling up mid-write. Each ends in one
line (exit 2), leaves the last complete result as it was, and a rerun recovers bit-identically."""

from __future__ import annotations

import errno
import shutil

import pytest

from netgeom.errors import NetgeomError
from tests.conftest import ok, refused, write_params


def disk_full_at(monkeypatch, module, name: str, when: str):
    """`module.name` (a write helper) raises ENOSPC when writing a file whose name contains `when`."""
    real = getattr(module, name)

    def writing(path, *args, **kwargs):
        if when in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module, name, writing)


@pytest.fixture
def prepared(project):
    write_params(project, train={"epochs": 2, "checkpoints": {"epochs": [1]}})
    ok("split")
    ok("corrupt")
    return project


@pytest.mark.parametrize("when", ["metrics.json", "run.json"])
def test_a_full_disk_while_a_run_is_assembled_is_one_line_and_the_rerun_is_identical(prepared, monkeypatch, when):
    from netgeom.stages import train

    run = prepared / "artifacts" / "runs" / "mlp_w16-n0.2-r0"
    with monkeypatch.context() as patched:
        disk_full_at(patched, train, "atomic_write_json", when)
        line = refused("train", key="disk full")
    assert when in line and "free space and rerun" in line
    assert not run.exists()  # nothing half-published
    ok("train")
    reference = prepared / "reference"
    shutil.copytree(run, reference)
    shutil.rmtree(run)
    ok("train", "--fresh")
    for name in ("checkpoints/e0001.safetensors", "checkpoints/e0002.safetensors", "metrics.json"):
        assert (run / name).read_bytes() == (reference / name).read_bytes(), name


def test_a_full_disk_while_the_report_is_written_keeps_the_old_report(prepared, monkeypatch):
    from netgeom.stages import report

    write_params(prepared, train={"epochs": 2, "checkpoints": {"epochs": [1]}}, grid={"widths": [16], "noise": [0.2], "seed_offsets": [0]})  # the report shows the grid's runs
    ok("train")
    ok("report", "--quiet")
    before = {p.relative_to(prepared / "reports"): p.read_bytes() for p in (prepared / "reports").rglob("*") if p.is_file()}
    with monkeypatch.context() as patched:
        disk_full_at(patched, report, "atomic_write_json", "summary.json")
        line = refused("report", "--quiet", key="disk full")
    assert "summary.json" in line
    after = {p.relative_to(prepared / "reports"): p.read_bytes() for p in (prepared / "reports").rglob("*") if p.is_file()}
    assert after == before


def test_other_os_errors_are_not_dressed_up_as_a_full_disk(prepared, monkeypatch):
    from typer.testing import CliRunner

    from netgeom.cli import app
    from netgeom.stages import train

    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(train, "atomic_write_json", denied)
    result = CliRunner().invoke(app, ["train"])
    assert isinstance(result.exception, PermissionError)  # a real bug stays a traceback


def test_a_local_ray_that_does_not_come_up_is_one_line_and_shuts_down(monkeypatch):
    """On a busy machine `ray.init` may time out starting the local cluster: one line naming the
    key, and what it half-started is shut down (no agent left behind)."""
    ray = pytest.importorskip("ray")
    from netgeom.errors import NetgeomError
    from netgeom.ray_cluster import connect_ray

    shutdowns = []

    def timed_out(**options):
        raise TimeoutError("Timed out while waiting for the raylet to start")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", timed_out)
    monkeypatch.setattr(ray, "shutdown", lambda: shutdowns.append(True))
    with pytest.raises(NetgeomError, match="local Ray cluster did not start: Timed out") as raised:
        connect_ray(None, key="--backend")
    assert str(raised.value).startswith("--backend: ") and "\n" not in str(raised.value) and shutdowns == [True]


@pytest.mark.parametrize(
    ("group", "value", "key"),
    [
        ({"execution": {"threads": 100000}}, None, "execution.threads"),
        ({"execution": {"address": "x y"}}, None, "execution.address"),
        ({"hyperplanes": {"checkpoints": [999]}}, None, "hyperplanes.checkpoints"),
        ({"smoothness": {"checkpoints": [3]}}, None, "smoothness.checkpoints"),
    ],
)
def test_check_refuses_what_only_the_machine_or_the_schedule_can_tell(project, group, value, key):
    write_params(project, train={"epochs": 30, "checkpoints": {"epochs": [10]}}, **group)
    refused("check", key=key)


def test_check_refuses_a_gpu_the_machine_does_not_have(project, monkeypatch):
    from netgeom.stages import check

    write_params(project, execution={"device": "cuda:1"})
    monkeypatch.setattr(check, "visible_nvidia_gpus", lambda: 1)
    assert "1 visible NVIDIA GPU" in refused("check", key="execution.device")
    monkeypatch.setattr(check, "visible_nvidia_gpus", lambda: 2)
    ok("check")


def test_a_switched_off_studys_checkpoints_are_not_checked(project):
    write_params(project, train={"epochs": 30, "checkpoints": {"epochs": [10]}}, hyperplanes={"enabled": False, "checkpoints": [999]})
    ok("check")


def test_netgeom_repro_runs_check_first_even_for_targets(tmp_path):
    """DVC has no order-only dependency: the scheduler gates every stage on `check`, with targets
    too (then check, up to date or not targeted, runs on its own first)."""
    import subprocess
    import sys

    from tests.conftest import commit_dvc_repo, copy_pipeline
    from tests.test_pipeline import sh

    root = copy_pipeline(tmp_path / "repo")
    write_params(root, train={"epochs": 1, "checkpoints": {"epochs": []}}, grid={"widths": [8], "noise": [0.2], "seed_offsets": [0]})
    commit_dvc_repo(root, sh)
    write_params(root, execution={"threads": 100000}, train={"epochs": 1, "checkpoints": {"epochs": []}})
    for targets in ([], ["split"]):
        done = subprocess.run([sys.executable, "-m", "netgeom", "repro", "--quiet", *targets], cwd=root, capture_output=True, text=True)
        # stale, check runs as the first stage and blocks the rest (exit 1: a stage failed); else
        # it runs before the targets and its refusal is the command's (exit 2)
        assert done.returncode == (2 if targets else 1), done.stdout + done.stderr
        assert "netgeom: error: execution.threads" in done.stdout + done.stderr
        assert not (root / "artifacts" / "splits").exists()


def test_a_stuck_store_lock_holder_is_named_in_one_line_after_the_timeout(project, monkeypatch, capsys):
    import subprocess
    import sys
    import time

    from netgeom.errors import NetgeomError
    from netgeom.layout import Layout
    from netgeom.store import store_lock

    layout = Layout(project)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom netgeom.layout import Layout\nfrom netgeom.store import store_lock\n"
         "with store_lock(Layout(Path(sys.argv[1]))):\n    print('held', flush=True)\n    time.sleep(60)", str(project)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("NETGEOM_LOCK_TIMEOUT", "1")
        started = time.monotonic()
        with pytest.raises(NetgeomError, match=rf"held by pid {holder.pid} .* for over 1 s") as raised:
            with store_lock(layout):
                pass
        assert "\n" not in str(raised.value) and time.monotonic() - started < 30
        assert f"held by pid {holder.pid}" in capsys.readouterr().err  # it said whom it waited for
    finally:
        holder.kill()
        holder.wait()
    with store_lock(layout):  # the OS released the dead holder's lock
        pass


def test_a_killed_store_creation_leaves_no_temporary_file_for_good(project):
    from netgeom.layout import Layout
    from netgeom.store import ensure_store, store_lock

    layout = Layout(project)
    layout.mlruns.mkdir(parents=True)
    leftover = layout.mlruns / ".mlflow.db.99999.tmp"
    leftover.write_bytes(b"half a database")
    with store_lock(layout):
        ensure_store(layout)
    assert layout.mlflow_db.exists() and not leftover.exists()


def test_a_full_disk_while_a_study_writes_its_shards_is_one_line_and_the_rerun_completes(prepared, monkeypatch):
    from netgeom.stages import study_common

    write_params(prepared, train={"epochs": 2, "checkpoints": {"epochs": [1]}}, smoothness={"shards": 2})
    ok("train")
    with monkeypatch.context() as patched:
        disk_full_at(patched, study_common, "atomic_write_parquet", "shard-001")
        line = refused("smoothness", key="disk full")
    assert "shard-001-of-002" in line
    ok("smoothness")
    summary = prepared / "artifacts" / "studies" / "smoothness" / "mlp_w16-n0.2-r0" / "summary.json"
    assert summary.exists()


def test_a_sync_killed_inside_the_store_lock_is_repaired_by_the_next_sync(prepared, monkeypatch):
    """A writer killed mid-run leaves an MLflow run without its `netgeom.complete` tag (RUNNING);
    the next sync replaces it with one complete, finished run."""
    import mlflow

    from netgeom.layout import Layout
    from netgeom.tracking import runs_table

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_params(prepared, mlflow={"enabled": True, "experiment": "killed"}, train={"epochs": 2, "checkpoints": {"epochs": [1]}})
    ok("train", "--no-track")
    real = mlflow.log_artifact

    def killed(path, *args, **kwargs):
        if str(path).endswith("history.csv"):
            raise KeyboardInterrupt  # SIGINT/SIGKILL between the model and the artifacts
        return real(path, *args, **kwargs)

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(mlflow, "log_artifact", killed)
        from netgeom.params import load_params
        from netgeom.stages.sync import sync_runs

        sync_runs(load_params(prepared / "params.yaml"), Layout(prepared))
    left = runs_table(Layout(prepared), "killed")
    assert len(left) == 1 and left.iloc[0].get("tags.netgeom.complete") != "true"
    ok("mlflow", "sync")
    runs = runs_table(Layout(prepared), "killed")
    assert len(runs) == 1 and runs.iloc[0]["tags.netgeom.complete"] == "true" and runs.iloc[0]["status"] == "FINISHED"


def test_check_refuses_a_data_root_without_the_datasets_files(project):
    write_params(project, data={"root": "nowhere"})
    assert "digits is not under" in refused("check", key="data.root")
    write_params(project, data={"name": "fashion_mnist", "root": "nowhere"})
    assert "netgeom data fetch fashion_mnist" in refused("check", key="data.root")


def test_a_pretrained_file_outside_pretrained_or_missing_is_one_line_before_any_work(project):
    elsewhere = project / "weights.safetensors"
    elsewhere.write_bytes(b"weights")
    for named in (str(elsewhere), "weights.safetensors", "pretrained/../weights.safetensors"):
        write_params(project, model={"pretrained": named})
        for command in (["check"], ["train"]):
            assert "is not under pretrained/" in refused(*command, key="model.pretrained")
    write_params(project, model={"pretrained": "pretrained/absent.safetensors"})
    assert "no such file" in refused("check", key="model.pretrained")
    assert not (project / "artifacts" / "runs").exists()


def test_check_refuses_more_classes_than_the_dataset_has(project):
    write_params(project, data={"classes": 11})
    assert "asks for 11 classes but digits has 10" in refused("check", key="data.classes")
    write_params(project, data={"classes": 10})
    ok("check")


def test_a_width_no_machine_can_hold_is_one_line_and_writes_nothing(prepared):
    """2**52 units of 64 inputs are 2**60 bytes: torch's allocator refuses them on any machine,
    with a C++ message that names no setting; the run folder must not appear."""
    line = refused("train", "--width", str(2**52), key="out of memory")
    assert "GB" in line and "model.width" in line
    assert not (prepared / "artifacts" / "runs" / f"mlp_w{2**52}-n0.2-r0").exists()


def test_other_runtime_errors_are_not_dressed_up_as_out_of_memory():
    from netgeom.cli_common import out_of_memory

    assert out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)")) is None
    assert out_of_memory(MemoryError()) == ""
    assert out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")) == " (asked for 20.00 GiB)"


@pytest.mark.parametrize("damage", ["no rows", "label as text", "an id past the pool", "a class past K"])
def test_labels_that_do_not_fit_the_split_are_one_line_naming_the_file(prepared, damage):
    """A labels table of zero rows trained and measured nothing, with exit 0; text labels and
    ids past the pool were tracebacks."""
    import pandas as pd

    path = prepared / "artifacts" / "labels" / "n0.2" / "labels.parquet"
    labels = pd.read_parquet(path)
    if damage == "no rows":
        labels = labels.iloc[:0]
    elif damage == "label as text":
        labels["label"] = labels["label"].astype(str) + "x"
    elif damage == "an id past the pool":
        labels.loc[0, "sample_id"] = 10**6
    else:
        labels.loc[0, "clean_label"] = 10
    labels.to_parquet(path)
    line = refused("train", key=str(path))
    assert "dvc repro corrupt" in line
    assert not (prepared / "artifacts" / "runs").exists()


def test_a_report_summary_of_the_wrong_shape_is_one_line_naming_it_before_mlflow_is_touched(project):
    from netgeom.layout import Layout
    from netgeom.params import Params
    from netgeom.stages.sync import sync_report

    layout = Layout(project)
    layout.report_summary.parent.mkdir(parents=True)
    layout.report_summary.write_text('{"a": 1}')
    with pytest.raises(NetgeomError) as raised:
        sync_report(Params(), layout)  # mlflow.enabled by default
    assert raised.value.key == str(layout.report_summary) and not (project / "mlruns").exists()


def test_a_json_schema_refuses_each_wrong_kind_and_names_the_key(tmp_path):
    """The schema check against hand-made cases: each wrong kind is named with its dotted key."""
    import json

    from netgeom.io import read_json_object

    schema = {"n": int, "x": float, "ids": list[int], "cell": {"width": int, "noise": float}, "name": (str, type(None))}
    good = {"n": 3, "x": 1, "ids": [1, 2], "cell": {"width": 4, "noise": 0.5}, "name": None, "extra": "kept"}
    path = tmp_path / "f.json"
    path.write_text(json.dumps(good))
    assert read_json_object(path, schema) == good
    cases = {
        "its n must be an integer": {"n": 3.0},
        "its n must be an integer ": {"n": True},  # a bool is no count
        "its x must be a number": {"x": "1"},
        "its ids must be a list of integers": {"ids": [1, "2"]},
        "its cell must be an object": {"cell": [4, 0.5]},
        "its cell.noise must be a number": {"cell": {"width": 4, "noise": None}},
        "its name must be a string or null": {"name": 1},
    }
    for expected, change in cases.items():
        path.write_text(json.dumps({**good, **change}))
        with pytest.raises(NetgeomError) as raised:
            read_json_object(path, schema)
        assert raised.value.key == str(path) and raised.value.problem.startswith(expected.strip()), (change, raised.value)


@pytest.mark.parametrize(
    ("file", "change", "command", "clause"),
    [
        ("splits/split.json", {"train": "0-100"}, ("train",), "its train must be a list of integers"),
        ("runs/mlp_w16-n0.2-r0/run.json", {"checkpoints": ["one", 2]}, ("smoothness",), "its checkpoints must be a list of integers"),
        ("runs/mlp_w16-n0.2-r0/run.json", {"cell": {"width": "16", "noise": 0.2, "replicate": 0}}, ("report",), "its cell.width must be an integer"),
        ("runs/mlp_w16-n0.2-r0/metrics.json", {"test_acc": "0.9"}, ("report",), "its test_acc must be a number"),
    ],
)
def test_our_json_files_holding_the_wrong_kind_of_value_are_one_line_naming_file_and_key(trained_projects, tmp_path, monkeypatch, file, change, command, clause):
    """A hand-edited split.json, run.json or metrics.json was a TypeError or KeyError traceback
    somewhere downstream; now the reader refuses it."""
    import json

    root = trained_projects.copy(tmp_path / "project", {"train": {"epochs": 2, "checkpoints": {"epochs": [1]}}}, [("split",), ("corrupt",), ("train",)])
    monkeypatch.chdir(root)
    path = root / "artifacts" / file
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    line = refused(*command, key=str(path.relative_to(root)))
    assert clause in line


@pytest.mark.parametrize(
    ("command", "epoch"),
    [
        (("smoothness",), 2),
        (("interpolation",), 0),  # the studies below call the model functionally on the state dict
        (("interpolation",), 2),
        (("reinit",), 1),
        (("hyperplanes",), 2),
        (("barriers",), 2),
        (("curve", "mlp_w16-n0.2-r0@init", "mlp_w16-n0.2-r1"), 0),
    ],
)
def test_a_checkpoint_that_does_not_fit_the_runs_model_is_one_line_naming_it(trained_projects, tmp_path, monkeypatch, command, epoch):
    """A checkpoint of another width put in a run's place was torch's size-mismatch traceback:
    in load_state_dict (smoothness) or deep inside a functional call (interpolation, reinit,
    barriers, curve) or a shape error in the hyperplane tables."""
    import torch

    from netgeom.models import create_model
    from netgeom.training.checkpoints import save_checkpoint

    recipe = {"train": {"epochs": 2, "checkpoints": {"epochs": [1]}}, "grid": {"widths": [16], "noise": [0.2], "seed_offsets": [0, 1]}}
    root = trained_projects.copy(tmp_path / "project", recipe, [("split",), ("corrupt",), ("train",), ("train", "--replicate", "1")])
    monkeypatch.chdir(root)
    folder = root / "artifacts" / "runs" / "mlp_w16-n0.2-r0" / "checkpoints"
    torch.manual_seed(0)
    save_checkpoint(folder, epoch, create_model("mlp", (64,), 10, width=8, depth=1).state_dict(), {})
    line = refused(*command, key=str((folder / f"e{epoch:04d}.safetensors").relative_to(root)))
    assert "does not fit the run's model" in line and "shape mismatch" in line


STALE_RECIPE = ({"train": {"epochs": 2, "checkpoints": {"epochs": [1]}}}, [("split",), ("corrupt",), ("train",)])


@pytest.mark.parametrize("command", [("smoothness",), ("hyperplanes",), ("interpolation",)])
def test_a_study_of_a_run_trained_with_other_settings_is_refused_naming_the_setting(trained_projects, tmp_path, monkeypatch, command):
    """params.yaml edited after training, then a study run by hand (no `dvc repro`): the study
    measured the old run and filed it under today's settings."""
    root = trained_projects.copy(tmp_path / "project", *STALE_RECIPE)
    monkeypatch.chdir(root)
    write_params(root, train={"epochs": 2, "checkpoints": {"epochs": [1]}, "lr": 0.01})
    line = refused(*command, key="run")
    assert "mlp_w16-n0.2-r0 was trained with train.lr 0.003, params.yaml now gives 0.01" in line
    assert "netgeom train --width 16 --noise 0.2 --replicate 0" in line


def test_a_study_of_a_run_trained_on_other_data_is_refused(trained_projects, tmp_path, monkeypatch):
    """The same settings, other labels on disk (a labels file rewritten since the run trained)."""
    import pandas as pd

    root = trained_projects.copy(tmp_path / "project", *STALE_RECIPE)
    monkeypatch.chdir(root)
    path = root / "artifacts" / "labels" / "n0.2" / "labels.parquet"
    labels = pd.read_parquet(path)
    labels["label"] = (labels["label"] + 1) % 10
    labels.to_parquet(path)
    assert "trained on other data" in refused("smoothness", key="run")


def test_a_study_of_a_run_trained_by_other_training_code_is_refused(trained_projects, tmp_path, monkeypatch):
    from netgeom import code

    root = trained_projects.copy(tmp_path / "project", *STALE_RECIPE)
    monkeypatch.chdir(root)
    ok("smoothness")  # the same code: studied
    monkeypatch.setattr(code, "code_digest", lambda *modules: "0" * 16)
    assert "trained by other training code" in refused("smoothness", key="run")


def test_a_run_trained_on_a_gpu_is_studied_on_the_cpu_under_its_own_identity(trained_projects, tmp_path, monkeypatch):
    """The identity check recomputes the run's identity for the device kind it trained on (its
    kernels), not the one the study runs on."""
    import json

    from netgeom.params import load_params
    from netgeom.runs import cell_params, default_cell, identity_hash

    root = trained_projects.copy(tmp_path / "project", *STALE_RECIPE)
    monkeypatch.chdir(root)
    path = root / "artifacts" / "runs" / "mlp_w16-n0.2-r0" / "run.json"
    info = json.loads(path.read_text())
    params = load_params(root / "params.yaml")
    settings = cell_params(params, default_cell(params))
    assert identity_hash(settings, info["dataset"]["digest"], "cpu") == info["params_hash"]
    info.update(device="cuda:0", params_hash=identity_hash(settings, info["dataset"]["digest"], "cuda"))
    path.write_text(json.dumps(info))
    ok("smoothness")
