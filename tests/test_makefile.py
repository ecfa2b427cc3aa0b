"""The Makefile's experiment targets hand DVC exactly what they should, with `dvc` replaced by a
recorder: a preset that cannot be read must stop make, never start the default experiment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path):
    """The Makefile, params.yaml and presets/ in a folder whose `.venv/bin` holds the real
    `netgeom` and a `dvc` that appends its arguments to dvc.calls and succeeds."""
    for name in ("Makefile", "params.yaml", "pyproject.toml", "requirements.lock"):  # the stamp's prerequisites
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "presets", tmp_path / "presets")
    (tmp_path / "data").mkdir()
    bin_dir = tmp_path / "fakevenv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "netgeom").symlink_to(Path(sys.executable).parent / "netgeom")
    dvc = bin_dir / "dvc"
    dvc.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "dvc.calls"}\n')
    dvc.chmod(0o755)
    (tmp_path / "fakevenv" / "stamp").touch()
    return tmp_path


def make(project: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    done = subprocess.run(
        ["make", "--no-print-directory", *args, "VENV=fakevenv", "STAMP=fakevenv/stamp"],
        cwd=project, capture_output=True, text=True, env={**os.environ, "NETGEOM_QUIET": "1"},
    )
    calls = (project / "dvc.calls").read_text().splitlines() if (project / "dvc.calls").exists() else []
    return done, [call for call in calls if call.startswith("exp run")]


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_make_preset_runs_the_presets_overrides_and_stops_on_a_missing_or_mistyped_preset(project):
    done, runs = make(project, "preset", "PRESET=mnist1d_double_descent")
    assert done.returncode == 0, done.stderr
    assert runs == [f"exp run {subprocess.run([sys.executable, '-m', 'netgeom', 'preset', 'presets/mnist1d_double_descent.yaml'], cwd=project, capture_output=True, text=True, check=True).stdout.strip()}"]
    assert "-S data.name=mnist1d" in runs[0]

    (project / "dvc.calls").unlink()
    done, runs = make(project, "preset", "PRESET=mnist1d_double_descnet")
    assert done.returncode != 0 and not runs
    assert "presets/mnist1d_double_descnet.yaml does not exist" in done.stderr

    done, runs = make(project, "preset")
    assert done.returncode != 0 and not runs
    assert "PRESET is required" in done.stderr and "mnist1d_double_descent" in done.stderr
