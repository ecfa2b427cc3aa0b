"""`netgeom repro`: DVC's pipeline, stale stages run in parallel on local cores or a Ray cluster.

    from netgeom.repro import repro
    result = repro(["train"], jobs=2)          # like `dvc repro train`, two stages at a time
    result.exit_code, result.failed            # 0 / 1 (130 when interrupted), failed Outcomes

The plan is DVC's own (`dvc.repo.Repo`, its index graph, `dvc repro`'s planning functions), and
each stage is recorded exactly as `dvc repro` records it: deps and outputs saved, the run cache
filled, outputs committed to the cache, the stage's entry written to dvc.lock (in the order a
sequential `dvc repro` would write it). A stage already in the run cache (or whose outputs dvc.lock
still finds in the cache) is checked out, not run. Only the stage commands run in parallel; every
DVC step happens in this process, one at a time, under DVC's repository lock. Each stage's stdout
and stderr go to `.netgeom/logs/<stage>.log` under the repository root.

Jobs: `jobs` stages at a time (default: the usable cores // `execution.threads` of params.yaml).
Order: ready stages start longest-remaining-path first, from the durations of the last run
(.netgeom/durations.json); without one, DVC's plan order with deeper chains first.
dvc.lock: entries are written in batches (every couple of seconds, whenever nothing runs, at the
end, and on Ctrl-C), each time the whole file renamed into place; a scheduler killed with SIGKILL may leave the last batch out of dvc.lock,
but those stages' outputs are in the cache and the run cache, so a rerun restores them unrun.
Interrupt (SIGINT/SIGTERM): every running command's process group is stopped, nothing of theirs
is recorded, the finished stages are; exit code 130.

Ray (`backend="ray"`, the optional extra `pip install 'netgeom[ray]'`):

- The cluster is RAY_ADDRESS (e.g. `10.0.0.5:6379`, or `ray://head:10001` for Ray Client), else
  `execution.address` from params.yaml, else a local Ray instance started for the run and shut
  down after it (Ray >= 2.5x turns token authentication on for such a local instance and keeps
  its token in ~/.ray/auth_token; set RAY_AUTH_MODE to choose). An unreachable address fails
  within ~30 s naming the key (a TCP check, then a throwaway Ray client with a 25 s limit).
- Each stage is one Ray task (`max_retries=0`) with `num_cpus = execution.threads` and
  `num_gpus = 1` when the stage's device is cuda (`execution.device` of the params.yaml in the
  stage's wdir, or a stage's own `meta: {device: cuda}`; missing means cpu). Without `jobs`,
  every ready stage is submitted and Ray places them as the cluster's resources allow.
- The task runs the stage's command in the stage's wdir, on whichever node gets it. The
  repository must therefore sit on a filesystem every node sees at the same path (NFS, Lustre,
  a shared volume), and the Python environment with netgeom too (its `bin` is on the PATH the
  task receives). The task's environment is the Ray worker's own (so CUDA_VISIBLE_DEVICES is
  Ray's GPU assignment) plus, from the scheduler: PATH, VIRTUAL_ENV, PYTHONPATH, CI, SHELL and
  every DVC_*, NETGEOM_*, MLFLOW_* and GIT_* variable (DVC_ROOT and DVC_STAGE among them).
- MLflow: the default store is SQLite under mlruns/ in the repository; on one machine the
  stages share it through an inter-process lock, but SQLite over a network filesystem is not
  safe across nodes. On a multi-node cluster run a tracking server and point the scheduler at it,
  e.g. `mlflow server --backend-store-uri postgresql://... --artifacts-destination s3://...
  --host 0.0.0.0` and `MLFLOW_TRACKING_URI=http://tracking-host:5000 netgeom repro --backend ray`;
  the variable is forwarded to every task, and an explicit MLFLOW_TRACKING_URI wins over the
  default store.
- DVC's bookkeeping (dvc.lock, the cache) stays in the scheduler process: the nodes only write
  the stage outputs into the shared workspace.

Frozen stages, imports and stages without a command are handled inline by DVC itself. Persistent
outputs are kept (unprotected), as `dvc repro` keeps them.
"""

from netgeom.repro.scheduler import Outcome, ReproResult, default_jobs, repro

__all__ = ["Outcome", "ReproResult", "default_jobs", "repro"]
