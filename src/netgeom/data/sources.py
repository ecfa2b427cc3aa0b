"""The dataset registry: each dataset knows its shape, classes, normalisation and splits.

Adding a dataset is one new module that subclasses `DatasetSource` and decorates it with
`@register_dataset("name")`, plus one import line in `netgeom/data/__init__.py`.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netgeom.errors import NetgeomError
from netgeom.params import DataParams


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    mean: tuple[float, ...]  # per channel, applied to the raw values
    std: tuple[float, ...]
    splits: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True)
class RawSplit:
    """Raw inputs (float32, shape (N, *input_shape), before normalisation) and int64 labels."""

    x: np.ndarray
    y: np.ndarray


def arrays_digest(arrays) -> str:
    """A content hash of arrays in order, each with its dtype and shape (16-byte blake2b)."""
    h = hashlib.blake2b(digest_size=16)
    for array in arrays:
        array = np.ascontiguousarray(array)
        h.update(f"{array.dtype}{array.shape}".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def content_digest(raw: RawSplit) -> str:
    """A hash of a split's raw inputs and labels: what `split` records, so the stages after it can
    depend on split.json instead of the whole data folder (see netgeom.data.split.Split)."""
    return arrays_digest((raw.x, raw.y))


class DatasetSource(ABC):
    info: DatasetInfo

    @abstractmethod
    def read(self, root: Path, split: str) -> RawSplit:
        """The split's raw inputs and labels as the files hold them (`load` checks the labels)."""

    def load(self, root: Path, split: str) -> RawSplit:
        """The split's raw data, refused in one line unless it gives one class in 0..K-1 per input
        and every input value is a finite number: a label past the classes was dropped from the
        split without a word, text labels were a traceback, a NaN input trained to a NaN loss
        (blamed on the learning rate). Every reader goes through here, so no dataset can skip it."""
        raw = self.read(root, split)
        x = raw.x
        numeric = np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
        if not numeric or (np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all()):
            found = f"{int(np.size(x) - np.isfinite(x).sum())} NaN or infinite input values" if numeric else f"{x.dtype} inputs, not numbers"
            raise NetgeomError(
                "data.root", f"the {split} files of {self.info.name} under {self.where(root)} hold {found}; restore the dataset's own files"
            )
        y, k = raw.y, self.info.num_classes
        integer = y.ndim == 1 and np.issubdtype(y.dtype, np.integer)
        if not (integer and len(y) == len(raw.x) and (len(y) == 0 or (y.min() >= 0 and y.max() < k))):
            found = f"{len(y)} labels in {y.min()}..{y.max()}" if integer and len(y) else f"{y.dtype} labels of shape {y.shape}"
            raise NetgeomError(
                "data.root",
                f"the {split} files of {self.info.name} under {self.where(root)} do not give one class in 0..{k - 1} "
                f"for each of their {len(raw.x)} inputs ({found}); restore the dataset's own files",
            )
        return raw

    def is_available(self, root: Path) -> bool:
        return True

    def files_present(self, root: Path) -> bool | None:
        """Whether the dataset's files are under `root`, told from their names alone (what
        `netgeom check` asks, without torch); None where only reading them would tell."""
        return None

    def materialise(self, root: Path) -> list[Path]:
        """Write the dataset under `root` deterministically (embedded datasets only)."""
        return []

    def fetch(self, root: Path) -> None:
        raise NetgeomError("data.name", f"{self.info.name} is generated locally and needs no download")

    def where(self, root: Path) -> str:
        """Human-readable description of where the files are expected."""
        return str(root)

    def origin(self, root: Path) -> str | None:
        """Where the files under `root` came from, when that is known."""
        return None

    def check_split(self, split: str) -> None:
        if split not in self.info.splits:
            raise NetgeomError("split", f"{self.info.name} has splits {list(self.info.splits)}, not {split!r}")


_REGISTRY: dict[str, Callable[[DataParams], DatasetSource]] = {}


def register_dataset(name: str):
    def decorate(factory):
        _REGISTRY[name] = factory
        return factory

    return decorate


def list_datasets() -> list[str]:
    return sorted(_REGISTRY)


def get_source(name: str, params: DataParams | None = None) -> DatasetSource:
    if name not in _REGISTRY:
        raise NetgeomError("data.name", f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    return _REGISTRY[name](params or DataParams(name=name))


def normalise(x: np.ndarray, info: DatasetInfo) -> np.ndarray:
    """Per-channel (x - mean) / std; channels are axis 1 of (N, C, ...)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = np.asarray(info.mean, dtype=np.float32).reshape(shape)
    std = np.asarray(info.std, dtype=np.float32).reshape(shape)
    return ((x - mean) / std).astype(np.float32)
