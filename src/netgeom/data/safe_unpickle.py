"""Read pickled numpy data without ever running code from the file.

CIFAR's python batches are pickles, and `pickle.load` calls whatever callables a file names: a
crafted `data_batch_1` would run code on `netgeom data info cifar10`. This unpickler resolves
only the few globals that plain numpy arrays, lists, dicts and strings need; any other global
(os.system, builtins.eval, ...) is refused before it can be called, naming the file.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from netgeom.errors import NetgeomError

_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's array rebuilder, under either module name
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy < 2 and Python 2 pickles
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how Python 3 pickles bytes at protocol 2
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refers to {module}.{name}, which plain data never needs")
        return found


def load_data_pickle(path: Path, encoding: str = "latin1") -> Any:
    """The object pickled in `path`, if it consists of numpy arrays and builtin containers only."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            payload = _ArraysOnly(handle, encoding=encoding).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise NetgeomError(str(path), f"is not a plain-data pickle ({str(exc)[:160]}); refused without running it") from None
    _refuse_objects(path, payload)
    return payload


def _refuse_objects(path: Path, payload: Any) -> None:
    # An object-dtype array is legal pickle but never CIFAR data; refuse it too.
    values = payload.values() if isinstance(payload, dict) else payload if isinstance(payload, (list, tuple)) else [payload]
    for value in values:
        if isinstance(value, np.ndarray) and value.dtype == object:
            raise NetgeomError(str(path), "holds an object array, which image data never is; refused")
