"""The DVC pipeline end to end in a temporary git repository: repro, a no-op second repro, and a
seed experiment with different metrics. Uses the digits data and tiny models to stay fast."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netgeom.data import get_source
from tests.conftest import write_params

REPO = Path(__file__).resolve().parents[1]


def sh(*args, cwd):
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
        "DVC_NO_ANALYTICS": "1",
    }
    env.pop("DVC_ROOT", None)
    done = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    get_source("digits").materialise(root / "data")
    write_params(
        root,
        mlflow={"enabled": True, "experiment": "pipeline", "log_models": True},
        train={"epochs": 2, "checkpoints": {"epochs": [1]}},
        grid={"widths": [8], "noise": [0.0, 0.2], "seed_offsets": [0]},
    )
    sh("git", "init", "-q", cwd=root)
    # dvc exp commits through its own git backends, which read the repo config, not only env vars
    sh("git", "config", "user.name", "netgeom tests", cwd=root)
    sh("git", "config", "user.email", "tests@netgeom.invalid", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    sh("dvc", "add", "-q", "data", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "init", cwd=root)
    sh("dvc", "repro", cwd=root)
    return root


def test_repro_builds_every_grid_cell_and_the_report(repo):
    runs = sorted(p.name for p in (repo / "artifacts" / "runs").iterdir())
    assert runs == ["mlp_w8-n0.0-r0", "mlp_w8-n0.2-r0"]
    summary = json.loads((repo / "reports" / "summary.json").read_text())
    assert set(summary) == set(runs)
    figures = {p.name for p in (repo / "reports" / "figures").iterdir()}
    assert {"error_vs_width.png", "learning_curves.png", "smoothness_vs_width.png", "regions_vs_width.png", "mli_curves.png", "mli_preset.png"} <= figures
    for study in ("smoothness", "regions", "interpolation"):
        assert sorted(p.name for p in (repo / "artifacts" / "studies" / study).iterdir()) == runs
    labels = json.loads((repo / "artifacts" / "labels" / "n0.2" / "summary.json").read_text())
    assert labels["flipped"] == round(0.2 * labels["train_size"])


def test_second_repro_is_a_no_op(repo):
    out = sh("dvc", "repro", cwd=repo)
    assert "Running stage" not in out
    assert "up to date" in sh("dvc", "status", cwd=repo)


def test_mlflow_holds_one_run_per_training_with_checkpoint_models(repo):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    experiment = mlflow.get_experiment_by_name("pipeline")
    runs = mlflow.search_runs([experiment.experiment_id])
    assert len(runs) == 2 and set(runs["tags.dvc.stage"]) == {"train@8-0.0-0", "train@8-0.2-0"}
    models = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id], output_format="list")
    assert len(models) == 2 * 3  # init, epoch 1, final


def test_seed_experiment_runs_and_differs(repo):
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "baseline", cwd=repo)
    sh("dvc", "exp", "run", "-S", "seed=43", cwd=repo)
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=repo))
    metrics = []
    for entry in shown:
        for exp in [entry] + [e for group in entry.get("experiments") or [] for e in group.get("revs", [])]:
            data = exp.get("data") or {}
            values = (data.get("metrics") or {}).get("reports/summary.json", {}).get("data")
            if values:
                metrics.append((data["params"]["params.yaml"]["data"]["seed"], values))
    seeds = {seed for seed, _ in metrics}
    assert {1, 43} <= seeds
    by_seed = dict(metrics)
    assert by_seed[1] != by_seed[43]
