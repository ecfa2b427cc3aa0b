"""Bad input: one clear line naming the key, exit code 2, nothing written under artifacts/."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from netgeom.cli import app
from tests.conftest import refused, write_params

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args))


BAD_PARAMS = [
    ({"noise": {"label": 1.5}}, ["corrupt"], "noise.label"),
    ({"data": {"name": "imagenet"}}, ["split"], "data.name"),
    ({"data": {"val_size": 5000}}, ["split"], "data.val_size"),
    ({"data": {"classes": 12}}, ["split"], "data.classes"),
    ({"data": {"name": "cifar10"}}, ["split"], "cifar10"),
    ({"data": {"colour": True}}, ["split"], "data.colour: unknown key"),
    ({"train": {"epochs": "many"}}, ["split"], "train.epochs"),
    ({"train": {"optimizer": "lion"}}, ["split"], "train.optimizer"),
    ({"train": {"checkpoints": {"epochs": [99]}}}, ["split"], "train.checkpoints.epochs"),
    ({"model": {"width": 0}}, ["split"], "model.width"),
    ({"grid": {"noise": [0, 0.2]}}, ["split"], "grid.noise"),
]


@pytest.mark.parametrize(("groups", "command", "key"), BAD_PARAMS)
def test_bad_params_are_one_line_and_exit_2(project, groups, command, key):
    write_params(project, **groups)
    result = run(*command)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("netgeom: error: ") and key in lines[0]
    assert not (project / "artifacts").exists()


@pytest.mark.parametrize(
    ("args", "key", "command"),
    [
        (["train", "--width", "abc"], "--width", "root train"),
        (["train", "--bogus"], "--bogus", "root train"),
        (["train", "--replicate", "-1"], "--replicate", "root train"),
        (["trian"], "trian", "root"),
        (["curve"], "run_a", "root curve"),
        (["repro", "--jobs", "x"], "--jobs", "root repro"),
        (["data", "info", "digits", "--nope"], "--nope", "root data info"),
    ],
)
def test_a_mistyped_option_or_command_is_one_line_naming_it(project, args, key, command):
    result = run(*args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("netgeom: error: ") and key in lines[0], result.output
    assert lines[0].endswith(f"(`{command} --help` lists what is allowed)")  # CliRunner's program is "root"
    assert not (project / "artifacts").exists()


def test_an_unexpected_error_keeps_its_own_traceback(project, monkeypatch):
    import netgeom.cli_common

    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not bad input")

    monkeypatch.setattr(netgeom.cli_common, "load_params", broken)
    result = run("check")
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError) and "a bug" in str(result.exception)


@pytest.mark.parametrize("command", [["check"], ["split"], ["train"], ["report"], ["mlflow", "sync"]])
def test_a_params_path_naming_a_folder_is_one_line(project, command):
    (project / "folder").mkdir()
    assert "is a folder" in refused(*command, "--params", "folder", key="params")


def test_mlflow_sync_with_tracking_switched_off_says_so(project):
    write_params(project, mlflow={"enabled": False})
    refused("mlflow", "sync", key="mlflow.enabled")
    assert not (project / "mlruns").exists()


def test_a_group_without_a_command_shows_its_help_and_exits_2():
    result = run("data")
    assert result.exit_code == 2 and "materialise" in result.output and "error" not in result.output


def test_noise_from_the_command_line_is_validated_like_params(project):
    write_params(project)
    assert run("split").exit_code == 0
    result = run("corrupt", "--noise", "1.5")
    assert result.exit_code == 2 and "noise.label" in result.output
    assert not (project / "artifacts" / "labels").exists()


@pytest.mark.parametrize(("option", "key"), [(["--width", "0"], "model.width"), (["--noise", "-0.1"], "noise.label")])
def test_train_rejects_bad_cells(project, option, key):
    write_params(project)
    run("split"), run("corrupt")
    result = run("train", *option)
    assert result.exit_code == 2 and key in result.output
    assert not (project / "artifacts" / "runs").exists()


def test_unknown_model_is_rejected_before_training(project):
    write_params(project, model={"arch": "transformer"})
    run("split"), run("corrupt")
    result = run("train")
    assert result.exit_code == 2 and "model.arch" in result.output
    assert not (project / "artifacts" / "runs").exists()


def test_train_before_split_says_what_to_run(project):
    write_params(project)
    result = run("train")
    assert result.exit_code == 2 and "dvc repro split" in result.output


def test_split_and_corrupt_write_their_outputs(project):
    write_params(project)
    assert run("split").exit_code == 0
    result = run("corrupt")
    assert result.exit_code == 0 and "flipped 270 of 1350" in result.output  # round(0.2 * 1350)
    assert (project / "artifacts" / "labels" / "n0.2" / "labels.parquet").exists()


def test_every_command_has_help():
    for command in ([], ["data"], ["data", "fetch"], ["data", "info"], ["data", "materialise"], ["split"], ["corrupt"], ["train"], ["report"], ["mlflow", "sync"]):
        result = run(*command, "--help")
        assert result.exit_code == 0 and "Usage" in result.output


def test_data_fetch_without_network_says_so_plainly(project):
    result = run("data", "fetch", "digits")
    assert result.exit_code == 2 and "needs no download" in result.output


def test_real_process_exit_code_and_stderr(project):
    write_params(project, noise={"label": 1.5})
    done = subprocess.run([sys.executable, "-m", "netgeom", "corrupt"], capture_output=True, text=True, cwd=project)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "noise.label" in done.stderr
    for module in ("netgeom", "netgeom.cli_repro"):
        done = subprocess.run([sys.executable, "-m", module, *(["repro"] if module == "netgeom" else []), "-j", "x"],
                              capture_output=True, text=True, cwd=project)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and "'--jobs'" in done.stderr, done.stderr


def test_the_report_command_says_where_the_report_is_in_one_short_line(project):
    from tests.conftest import ok, write_params

    write_params(project, train={"epochs": 2, "checkpoints": {"epochs": [1]}}, grid={"widths": [16], "noise": [0.2], "seed_offsets": [0]})
    ok("split"), ok("corrupt"), ok("train")
    lines = [line for line in ok("report", "--quiet").splitlines() if line.strip()]
    assert len(lines) == 1 and "index.html" in lines[0] and "summary.json" in lines[0] and len(lines[0]) < 300
