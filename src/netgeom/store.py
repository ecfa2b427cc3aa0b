"""The project's MLflow store as a file: where it is, its lock, creating it whole, checking it.

Everything here but the one-off creation of the store uses the standard library (sqlite3,
filelock): `netgeom check` and every stage that finds the store ready import no mlflow (a second
of CPU per process). `netgeom.tracking` does the logging.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from netgeom.errors import NetgeomError
from netgeom.layout import Layout
from netgeom.progress import note


def tracking_uri(layout: Layout) -> str:
    """`MLFLOW_TRACKING_URI` (a server) wins; otherwise the project's SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{layout.mlflow_db}"


# Writers hold the lock for seconds (one training's run and models); after LOCK_PATIENCE_S a
# waiter says whom it waits for, after NETGEOM_LOCK_TIMEOUT (default LOCK_TIMEOUT_S) it gives up.
LOCK_PATIENCE_S = 5.0
LOCK_TIMEOUT_S = 600.0


def lock_timeout() -> float:
    try:
        return float(os.environ.get("NETGEOM_LOCK_TIMEOUT", LOCK_TIMEOUT_S))
    except ValueError:
        raise NetgeomError("NETGEOM_LOCK_TIMEOUT", f"must be a number of seconds, got {os.environ['NETGEOM_LOCK_TIMEOUT']!r}") from None


def _owner_file(layout: Layout) -> Path:
    return layout.mlflow_lock.with_name(layout.mlflow_lock.name + ".owner")


def lock_holder(layout: Layout) -> str:
    """Who holds the store lock, as its holder wrote it ('an unknown process' if it did not)."""
    try:
        return _owner_file(layout).read_text().strip() or "an unknown process"
    except OSError:
        return "an unknown process"


@contextmanager
def store_lock(layout: Layout) -> Iterator[None]:
    """Exclusive access to the store for this process (released by the OS if it dies). Waiting
    says so after a few seconds and ends in one line naming the holder after `lock_timeout()`.

    Local SQLite store: every write holds it (SQLite is one writer at a time, and a half-written
    run must not be judged dead by another writer). Tracking server: the server serialises its
    own writes; what still needs the lock is netgeom's find-or-create of a run (two writers of
    the same training would both find none and log it twice). The lock file is mlruns/.lock in
    the project, which every node sees on the shared filesystem (flock, which NFS clients map
    to POSIX locks), so writers on different nodes exclude each other through it."""
    layout.mlruns.mkdir(parents=True, exist_ok=True)
    lock, limit = FileLock(str(layout.mlflow_lock)), lock_timeout()
    try:
        lock.acquire(timeout=min(LOCK_PATIENCE_S, limit))
    except Timeout:
        note(f"waiting for the MLflow store lock {layout.mlflow_lock}, held by {lock_holder(layout)}")
        try:
            lock.acquire(timeout=max(limit - LOCK_PATIENCE_S, 0.0))
        except Timeout:
            raise NetgeomError(
                str(layout.mlflow_lock),
                f"held by {lock_holder(layout)} for over {limit:.0f} s; stop that process (its writes are atomic) or raise NETGEOM_LOCK_TIMEOUT",
            ) from None
    try:
        _owner_file(layout).write_text(f"pid {os.getpid()} ({' '.join(sys.argv)[:120]})\n")
        yield
    finally:
        lock.release()


def is_local_store(layout: Layout) -> bool:
    """True for the project's SQLite file; False when MLFLOW_TRACKING_URI names a server."""
    return tracking_uri(layout) == f"sqlite:///{layout.mlflow_db}"


def ensure_store(layout: Layout) -> None:
    """Create the SQLite store if it does not exist, completely or not at all; refuse a corrupt
    one in one line. Call it holding `store_lock`."""
    if not is_local_store(layout):
        return
    db = layout.mlflow_db
    if db.exists():
        _check_store(db)
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for stale in db.parent.glob(f".{db.name}.*.tmp"):  # a killed creation's (creators hold the lock)
        stale.unlink(missing_ok=True)
    tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
    uri = f"sqlite:///{tmp}"
    try:
        SqlAlchemyStore(uri, layout.mlflow_artifacts.as_uri())  # runs every schema migration
        _forget_engine(uri)
        os.replace(tmp, db)
    finally:
        tmp.unlink(missing_ok=True)
    _forget_engine(f"sqlite:///{db}")  # an engine cached for a store that was replaced underneath


def _forget_engine(uri: str) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engine = SqlAlchemyStore._engine_map.pop(uri, None)
    if engine is not None:
        engine.dispose()


def _check_store(db: Path) -> None:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
            if connection.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("integrity check failed")
            connection.execute("SELECT version_num FROM alembic_version").fetchone()
            connection.execute("SELECT count(*) FROM runs").fetchone()
    except sqlite3.Error as exc:
        raise NetgeomError(
            str(db), f"is not a usable MLflow store ({exc}); move it away and run `netgeom mlflow sync` to rebuild it from artifacts/"
        ) from None


def experiment_ready(layout: Layout, experiment: str) -> bool:
    """True when the local store exists and holds `experiment` (active), read with sqlite3 alone;
    False for a tracking server or a store that still needs mlflow to set it up."""
    if not is_local_store(layout) or not layout.mlflow_db.exists():
        return False
    _check_store(layout.mlflow_db)
    with sqlite3.connect(f"file:{layout.mlflow_db}?mode=ro", uri=True) as connection:
        row = connection.execute(
            "SELECT 1 FROM experiments WHERE name = ? AND lifecycle_stage = 'active'", (experiment,)
        ).fetchone()
    return row is not None
