"""Where a result came from: the git commit of the code that produced it."""

from __future__ import annotations

import hashlib
import json
import subprocess
from functools import cache

# The DVC variables that say which stage and experiment produced a result (set by `dvc repro` and
# `dvc exp run` in every stage's environment), by the name they carry in run.json and MLflow.
DVC_ENV = {"stage": "DVC_STAGE", "exp_name": "DVC_EXP_NAME", "baseline_rev": "DVC_EXP_BASELINE_REV"}


def run_digest(info: dict) -> str:
    """One training instance: its run.json (params hash, data, start and end times). A retraining
    with the same params (after a code change, or on a GPU) is another instance."""
    return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:16]


@cache
def git_commit(root: str) -> str:
    """HEAD of the repository at `root`, 'unknown' outside git. (Not marked dirty: during
    `dvc repro` dvc.lock itself is always modified.)"""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def dvc_md5(dvc_file) -> str:
    """The md5 DVC recorded for the folder a `.dvc` file tracks ('' when there is none or it is
    unreadable: provenance, never a reason to stop a run)."""
    import yaml

    try:
        outs = (yaml.safe_load(open(dvc_file)) or {}).get("outs") or [{}]
        return str(outs[0].get("md5", ""))
    except (OSError, yaml.YAMLError, AttributeError):
        return ""
