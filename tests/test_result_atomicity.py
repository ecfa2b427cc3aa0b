"""A result of several files is replaced whole: a crash at any write of a rerun leaves the
previous result exactly as it was, and the finished rerun leaves only the new one."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from netgeom import io
from tests.conftest import ok, write_params
from tests.test_study_stages import STUDY_RECIPE


class Crash(Exception):
    """The process dying at a write (raised instead of the write)."""


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_crashing_at(monkeypatch, k: int, args: list[str]) -> bool:
    """Run `netgeom *args` with its k-th atomic write raising Crash; True when it got that far."""
    from netgeom.cli import app

    real, calls = io.atomic_path, {"n": 0}

    def crashing(target):
        calls["n"] += 1
        if calls["n"] == k:
            raise Crash(target)
        return real(target)

    with monkeypatch.context() as patch:
        patch.setattr(io, "atomic_path", crashing)
        result = CliRunner().invoke(app, args)
    if isinstance(result.exception, Crash):
        return True
    assert result.exit_code == 0, result.output
    return False


# (study command, the result folder, params groups of the first result, of the rerun)
CELL = ["--width", "8", "--noise", "0.2"]
CASES = {
    "corrupt": (["corrupt", "--noise", "0.2"], "artifacts/labels/n0.2", {"noise": {"kind": "symmetric", "label": 0.2, "seed": 0}},
                {"noise": {"kind": "symmetric", "label": 0.2, "seed": 1}}),
    "hyperplanes": (["hyperplanes", *CELL], "artifacts/studies/hyperplanes/mlp_w8-n0.2-r0", {"hyperplanes": {"with_linear": True, "checkpoints": "final"}},
                    {"hyperplanes": {"with_linear": True, "checkpoints": "all"}}),
    "interpolation": (["interpolation", *CELL], "artifacts/studies/interpolation/mlp_w8-n0.2-r0", {"interpolation": {"points": 5}},
                      {"interpolation": {"points": 3}}),
    "smoothness (2 shards)": (["smoothness", *CELL], "artifacts/studies/smoothness/mlp_w8-n0.2-r0", {"smoothness": {"sample_seed": 0, "shards": 2}},
                              {"smoothness": {"sample_seed": 1, "shards": 2}}),
    "regions": (["regions", *CELL], "artifacts/studies/regions/mlp_w8-n0.2-r0", {"regions": {"path_seed": 1}}, {"regions": {"path_seed": 2}}),
    "reinit": (["reinit", *CELL], "artifacts/studies/reinit/mlp_w8-n0.2-r0", {"reinit": {"rand_seed": 0}}, {"reinit": {"rand_seed": 1}}),
    "curvature (surface)": (["curvature", *CELL], "artifacts/studies/curvature/mlp_w8-n0.2-r0",
                            {"curvature": {"enabled": True, "samples": 48, "top_k": 1, "trace_probes": 2, "density_steps": 4, "seed": 0,
                                           "surface": {"resolution": 3, "line": 3, "shards": 2}}},
                            {"curvature": {"enabled": True, "samples": 48, "top_k": 1, "trace_probes": 2, "density_steps": 4, "seed": 1,
                                           "surface": {"resolution": 3, "line": 3, "shards": 2}}}),
    "barriers (grid)": (["barriers"], "artifacts/studies/barriers", {"interpolation": {"points": 5}}, {"interpolation": {"points": 3}}),
    "mli (grid)": (["mli"], "artifacts/studies/mli", {"mli": {"points": 5}}, {"mli": {"points": 3}}),
}


def _params(root: Path, groups: dict) -> None:
    write_params(root, **STUDY_RECIPE[0], **groups)


@pytest.mark.parametrize("case", list(CASES))
def test_a_crash_at_any_write_leaves_the_previous_result_whole(case, trained_projects, tmp_path, monkeypatch):
    args, relative, first, rerun = CASES[case]
    root = trained_projects.copy(tmp_path / "project", *STUDY_RECIPE)
    monkeypatch.chdir(root)
    folder = root / relative
    _params(root, first)
    ok(*args)
    before = snapshot(folder)
    assert "summary.json" in before
    _params(root, rerun)
    crashes = 0
    while run_crashing_at(monkeypatch, crashes + 1, args):
        crashes += 1
        assert snapshot(folder) == before, f"crash at write {crashes}"
        assert not list((root / ".netgeom/staging/results").rglob("*.building")), "a crashed build is cleared"
    after = snapshot(folder)
    assert crashes >= 2 and "summary.json" in after and after != before


def test_a_build_killed_midway_is_said_and_started_over(tmp_path, capsys):
    target, staging, trash = tmp_path / "result", tmp_path / "staging" / "result.building", tmp_path / "staging" / "result.replaced"
    with io.building_dir(target, staging, trash) as out:
        (out / "a.json").write_text("1")
    staging.mkdir(parents=True)
    (staging / "half.json").write_text("left by a killed process")
    with io.building_dir(target, staging, trash) as out:
        assert list(out.iterdir()) == []  # nothing of the killed build is carried over
        (out / "b.json").write_text("2")
    assert "an earlier run stopped before its result was complete" in capsys.readouterr().err
    assert sorted(p.name for p in target.iterdir()) == ["b.json"] and not staging.exists() and not trash.exists()


def test_switching_a_study_off_leaves_only_the_summary_that_says_so(trained_projects, tmp_path, monkeypatch):
    args, relative, enabled, _ = CASES["curvature (surface)"]
    root = trained_projects.copy(tmp_path / "project", *STUDY_RECIPE)
    monkeypatch.chdir(root)
    _params(root, enabled)
    ok(*args)
    assert {"curvature.parquet", "surface.json"} <= set(snapshot(root / relative))
    _params(root, {"curvature": {**enabled["curvature"], "enabled": False}})
    assert "skipped" in ok(*args)
    assert list(snapshot(root / relative)) == ["summary.json"]  # no earlier result beside it


def test_a_shard_of_other_settings_is_never_merged_into_the_summary(trained_projects, tmp_path, monkeypatch):
    """`--shard i/n` workers share the result folder: a shard left there by other settings is
    cleared, not merged with the new ones."""
    import pandas as pd

    root = trained_projects.copy(tmp_path / "project", *STUDY_RECIPE)
    monkeypatch.chdir(root)
    folder = root / "artifacts/studies/smoothness/mlp_w8-n0.2-r0"
    _params(root, {"smoothness": {"samples": 40, "shards": 2}})
    ok("smoothness", *CELL, "--shard", "0/2")
    ok("smoothness", *CELL, "--shard", "1/2")
    assert (folder / "summary.json").exists()
    _params(root, {"smoothness": {"samples": 48, "shards": 2}})
    assert "the summary follows once every shard is there" in ok("smoothness", *CELL, "--shard", "0/2")
    assert sorted(p.name for p in folder.glob("*.parquet")) == ["shard-000-of-002.parquet"] and not (folder / "summary.json").exists()
    ok("smoothness", *CELL, "--shard", "1/2")
    merged = pd.concat([pd.read_parquet(p) for p in sorted(folder.glob("shard-*.parquet"))])
    assert merged["sample_id"].nunique() == 48
