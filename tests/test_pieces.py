"""Sharded studies (smoothness, regions) survive a crash: finished shards wait in the staging
folder, outside the DVC outputs, and a rerun computes only the missing ones of the same identity."""

from __future__ import annotations

import importlib
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from netgeom.cli import app
from netgeom.layout import Layout
from netgeom.stages import pieces
from tests.conftest import ok, write_params

RUN = "mlp_w16-n0.2-r0"
STUDIES = {  # study: (the shard function `run` hands to run_sharded, settings with a side file per shard)
    "smoothness": ("_per_sample_shard", {"shards": 3}),
    "regions": ("compute_shard", {"shards": 3, "per_region": True}),
}


@pytest.fixture
def trained(trained_projects, tmp_path, monkeypatch):
    root = trained_projects.copy(tmp_path / "project", {}, [("split",), ("corrupt",), ("train",)])
    monkeypatch.chdir(root)
    return root


def outputs(folder) -> dict:
    """Every file of a study's output folder: parquet as tables, the rest as bytes."""
    return {p.name: pd.read_parquet(p) if p.suffix == ".parquet" else p.read_bytes() for p in sorted(folder.iterdir())}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name, value in a.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(value, b[name], check_exact=True)
        else:
            assert value == b[name], name


def crash_after(monkeypatch, module, attr: str, n: int) -> list[int]:
    """The study's shard function computes `n` shards, then the process dies; the indices done."""
    real, done = getattr(module, attr), []

    def dying(params, layout, cell, place, index, count):
        if len(done) == n:
            raise KeyboardInterrupt
        table = real(params, layout, cell, place, index, count)
        done.append(index)
        return table

    monkeypatch.setattr(module, attr, dying)
    return done


def counting(monkeypatch, module, attr: str) -> list[int]:
    real, computed = getattr(module, attr), []

    def counted(params, layout, cell, place, index, count):
        computed.append(index)
        return real(params, layout, cell, place, index, count)

    monkeypatch.setattr(module, attr, counted)
    return computed


def crashed_midway(study: str, root, monkeypatch):
    """The uninterrupted outputs, then a run killed after two of three shards, its outputs
    deleted as DVC deletes them before it re-runs a stage."""

    module = importlib.import_module(f"netgeom.stages.{study}")
    attr, settings = STUDIES[study]
    layout = Layout(root)
    folder, staging = layout.study_dir(study, RUN), layout.study_staging_dir(study, RUN)
    write_params(root, **{study: settings})
    ok(study)
    uninterrupted = outputs(folder)
    assert not staging.exists()  # gone once every shard is in the outputs
    shutil.rmtree(folder)
    with monkeypatch.context() as patch:
        crash_after(patch, module, attr, 2)
        try:
            assert CliRunner().invoke(app, [study]).exit_code != 0
        except KeyboardInterrupt:
            pass  # the process dies here
    assert sorted(p.name for p in staging.glob("shard-*.parquet")) == ["shard-000-of-003.parquet", "shard-001-of-003.parquet"]
    shutil.rmtree(folder, ignore_errors=True)
    return module, attr, folder, staging, uninterrupted


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_a_study_killed_after_two_shards_reruns_only_the_third_to_the_uninterrupted_result(study, trained, monkeypatch):
    module, attr, folder, staging, uninterrupted = crashed_midway(study, trained, monkeypatch)
    computed = counting(monkeypatch, module, attr)
    out = ok(study)
    assert f"{study}: {RUN}: 2 of 3 shards found from an earlier run; computing the other 1" in out  # the rerun says so
    assert computed == [2] and not staging.exists()
    assert_same(uninterrupted, outputs(folder))  # the side files (regions-*.parquet) and summary.json too


@pytest.mark.parametrize("study, change", [("smoothness", {"sample_seed": 5}), ("regions", {"path_seed": 5})])
def test_staged_shards_of_another_setting_are_discarded(study, change, trained, monkeypatch):
    module, attr, folder, staging, _ = crashed_midway(study, trained, monkeypatch)
    write_params(trained, **{study: {**STUDIES[study][1], **change}})
    computed = counting(monkeypatch, module, attr)
    out = ok(study)
    assert computed == [0, 1, 2] and "found from an earlier run" not in out
    fresh = outputs(folder)
    shutil.rmtree(folder)
    ok(study)  # the same setting from scratch: the same result
    assert_same(fresh, outputs(folder))


def test_staged_shards_of_another_cpu_thread_count_are_discarded(trained, monkeypatch):
    """Threads split a matmul's sums differently (they are in the run identity and the stages'
    DVC params): shards staged with one thread must not merge with shards made with two. (The run
    itself keeps its identity where it trained on a GPU, which has no thread count: stand in for
    that by letting the study accept it.)"""
    from netgeom import runs

    module, attr, _, _, _ = crashed_midway("smoothness", trained, monkeypatch)
    monkeypatch.setattr(runs, "check_trained_with", lambda *args: None)
    write_params(trained, smoothness=STUDIES["smoothness"][1], execution={"threads": 2, "device": "cpu", "deterministic": False})
    computed = counting(monkeypatch, module, attr)
    out = ok("smoothness")
    assert computed == [0, 1, 2] and "found from an earlier run" not in out


def test_a_write_cut_short_in_staging_never_reaches_the_outputs(trained, monkeypatch):
    """A kill inside the shard's atomic write leaves its temporary file in staging: the rerun
    must drop it, not publish it beside the result (it did: `.shard-...parquet.x.tmp`)."""
    module, attr, folder, staging, uninterrupted = crashed_midway("smoothness", trained, monkeypatch)
    (staging / ".shard-002-of-003.parquet.k1ll3d.tmp").write_bytes(b"PAR1 half a table")
    ok("smoothness")
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert_same(uninterrupted, outputs(folder))


def test_staged_shards_of_other_code_are_discarded(trained, monkeypatch):
    from netgeom.stages import study_common

    module, attr, _, _, _ = crashed_midway("smoothness", trained, monkeypatch)
    monkeypatch.setattr(study_common, "code_digest", lambda *modules: "an-edited-netgeom")
    computed = counting(monkeypatch, module, attr)
    ok("smoothness")
    assert computed == [0, 1, 2]


def test_keep_pieces_of_keeps_only_the_same_identity_and_starts_over_on_an_unreadable_manifest(tmp_path, capsys):
    folder = tmp_path / "staging"
    assert not pieces.keep_pieces_of(folder, {"run": "a"})  # new: nothing to keep
    (folder / "shard-000-of-002.parquet").write_bytes(b"piece")
    assert pieces.keep_pieces_of(folder, {"run": "a"}) and (folder / "shard-000-of-002.parquet").exists()
    assert not pieces.keep_pieces_of(folder, {"run": "b"}) and not (folder / "shard-000-of-002.parquet").exists()
    (folder / "shard-000-of-002.parquet").write_bytes(b"piece")
    assert capsys.readouterr().err == ""  # another identity is no fault: nothing said
    (folder / pieces.MANIFEST).write_text("{torn")
    assert not pieces.keep_pieces_of(folder, {"run": "b"})
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 1 and str(folder / pieces.MANIFEST) in said[0] and "computing its pieces again" in said[0]
    assert sorted(p.name for p in folder.iterdir()) == [pieces.MANIFEST]
    assert pieces.keep_pieces_of(folder, {"run": "b"})


def test_publish_pieces_copies_every_piece_but_the_manifest_and_removes_the_staging_folder(tmp_path):
    staging, folder = tmp_path / "staging", tmp_path / "out"
    pieces.keep_pieces_of(staging, {"run": "a"})
    for name in ("shard-000-of-001.parquet", "regions-000-of-001.parquet"):
        (staging / name).write_bytes(name.encode())
    pieces.publish_pieces(staging, folder)
    assert not staging.exists()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {n: n.encode() for n in ("shard-000-of-001.parquet", "regions-000-of-001.parquet")}
