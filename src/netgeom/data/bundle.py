"""Assemble the tensors a stage needs from the raw data, the split and the noisy labels.

Small datasets live as tensors (airbench style): batching is indexing, no DataLoader.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from netgeom.data.sources import DatasetInfo, DatasetSource, RawSplit, arrays_digest, content_digest, get_source, normalise
from netgeom.data.noise import corrupt_inputs
from netgeom.data.split import SPLIT_SCHEMA, Split
from netgeom.errors import NetgeomError
from netgeom.io import read_json_object, read_parquet
from netgeom.memory_format import in_format
from netgeom.params import Params


@dataclass
class TrainSet:
    x: torch.Tensor  # normalised inputs (input corruption applied)
    y: torch.Tensor  # labels used in training (noisy)
    clean: torch.Tensor  # original labels
    sample_id: torch.Tensor  # index in the dataset's official train split

    @property
    def is_noisy(self) -> torch.Tensor:
        return self.y != self.clean

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class DataBundle:
    info: DatasetInfo  # num_classes is the number of classes kept by the split
    train: TrainSet
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]

    def to(self, device: torch.device) -> DataBundle:
        """The same data on `device` (moved once: batches are then indexed there)."""
        move = lambda t: t.to(device)  # noqa: E731
        train = TrainSet(*(move(t) for t in (self.train.x, self.train.y, self.train.clean, self.train.sample_id)))
        return dataclasses.replace(self, train=train, val=tuple(map(move, self.val)), test=tuple(map(move, self.test)))

    def in_format(self, layout: torch.memory_format) -> DataBundle:
        """The same data with image tensors in `layout` (see netgeom.memory_format)."""
        to = lambda x: in_format(x, layout)  # noqa: E731
        train = dataclasses.replace(self.train, x=to(self.train.x))
        return dataclasses.replace(self, train=train, val=(to(self.val[0]), self.val[1]), test=(to(self.test[0]), self.test[1]))

    def digest(self) -> str:
        """A content hash of every tensor a run sees: part of the run's identity, so results
        trained on other data (replaced files, another split) never pass for the same run."""
        tensors = (self.train.x, self.train.y, self.train.clean, self.train.sample_id, *self.val, *self.test)
        return arrays_digest(tensor.detach().cpu().numpy() for tensor in tensors)

    def eval_sets(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        sets = {"train": (self.train.x, self.train.y), "test": self.test}
        if len(self.val[1]):
            sets["val"] = self.val
        return sets


def _tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))


def load_raw(source: DatasetSource, root: Path, name: str, split: Split) -> RawSplit:
    """Split `name` of the raw data, checked against the digest `split` recorded for it."""
    raw = source.load(root, name)
    recorded = split.content.get(name)
    if recorded and content_digest(raw) != recorded:
        raise NetgeomError(
            "data.root", f"the {name} files under {source.where(root)} changed since the split was made; run `dvc repro` (or `netgeom split` again)"
        )
    return raw


def read_split(path: Path) -> Split:
    payload = read_json_object(path, SPLIT_SCHEMA, hint="run `dvc repro split` (or `netgeom split`) first")
    return Split.from_dict(payload)


LABEL_COLUMNS = ("sample_id", "label", "clean_label")


def read_labels(path: Path, split: Split | None = None) -> pd.DataFrame:
    """The training labels; with `split`, refused in one line naming the file unless they are one
    integer label in 0..K-1 for each of the split's training samples (a table of zero rows
    measured nothing and said nothing)."""
    labels = read_parquet(path, LABEL_COLUMNS, hint="run `dvc repro corrupt` (or `netgeom corrupt`) first")
    if split is None:
        return labels
    redo = "; run `dvc repro corrupt` (or `netgeom corrupt`) again"
    if sorted(pd.to_numeric(labels["sample_id"], errors="coerce").fillna(-1).astype(np.int64).tolist()) != sorted(split.train):
        raise NetgeomError(str(path), f"its sample_id column is not the {len(split.train)} training samples of the split ({len(labels)} rows){redo}")
    for column in ("label", "clean_label"):
        values = pd.to_numeric(labels[column], errors="coerce")
        if not pd.api.types.is_integer_dtype(labels[column]) or values.isna().any() or not values.between(0, len(split.classes) - 1).all():
            raise NetgeomError(str(path), f"its {column} column must hold integer classes 0..{len(split.classes) - 1}{redo}")
    return labels


def load_bundle(params: Params, split: Split, labels: pd.DataFrame, root: Path) -> DataBundle:
    source = get_source(params.data.name, params.data)
    info = source.info
    if split.dataset != info.name:
        raise NetgeomError("data.name", f"is {info.name!r} but the split was made for {split.dataset!r}; re-run split")
    pool = load_raw(source, root, "train", split)
    test = load_raw(source, root, "test", split)

    if not params.data.normalize:  # raw values in [0, 1]: what the studies read as the channel statistics too
        info = DatasetInfo(info.name, info.input_shape, info.num_classes, (0.0,) * len(info.mean), (1.0,) * len(info.std), info.splits)
    ids = labels["sample_id"].to_numpy()
    x_train = normalise(pool.x[ids], info)
    x_train = corrupt_inputs(x_train, ids, params.noise.input, params.noise.seed, params.noise.per_image)
    train = TrainSet(
        x=torch.from_numpy(x_train),
        y=torch.from_numpy(labels["label"].to_numpy(np.int64, copy=True)),
        clean=torch.from_numpy(labels["clean_label"].to_numpy(np.int64, copy=True)),
        sample_id=torch.from_numpy(ids.astype(np.int64)),
    )
    val_ids = np.asarray(split.val, dtype=np.int64)
    keep = split.keep_mask(test.y)
    # Corruption is keyed by sample id: val ids are pool indices (never a training id), test ids
    # follow the pool's, so with one permutation per image no two inputs share theirs.
    test_ids = np.flatnonzero(keep) + len(pool.y)
    x_val, x_test = normalise(pool.x[val_ids], info), normalise(test.x[keep], info)
    if params.noise.input_splits == "all":  # the same corruption on the evaluation inputs (Zhang et al.)
        x_val, x_test = (corrupt_inputs(x, ids, params.noise.input, params.noise.seed, params.noise.per_image)
                         for x, ids in ((x_val, val_ids), (x_test, test_ids)))
    val = _tensors(x_val, split.relabel(pool.y[val_ids]))
    test_xy = _tensors(x_test, split.relabel(test.y[keep]))
    kept_info = DatasetInfo(info.name, info.input_shape, len(split.classes), info.mean, info.std, info.splits)
    return DataBundle(kept_info, train, val, test_xy)
