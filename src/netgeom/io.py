"""File I/O at the edges: atomic writes, folder publication, and readers that fail in one line.

Writes: a temporary file beside the target, fsync, rename; a crash leaves the old file or the
new one, never half of one. Folders are built aside and published by rename (`publish_dir`).
Reads: a missing or corrupt file (JSON, Parquet, CSV) raises `NetgeomError` naming the file, so
every command reports it as one line with exit code 2 instead of a parser's traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netgeom.errors import NetgeomError

if TYPE_CHECKING:  # numpy and pandas are imported where used: validating params needs neither
    import numpy as np


_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK  # what an ordinary open() would give; mkstemp and safetensors use 0600


# `atomic_path` writes `.<name>.<random>.tmp` beside the target: hidden, and never a result name.
_TMP_PREFIX, _TMP_SUFFIX = ".", ".tmp"


def is_unfinished_write(path: Path) -> bool:
    """A temporary file `atomic_path` left behind when its process was killed mid-write: never a
    result, whatever it holds."""
    return path.name.startswith(_TMP_PREFIX) and path.name.endswith(_TMP_SUFFIX)


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces the target."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{target.name}.", suffix=_TMP_SUFFIX, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # The writer may have recreated the file (safetensors does), so the mode is set after it.
        os.chmod(tmp_path, FILE_MODE)
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write(target: str | Path, write: Callable[[Path], Any]) -> Path:
    with atomic_path(target) as tmp:
        write(tmp)
    return Path(target)


def atomic_write_text(target: str | Path, text: str) -> Path:
    return atomic_write(target, lambda p: p.write_text(text))


def json_text(payload: Any) -> str:
    return json.dumps(payload, indent=2, sort_keys=True, default=_jsonable) + "\n"


def atomic_write_json(target: str | Path, payload: Any) -> Path:
    return atomic_write_text(target, json_text(payload))


def atomic_save_npy(target: str | Path, array: np.ndarray) -> Path:
    import numpy as np

    def write(path: Path) -> None:
        with open(path, "wb") as handle:
            np.save(handle, array, allow_pickle=False)

    return atomic_write(target, write)


def atomic_write_parquet(target: str | Path, frame) -> Path:
    return atomic_write(target, lambda p: frame.to_parquet(p, index=False))


def atomic_write_csv(target: str | Path, frame) -> Path:
    return atomic_write(target, lambda p: frame.to_csv(p, index=False))


TABLE_SUFFIXES = (".csv", ".parquet")


def check_table_path(path: str | Path, key: str = "out") -> Path:
    """`path` if it names a .csv or .parquet file, else NetgeomError(key) (checked before any work)."""
    path = Path(path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise NetgeomError(key, f"{path}: the file name must end in {' or '.join(TABLE_SUFFIXES)}")
    if path.is_dir():
        raise NetgeomError(key, f"{path} is a folder; name a file to write")
    return path


def check_output_folder(path: str | Path, key: str = "--out") -> Path:
    """`path` if it is a folder or nothing yet: a results folder never replaces a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NetgeomError(key, f"{path} is a file; name a folder to write the results into")
    return path


def atomic_write_table(target: str | Path, frame) -> Path:
    """A DataFrame as .csv or .parquet, by the file's suffix."""
    if check_table_path(target).suffix.lower() == ".csv":
        return atomic_write_csv(target, frame)
    return atomic_write_parquet(target, frame)


def fsync_tree(folder: Path) -> None:
    """Flush every file and folder under `folder` (and the folder itself) to disk."""
    for path in sorted(Path(folder).rglob("*"), reverse=True) + [Path(folder)]:
        flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
        fd = os.open(path, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish_dir(source: Path, target: Path, trash: Path) -> None:
    """Move the complete folder `source` to `target`, replacing any previous one.

    The old target is first renamed to `trash` (same filesystem), then `source` takes its
    place, then the trash goes. A crash leaves the complete new folder at `source` or
    `target`, and the old one at `target` or `trash`: never a folder with parts of both.
    """
    source, target, trash = Path(source), Path(target), Path(trash)
    fsync_tree(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(trash, ignore_errors=True)
    if target.exists():
        os.replace(target, trash)
    os.replace(source, target)
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def building_dir(target: str | Path, staging: str | Path, trash: str | Path) -> Iterator[Path]:
    """Yield the empty folder `staging` to write the new content of the folder `target` into;
    when the block ends without error, `publish_dir` puts it in `target`'s place whole.

    So a result of several files is never a mix: a crash anywhere in the block leaves the old
    `target` as it was. What an earlier crash left in `staging` is less than a result: it is
    cleared first, and said."""
    target, staging = Path(target), Path(staging)
    if staging.exists():
        from netgeom.progress import note  # here: a plain write needs no progress module

        note(f"{target}: an earlier run stopped before its result was complete; building it again")
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish_dir(staging, target, Path(trash))


# --------------------------------------------------------------------------- reading


def _missing(path: Path, hint: str) -> NetgeomError:
    return NetgeomError(str(path), f"does not exist{'; ' + hint if hint else ''}")


# What a reader says to do about a damaged output (a caller that re-creates it itself drops it).
RECREATE = "re-create it (e.g. `dvc repro --force` of its stage)"


def _detail(exc: Exception) -> str:
    """A reader's exception as a short clause for a one-line error."""
    return str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__


def _corrupt(path: Path, what: str, exc: Exception) -> NetgeomError:
    return NetgeomError(str(path), f"is not a valid {what} file ({_detail(exc)}); {RECREATE}")


def read_json(path: str | Path, hint: str = "") -> Any:
    path = Path(path)
    if not path.exists():
        raise _missing(path, hint)
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise _corrupt(path, "JSON", exc) from None
    except RecursionError:  # nested deeper than any file we write: hostile or broken
        raise _corrupt(path, "JSON", ValueError("nested too deeply")) from None


# What a JSON file we wrote must hold: key -> type, a tuple of types, `list[T]` (every item a T),
# or a nested schema for an object. `float` takes any number; `int` and `float` never take a bool.
Schema = dict[str, Any]


def read_json_object(path: str | Path, required: tuple[str, ...] | Schema = (), hint: str = "") -> dict:
    """A JSON file holding an object with at least the `required` keys; with a `Schema`, values of
    the wrong kind (a hand-edited or foreign file) are refused in one line naming the file and key
    instead of failing later in a traceback."""
    payload = read_json(path, hint)
    if not isinstance(payload, dict):
        raise NetgeomError(str(path), "must hold a JSON object")
    absent = [key for key in required if key not in payload]
    if absent:
        raise NetgeomError(str(path), f"lacks {', '.join(absent)}; {RECREATE}")
    if isinstance(required, dict):
        problem = _schema_problem(payload, required, "")
        if problem:
            raise NetgeomError(str(path), f"{problem}; {RECREATE}")
    return payload


def _schema_problem(payload: dict, schema: Schema, prefix: str) -> str:
    """The first key of `payload` that does not fit `schema`, as a clause; '' when all fit."""
    for key, kind in schema.items():
        name, value = prefix + key, payload.get(key)
        if isinstance(kind, dict):
            if key not in payload or not isinstance(value, dict):
                return f"its {name} must be an object"
            problem = _schema_problem(value, kind, name + ".")
            if problem:
                return problem
        elif key not in payload or not _fits(value, kind):
            return f"its {name} must be {_kind_name(kind)}"
    return ""


def _fits(value: Any, kind: Any) -> bool:
    if isinstance(kind, tuple):
        return any(_fits(value, k) for k in kind)
    if getattr(kind, "__origin__", None) is list:
        (item,) = kind.__args__
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if kind in (int, float) and isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _kind_name(kind: Any) -> str:
    if isinstance(kind, tuple):
        return " or ".join(_kind_name(k) for k in kind)
    if getattr(kind, "__origin__", None) is list:
        return f"a list of {_kind_name(kind.__args__[0]).removeprefix('a ').removeprefix('an ')}s"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "an object", list: "a list", type(None): "null"}
    return names.get(kind, kind.__name__)


def read_npy(path: str | Path, hint: str = "") -> np.ndarray:
    """A .npy array, never pickled objects; one line naming the file when it is not one."""
    import numpy as np

    path = Path(path)
    if not path.exists():
        raise _missing(path, hint)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        detail = _detail(exc)
        if "pickle" in detail:  # numpy's own advice is to load it unsafely: never here
            detail = "pickled objects, which are never loaded"
        raise NetgeomError(str(path), f"is not a valid .npy array file ({detail}){'; ' + hint if hint else ''}") from None


def read_parquet(path: str | Path, columns: tuple[str, ...] = (), hint: str = ""):
    import pandas as pd

    # pyarrow raises a zoo of types for truncated or foreign files
    return _read_frame(path, columns, hint, pd.read_parquet, "Parquet", Exception)


def read_csv(path: str | Path, columns: tuple[str, ...] = (), hint: str = ""):
    import pandas as pd

    errors = (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError)
    return _read_frame(path, columns, hint, pd.read_csv, "CSV", errors)


def _read_frame(path: str | Path, columns: tuple[str, ...], hint: str, reader, kind: str, errors):
    """`reader(path)` with one-line errors naming the file: missing, unreadable, or lacking columns."""
    path = Path(path)
    if not path.exists():
        raise _missing(path, hint)
    try:
        frame = reader(path)
    except errors as exc:
        raise _corrupt(path, kind, exc) from None
    _check_columns(path, frame, columns)
    return frame


def _check_columns(path: Path, frame, columns: tuple[str, ...]) -> None:
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise NetgeomError(str(path), f"lacks the columns {', '.join(absent)}; {RECREATE}")


def _jsonable(value: Any) -> Any:
    np = sys.modules.get("numpy")  # a numpy value can only exist once numpy is imported
    if np is not None and isinstance(value, np.generic):
        return value.item()
    if np is not None and isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
