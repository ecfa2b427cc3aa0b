"""Where every artifact lives: the only module that builds artifact paths.

Everything a stage writes (artifacts/, reports/, the staging area) hangs off the stage's working
directory: in a queued DVC experiment that is the executor's own copy of the repository, so two
experiments never write into each other's outputs. The MLflow store is the exception: it lives
under `DVC_ROOT`, which DVC points at the parent repository in queued experiments on purpose, so
every experiment logs into the one store the UI compares.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from netgeom.errors import NetgeomError
from netgeom.io import building_dir


def project_root() -> Path:
    """The stage's working directory (never `DVC_ROOT`: see the module docstring)."""
    return Path.cwd().resolve()


def store_root(root: Path) -> Path:
    """Where mlruns/ lives: the parent repository in a queued experiment, else `root`."""
    return Path(os.environ.get("DVC_ROOT") or root).resolve()


RUN_FILE = "run.json"  # written last into a run folder: its presence marks the run complete


def is_inside(path: Path, root: Path) -> bool:
    """Whether `path`, resolved (symlinks and `..` followed), is `root` or lies below it."""
    resolved, base = Path(path).resolve(), Path(root).resolve()
    return resolved == base or base in resolved.parents


def in_dependency(path: Path, folder: Path, key: str, stages: str) -> Path:
    """`path` (named by the setting `key`) unless it lies outside `folder`, the DVC dependency of
    `stages`: the setting holds only a file's path, so a file replaced anywhere else would leave
    their results stale, unseen by DVC."""
    if not is_inside(path, folder):
        raise NetgeomError(
            key, f"{path} is not under {folder.name}/: put weight files in {folder.name}/, the {stages}' DVC dependency, so that replacing one re-runs them"
        )
    return path


def check_inside(path: Path, root: Path) -> Path:
    """`path` unless it resolves (through a symlink) outside `root`: the project reads and writes
    its own files only, whatever a link in artifacts/ points to."""
    if not is_inside(path, root):
        raise NetgeomError(str(path), f"leads outside the project (to {Path(path).resolve()}); replace the link with the folder itself")
    return Path(path)


def run_folders(root: Path, project: Path | None = None) -> list[Path]:
    """The complete run folders directly under `root` (those holding RUN_FILE), sorted; one
    leading outside `project` (default: root's grandparent, the project of artifacts/runs) is refused."""
    found = sorted(folder for folder in Path(root).glob("*") if (folder / RUN_FILE).exists())
    for folder in found:
        check_inside(folder, project or Path(root).resolve().parent.parent)
    return found


# Every name and path below also takes DVC templates (`"${item.noise}"`) in place of values:
# dvc_yaml.py builds dvc.yaml's paths with these same functions (on `IN_DVC_YAML`), so the paths a
# stage writes and the outs DVC records cannot drift apart.
DvcTemplate = str  # a DVC template such as "${item.noise}", standing for a value


def noise_tag(noise: float | DvcTemplate) -> str:
    """0.2 -> 'n0.2', 0 -> 'n0.0': Python's float text, which is also how DVC renders a YAML
    float such as `0.0` in `${item.noise}`, so dvc.yaml and this module agree on every path."""
    return f"n{noise if isinstance(noise, str) else float(noise)}"


def run_name(arch: str, width: int | DvcTemplate, noise: float | DvcTemplate, replicate: int | DvcTemplate) -> str:
    """A readable grid-cell name, e.g. `mlp_w64-n0.2-r0` (the full params hash lives inside)."""
    return f"{arch}_w{width}-{noise_tag(noise)}-r{replicate}"


def star_source_name(arch: str, width: int | DvcTemplate, noise: float | DvcTemplate, seed: int | DvcTemplate) -> str:
    """A source model of the star study (an anchor or a held-out model), named by its seed."""
    return f"{arch}_w{width}-{noise_tag(noise)}-s{seed}"


def star_name(arch: str, width: int | DvcTemplate, noise: float | DvcTemplate, count: int | DvcTemplate) -> str:
    """A star model, named by the number of anchors it was trained against."""
    return f"{arch}_w{width}-{noise_tag(noise)}-star{count}"


@dataclass(frozen=True)
class Layout:
    root: Path
    store: Path | None = None  # mlruns/'s parent; None = `root`

    @classmethod
    def here(cls) -> Layout:
        root = project_root()
        return cls(root, store_root(root))

    # raw data (tracked by data.dvc; nothing derived goes here)
    @property
    def data(self) -> Path:
        return self.root / "data"

    def data_root(self, setting: str = "data") -> Path:
        """`data.root` from params, relative to the project root."""
        return self.root / setting

    @property
    def inits(self) -> Path:
        """Weight files the reinit study resets layers to (`reinit.inits_from`): the reinit
        stages' DVC dependency, so replacing a file there re-runs them."""
        return self.root / "inits"

    @property
    def pretrained(self) -> Path:
        """Weight files training starts from (`model.pretrained`): a DVC dependency of every
        training stage, so replacing a file there retrains (its path alone is the param)."""
        return self.root / "pretrained"

    def pretrained_file(self, named: str) -> Path:
        """`model.pretrained`'s file, which must lie under pretrained/ (see in_dependency)."""
        path = in_dependency(self.root / named, self.pretrained, "model.pretrained", "training stages")
        if not path.is_file():
            raise NetgeomError("model.pretrained", f"no such file: {path}")
        return path

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def splits_dir(self) -> Path:
        return self.artifacts / "splits"

    @property
    def split_file(self) -> Path:
        return self.splits_dir / "split.json"

    @property
    def labels_root(self) -> Path:
        return self.artifacts / "labels"

    def labels_dir(self, noise: float | DvcTemplate) -> Path:
        return self.labels_root / noise_tag(noise)

    def labels_file(self, noise: float) -> Path:
        return self.labels_dir(noise) / "labels.parquet"

    def labels_summary(self, noise: float) -> Path:
        return self.labels_dir(noise) / "summary.json"

    @property
    def runs_root(self) -> Path:
        return self.artifacts / "runs"

    def run_dir(self, run: str) -> Path:
        return self.runs_root / run

    def checkpoints_dir(self, run: str) -> Path:
        return self.run_dir(run) / "checkpoints"

    def history_file(self, run: str) -> Path:
        return self.run_dir(run) / "history.csv"

    def metrics_file(self, run: str) -> Path:
        return self.run_dir(run) / "metrics.json"

    @property
    def staging_root(self) -> Path:
        return self.root / ".netgeom" / "staging"

    def staging_dir(self, run: str) -> Path:
        """Where a run is built (checkpoints + optimizer/RNG state for resume) before it is moved
        whole into `run_dir`: DVC deletes a stage's outputs before re-running it, so crash-recovery
        state must live outside them, and a half-finished run never appears under artifacts/."""
        return self.staging_root / run

    def study_staging_dir(self, study: str, run: str) -> Path:
        """Where a study's finished shards wait until the whole result is there (smoothness,
        regions, the curvature surface): outside the stage's DVC outputs, which DVC deletes
        before re-running the stage, so a rerun after a crash finds the shards already done."""
        return self.staging_root / "studies" / study / run

    def finished_dir(self, run: str) -> Path:
        """A complete run, assembled beside its staging folder before it is published."""
        return self.staging_root / f"{run}.done"

    def assembling_dir(self, run: str) -> Path:
        """Where the complete run is assembled before one rename makes it `finished_dir`."""
        return self.staging_root / f"{run}.assembling"

    def replaced_dir(self, run: str) -> Path:
        """Where a previous run folder waits while the new one takes its place."""
        return self.staging_root / f"{run}.replaced"

    def building(self, target: Path) -> AbstractContextManager[Path]:
        """`with layout.building(folder) as out:` write a result folder of the project (under
        artifacts/ or reports/) into `out`; it replaces `folder` whole when the block ends
        (io.building_dir). Built under the staging root: outside every DVC output, on the same
        filesystem as the results."""
        base = self.staging_root / "results" / Path(target).relative_to(self.root)
        return building_dir(target, base.with_name(f"{base.name}.building"), base.with_name(f"{base.name}.replaced"))

    @property
    def star_root(self) -> Path:
        return self.artifacts / "star"

    @property
    def star_sources_root(self) -> Path:
        return self.star_root / "sources"

    @property
    def stars_root(self) -> Path:
        return self.star_root / "stars"

    def star_source_dir(self, run: str) -> Path:
        """A source model of the star study (an anchor or a held-out model), apart from the grid."""
        return self.star_sources_root / run

    def star_dir(self, run: str) -> Path:
        return self.stars_root / run

    @property
    def studies_root(self) -> Path:
        return self.artifacts / "studies"

    def study_root(self, study: str) -> Path:
        return self.studies_root / study

    def study_dir(self, study: str, run: str) -> Path:
        return self.study_root(study) / run

    def model_study_dir(self, study: str, name: str) -> Path:
        """A study of a model from outside the pipeline (`netgeom hyperplanes-model`,
        `reinit-model`): beside artifacts/studies, not in it, so that no stage depends on it and
        writing one leaves the report up to date."""
        return self.artifacts / "models" / study / name

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def report_tables(self) -> Path:
        return self.reports / "tables"

    @property
    def report_figures(self) -> Path:
        return self.reports / "figures"

    @property
    def report_summary(self) -> Path:
        return self.reports / "summary.json"

    @property
    def mlruns(self) -> Path:
        return (self.store or self.root) / "mlruns"

    @property
    def mlflow_db(self) -> Path:
        return self.mlruns / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlruns / "artifacts"

    @property
    def mlflow_lock(self) -> Path:
        """Serialises writes to the SQLite store (and its creation) across processes."""
        return self.mlruns / ".netgeom.lock"


# dvc.yaml's view of the same paths: relative to the repository root (DVC runs every stage there).
IN_DVC_YAML = Layout(Path("."))
