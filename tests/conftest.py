"""Shared fixtures: tiny projects in temporary folders, quiet progress, one torch thread."""

from __future__ import annotations

import os
from contextlib import contextmanager
import shutil
from pathlib import Path

import pytest
import torch
import yaml

os.environ.setdefault("NETGEOM_QUIET", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_leaked_tracking_uri(monkeypatch):
    """A test that calls mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; later tests in the
    same worker (and their subprocesses) would log into that store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    """An empty project root (cwd) with the embedded datasets materialised."""
    from netgeom.data import get_source

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    for name in ("digits", "mnist1d"):
        get_source(name).materialise(tmp_path / "data")
    return tmp_path


class TrainedProjects:
    """Trained projects built once per test worker and per recipe, handed out as fresh copies.

    A recipe is the params groups (as `write_params` takes them) and the `netgeom` commands run
    in the project after it (split, corrupt, train ...). Tests mutate what they get, so each gets
    its own copy (`copy`); building the same recipe twice in a worker is never needed.
    """

    def __init__(self, base: Path):
        self.base = base
        self.built: dict[str, Path] = {}

    def build(self, params: dict, commands: list[tuple[str, ...]]) -> Path:
        import json

        from netgeom.data import get_source

        key = json.dumps([params, commands], sort_keys=True)
        if key not in self.built:
            root = self.base / f"recipe-{len(self.built)}"
            root.mkdir()
            get_source("digits").materialise(root / "data")
            write_params(root, **params)
            with pytest.MonkeyPatch.context() as patch:
                patch.chdir(root)
                patch.delenv("DVC_ROOT", raising=False)
                for command in commands:
                    ok(*command)
            self.built[key] = root
        return self.built[key]

    def copy(self, dest: Path, params: dict, commands: list[tuple[str, ...]]) -> Path:
        """A copy of the recipe's project at `dest` (which must not exist)."""
        shutil.copytree(self.build(params, commands), dest, symlinks=True)
        return dest


@pytest.fixture(scope="session")
def trained_projects(tmp_path_factory) -> TrainedProjects:
    """The one place tests get trained projects from (see TrainedProjects)."""
    return TrainedProjects(tmp_path_factory.mktemp("trained-projects"))


@contextmanager
def crash_at_evaluation(monkeypatch, n: int = 3):
    """Within the block, the training loop's n-th evaluation raises KeyboardInterrupt (a crash
    in the middle of a run, after some checkpoints and resume states were written)."""
    from netgeom.training import loop

    calls = {"n": 0}
    real = loop.evaluate_bundle

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(loop, "evaluate_bundle", crashing)
        yield


def ok(*args) -> str:
    """Run a `netgeom` command in-process; it must succeed. Returns its output."""
    from typer.testing import CliRunner

    from netgeom.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def refused(*args, key: str) -> str:
    """Run a `netgeom` command that must stop on bad input: exit code 2 and one line naming `key`."""
    from typer.testing import CliRunner

    from netgeom.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("netgeom: error: ") and key in lines[0], result.output
    return lines[0]


def write_params(root: Path, **groups) -> Path:
    """params.yaml for a fast digits run; keyword groups update the defaults."""
    params = {
        "seed": 1,
        "data": {"name": "digits", "val_size": 0.1, "root": "data"},  # dvc.yaml reads data.root
        "noise": {"kind": "symmetric", "label": 0.2, "seed": 0},
        "model": {"arch": "mlp", "width": 16, "depth": 1},
        "train": {"epochs": 3, "batch_size": 64, "optimizer": "adam", "lr": 0.003, "checkpoints": {"epochs": [1]}},
        "grid": {"widths": [8], "noise": [0.2], "seed_offsets": [0]},
        "mlflow": {"enabled": False},
        "execution": {"threads": 1, "device": "auto", "deterministic": False},  # every key a DVC stage declares
        "report": {"format": "png"},
        "smoothness": {"checkpoints": "final", "samples": 64},
        "regions": {"paths": 8, "radius": 1, "checkpoints": "final"},
        "interpolation": {"points": 5, "random_inits": 1, "gauss_samples": 8, "landscape": {"resolution": 3}},
        "mli": {"width": 16, "depth": 1, "seeds": [0], "epochs": 2, "points": 5},
        "barriers": {"matching": True},
        "hyperplanes": {"with_linear": True},
        "reinit": {"split": "test"},
        "curvature": {"enabled": False},
        "star": {"widths": [8], "noise": 0.2, "anchors": [100], "held_out": [200, 201], "anchor_counts": [1], "epochs": 2, "points": 5, "realign": False, "anti": False,
                 "t": "uniform", "mu": 0.0, "calibration_samples": 256},
    }
    for group, values in groups.items():
        if isinstance(values, dict) and isinstance(params.get(group), dict):
            params[group] = {**params[group], **values}
        else:
            params[group] = values
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def commit_dvc_repo(root: Path, run, track_data: bool = True) -> Path:
    """Make root a git + DVC repository with one commit, as `dvc exp run` needs. The identity goes
    into the repo config: dvc exp commits through its own git backend, which reads no env vars."""
    run("git", "init", "-q", cwd=root)
    run("git", "config", "user.name", "netgeom tests", cwd=root)
    run("git", "config", "user.email", "tests@netgeom.invalid", cwd=root)
    run("dvc", "init", "-q", cwd=root)
    # the project's DVC settings (autostage, the offline `dvc plots` template), as a clone has them
    shutil.copy(Path(__file__).resolve().parents[1] / ".dvc" / "config", root / ".dvc" / "config")
    if track_data:
        run("dvc", "add", "-q", "data", cwd=root)
    run("git", "add", "-A", cwd=root)
    run("git", "commit", "-qm", "init", cwd=root)
    return root


def copy_pipeline(root: Path) -> Path:
    """This repository's pipeline (dvc.yaml, src/) and the digits data in `root`, for DVC tests."""
    from netgeom.data import get_source

    repo = Path(__file__).resolve().parents[1]
    root.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(repo / name, root / name)
    shutil.copytree(repo / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(repo / "inits", root / "inits")  # the reinit stages' dependency
    shutil.copytree(repo / "pretrained", root / "pretrained")  # the training stages' dependency
    get_source("digits").materialise(root / "data")
    return root
