"""Every input a user can hand netgeom, made hostile: each is refused in one line naming the file
or key (exit 2), nothing runs that the input carries, and nothing outside the project is read
(an audit hook records every file Python opens while the command runs)."""

from __future__ import annotations

import json
import pickle
import shutil
import sqlite3
import struct
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import ok, refused, write_params

RUN = "mlp_w16-n0.2-r0"
_opened: list[str] | None = None


def _audit(event: str, args) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], (str, bytes, Path)):
        _opened.append(str(args[0] if not isinstance(args[0], bytes) else args[0].decode(errors="replace")))


sys.addaudithook(_audit)  # process-wide and permanent: it records only inside `opened_files`


@contextmanager
def opened_files():
    global _opened
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


def outside(paths: list[str], project: Path, sandbox: Path) -> list[str]:
    """The files under `sandbox` (this test's temporary folder) but outside `project` that were opened."""
    project, sandbox = project.resolve(), sandbox.resolve()
    found = []
    for path in paths:
        resolved = Path(path).resolve()
        if sandbox in resolved.parents and project not in resolved.parents and resolved != project:
            found.append(str(resolved))
    return found


SECURE_RECIPE = ({"train": {"epochs": 2, "checkpoints": {"epochs": [1]}}}, [("split",), ("corrupt",), ("train",)])


@pytest.fixture
def project_copy(trained_projects, tmp_path, monkeypatch):
    """A fresh copy of a trained project per test (cwd), beside an `outside` folder."""
    root = trained_projects.copy(tmp_path / "project", *SECURE_RECIPE)
    assert (root / "artifacts" / "runs" / RUN).exists()
    monkeypatch.chdir(root)
    return root


def run_folder(root: Path) -> Path:
    return root / "artifacts" / "runs" / RUN


def rewrite_header(path: Path, change) -> None:
    """Rewrite a safetensors file's JSON header with `change(header)` (the data left as it was)."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    change(header)
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[8 + n :])


def first_tensor(header: dict) -> dict:
    return next(v for k, v in header.items() if k != "__metadata__")


CHECKPOINT_ATTACKS = {
    "header length 2^63": lambda p: p.write_bytes(struct.pack("<Q", 2**63) + p.read_bytes()[8:]),
    "bogus dtype": lambda p: rewrite_header(p, lambda h: first_tensor(h).update(dtype="X99")),
    "huge shape": lambda p: rewrite_header(p, lambda h: first_tensor(h).update(shape=[2**40, 2**40])),
    "offsets past the end": lambda p: rewrite_header(p, lambda h: first_tensor(h).update(data_offsets=[0, 2**40])),
}


@pytest.mark.parametrize("attack", list(CHECKPOINT_ATTACKS))
def test_a_hostile_safetensors_checkpoint_is_one_line_naming_it(project_copy, attack):
    checkpoint = run_folder(project_copy) / "checkpoints" / "e0002.safetensors"
    CHECKPOINT_ATTACKS[attack](checkpoint)
    line = refused("curve", f"{RUN}@init", RUN, "--quiet", key=str(checkpoint))
    assert "not a valid safetensors file" in line


@pytest.mark.parametrize("name", ["checkpoints/e0002.json", "run.json", "metrics.json"])
def test_json_nested_200000_levels_deep_is_one_line_naming_it(project_copy, name):
    target = run_folder(project_copy) / name
    target.write_text("[" * 200_000 + "]" * 200_000)
    line = refused("curve", f"{RUN}@init", RUN, "--quiet", key=str(target))
    assert "nested too deeply" in line


class _RunsCode:
    def __reduce__(self):
        return (Path.touch, (Path("PWNED"),))


def test_a_pickle_with_code_as_the_pretrained_model_is_refused_unrun(project_copy):
    weights = project_copy / "pretrained" / "model.pt"
    weights.parent.mkdir(exist_ok=True)
    weights.write_bytes(pickle.dumps({"layers.1.weight": _RunsCode()}))
    write_params(project_copy, model={"pretrained": str(weights)}, train={"epochs": 1, "checkpoints": {"epochs": []}})
    line = refused("train", "--fresh", key="model.pretrained")
    assert "could run code" in line and not (project_copy / "PWNED").exists()


@pytest.mark.parametrize("spec", ["../../outside@init", "/etc@init", "..", "runs/../../x"])
def test_run_specs_that_leave_the_runs_folder_are_refused(project_copy, spec):
    with opened_files() as seen:
        refused("curve", spec, RUN, "--quiet", key="run")
    assert outside(seen, project_copy, project_copy.parent) == []


def test_a_run_folder_linked_from_outside_the_project_is_refused_before_reading_it(project_copy):
    elsewhere = project_copy.parent / "outside" / "mlp_w99-n0.2-r0"
    shutil.copytree(run_folder(project_copy), elsewhere)
    (project_copy / "artifacts" / "runs" / "mlp_w99-n0.2-r0").symlink_to(elsewhere, target_is_directory=True)
    with opened_files() as seen:
        refused("curve", "mlp_w99-n0.2-r0@init", RUN, "--quiet", key="mlp_w99-n0.2-r0")
        refused("report", "--quiet", key="mlp_w99-n0.2-r0")
    assert outside(seen, project_copy, project_copy.parent) == []


@pytest.mark.parametrize("content", ["root:x:0:0:root:/root:/bin/bash\n", "- a\n- list\n", "!!python/object/apply:os.system ['touch PWNED']\n"])
def test_a_preset_that_is_no_mapping_of_overrides_is_one_line(project_copy, content):
    preset = project_copy.parent / "preset.yaml"
    preset.write_text(content)
    refused("preset", str(preset), key="preset" if "PWNED" not in content else "params")
    assert not (project_copy / "PWNED").exists()


def test_preset_of_a_missing_file_or_a_folder(project_copy):
    refused("preset", "/nonexistent/preset.yaml", key="preset")
    refused("preset", str(project_copy), key="preset")


def test_huge_params_files_are_refused_before_parsing(project_copy):
    """A 50 MB params file, or one with millions of keys, would take minutes to parse: refused by
    size first (the limit is 1 MB; a params file is a few KB)."""
    big = project_copy / "params.yaml"
    with big.open("a") as handle:
        handle.write("".join(f"k{i}: {i}\n" for i in range(200_000)))
    assert big.stat().st_size > 1 << 20
    refused("check", key="params")
    preset = project_copy.parent / "big_preset.yaml"
    shutil.copy(big, preset)
    refused("preset", str(preset), key="params")


STORE_DAMAGE = {
    "truncated": lambda db: db.write_bytes(db.read_bytes()[: len(db.read_bytes()) // 3]),
    "header damaged": lambda db: db.write_bytes(b"\x00" * 100 + db.read_bytes()[100:]),
    "zeroed pages": lambda db: db.write_bytes(db.read_bytes()[:4096] + b"\x00" * (len(db.read_bytes()) - 4096)),
}


@pytest.mark.parametrize("damage", list(STORE_DAMAGE))
def test_a_damaged_mlflow_store_is_one_line_naming_it(project_copy, monkeypatch, damage):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_params(project_copy, mlflow={"enabled": True, "experiment": "sec"}, train={"epochs": 2, "checkpoints": {"epochs": [1]}})
    ok("mlflow", "sync")
    db = project_copy / "mlruns" / "mlflow.db"
    with sqlite3.connect(db) as connection:  # everything in the main file, so damage reaches it
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    STORE_DAMAGE[damage](db)
    line = refused("mlflow", "sync", key=str(db))
    assert "not a usable MLflow store" in line


def test_a_mistyped_run_name_lists_the_closest_runs_instead_of_advising_a_rerun(project_copy):
    """`netgeom curve` said '... is missing; run dvc repro first' to a typo (open_run in a
    notebook already listed the close names); both now share one message."""
    line = refused("curve", RUN[:-3] + "@init", RUN, "--quiet", key="run")
    assert f"no finished run {RUN[:-3]!r}" in line and f"runs there: {RUN}" in line and "dvc repro" not in line
