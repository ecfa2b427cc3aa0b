"""Validating params and switched-off stages import no torch (issue #22): each is a process DVC
starts, and `import torch` alone costs more CPU than the whole check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from netgeom.stages.registry import STUDIES, params_module, stage_module
from tests.conftest import write_params

HEAVY = ("torch", "mlflow", "scipy", "pandas", "numpy", "sklearn")

# Runs one netgeom command in a fresh interpreter and prints which heavy modules it imported.
PROBE = """
import json, sys
from netgeom.cli import app
try:
    app(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "heavy": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY,)


def project_params(root: Path, **groups) -> Path:
    """params.yaml and the embedded digits in `root` (check looks for the dataset's files)."""
    from netgeom.data import get_source

    get_source("digits").materialise(root / "data")
    return write_params(root, **groups)


def probe(root: Path, *command: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, *command], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_check_imports_no_torch_and_no_mlflow_and_leaves_the_store_to_its_first_writer(tmp_path):
    """Creating the local store (mlflow's import and migrations, ~5 s) was check's work, on the
    stage every other stage waits for; the report stage creates it under the store lock."""
    from netgeom import tracking
    from netgeom.layout import Layout

    project_params(tmp_path, mlflow={"enabled": True, "experiment": "light"})
    first = probe(tmp_path, "check", "--quiet")
    # numpy only: the dataset sources it asks whether the files are there (0.1 s, no torch)
    assert first["code"] in (0, None) and first["heavy"] == ["numpy"]
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()
    tracking.connect(Layout(tmp_path), "light")
    again = probe(tmp_path, "check", "--quiet")  # an existing store is read with sqlite3 alone
    assert again["code"] in (0, None) and again["heavy"] == ["numpy"]


def test_check_still_refuses_bad_input_in_one_line_without_torch(tmp_path):
    project_params(tmp_path, regions={"paths": 0})
    done = subprocess.run([sys.executable, "-c", PROBE, "check"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "regions.paths" in done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 2 and "torch" not in result["heavy"]


def test_a_switched_off_study_stage_imports_no_torch(tmp_path):
    project_params(tmp_path, regions={"enabled": False})
    result = probe(tmp_path, "regions", "--width", "8", "--noise", "0.2", "--quiet")
    assert result == {"code": None, "heavy": []} or result == {"code": 0, "heavy": []}
    summary = json.loads((tmp_path / "artifacts" / "studies" / "regions" / "mlp_w8-n0.2-r0" / "summary.json").read_text())
    assert summary == {"skipped": "regions.enabled is false"}


@pytest.mark.parametrize("entry", [e for e in STUDIES], ids=lambda e: e.name)
def test_each_study_group_is_a_light_module_and_its_stage_uses_it(entry):
    """The params group lives in netgeom.groups.<name> (no torch import at its top level), and
    the stage module works with that very class."""
    module = params_module(entry)
    source = Path(module.__file__).read_text()
    assert "import torch" not in source and "from torch" not in source
    stage = stage_module(entry)
    uses = [value for value in vars(stage).values() if value is module.PARAMS]
    assert uses or entry.scope in ("grid", "custom"), f"{entry.module} does not import {entry.params}.PARAMS"


def test_the_light_groups_name_what_the_studies_implement():
    """The names and defaults the light groups validate against are the studies' own."""
    from netgeom.groups import interpolation as gi
    from netgeom.groups import regions as gr
    from netgeom.groups import smoothness as gs
    from netgeom.studies import interpolation, regions, smoothness

    assert set(gs.METRICS) == set(smoothness.METRICS) and set(gs.NORMALIZATIONS) == set(smoothness.NORMALIZATIONS)
    assert gs.OPERATOR_METHODS == smoothness.OPERATOR_METHODS and gs.TANGENT_STEP == smoothness.TANGENT_STEP
    assert gr.DEFAULT_EPS == regions.DEFAULT_EPS
    assert gi.SEEDS_BN_MOMENTUM == interpolation.SEEDS_BN_MOMENTUM


# --------------------------------------------------------------------------- what a study needs, refused by check


@pytest.mark.parametrize(
    "groups, key, words",
    [
        ({"model": {"arch": "mlp", "width": 16, "depth": 1, "activation": "tanh"}}, "regions.enabled", "model.activation is tanh"),
        ({"model": {"arch": "vgg8_maxpool", "width": None, "depth": None}, "grid": {"widths": [64], "noise": [0.2], "seed_offsets": [0]}},
         "regions.enabled", "max-pools"),
        ({"data": {"name": "random", "random": {"shape": [40]}}}, "regions.enabled", "data.random.shape"),
        ({"hyperplanes": {"with_linear": False}}, "hyperplanes.enabled", "with_linear: true"),
    ],
)
def test_check_refuses_an_enabled_study_the_model_or_data_cannot_take_in_one_line(tmp_path, groups, key, words):
    project_params(tmp_path, **groups)
    done = subprocess.run([sys.executable, "-c", PROBE, "check"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and words in lines[0] and f"{key}: false" in lines[0], done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"code": 2, "heavy": []}
    study = key.split(".")[0]
    project_params(tmp_path, **{**groups, study: {**groups.get(study, {}), "enabled": False}})
    assert probe(tmp_path, "check", "--quiet")["code"] in (0, None)  # switched off: no cross-check
