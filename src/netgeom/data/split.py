"""Deterministic train/val splits of a dataset's training pool, with optional class subsampling."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from netgeom.errors import NetgeomError


# What split.json must hold (netgeom.io.read_json_object refuses anything else in one line).
SPLIT_SCHEMA = {"dataset": str, "train": list[int], "val": list[int], "classes": list[int]}


@dataclass(frozen=True)
class Split:
    """Indices into the dataset's official train split; `classes` maps new label -> original.

    `content`: the raw files' digest per split name (netgeom.data.sources.content_digest), taken
    when the split was made. It makes split.json stand for the data: the stages after `split`
    depend on it, not on the whole data folder, so adding another dataset's files under data/
    re-runs `split` alone (its output unchanged), while a changed file of this dataset changes
    split.json and everything after it. Loaders check it (empty in split files from before it).
    """

    dataset: str
    train: list[int]
    val: list[int]
    classes: list[int]
    content: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict) -> Split:
        content = payload.get("content") or {}
        return cls(payload["dataset"], list(payload["train"]), list(payload["val"]), list(payload["classes"]), dict(content))

    def relabel(self, labels: np.ndarray) -> np.ndarray:
        """Original class ids -> 0..k-1 in the order of `classes`."""
        lookup = np.full(max(max(self.classes), int(labels.max(initial=0))) + 1, -1, dtype=np.int64)
        lookup[self.classes] = np.arange(len(self.classes))
        return lookup[labels]

    def keep_mask(self, labels: np.ndarray) -> np.ndarray:
        return np.isin(labels, self.classes)


def choose_classes(num_classes: int, keep: int | None, seed: int) -> list[int]:
    if keep is None:
        return list(range(num_classes))
    if keep > num_classes:
        raise NetgeomError("data.classes", f"asks for {keep} classes but the dataset has {num_classes}")
    return sorted(np.random.default_rng(seed).choice(num_classes, size=keep, replace=False).tolist())


def val_count(val_size: float, pool: int) -> int:
    n_val = int(round(val_size * pool)) if val_size < 1 else int(val_size)
    if n_val >= pool:
        raise NetgeomError("data.val_size", f"{val_size} leaves no training data: the pool has {pool} samples")
    return n_val


def make_split(
    dataset: str,
    labels: np.ndarray,
    num_classes: int,
    *,
    val_size: float,
    seed: int,
    stratified: bool = True,
    classes: int | None = None,
    class_seed: int = 0,
    train_size: int | None = None,
) -> Split:
    kept = choose_classes(num_classes, classes, class_seed)
    pool = np.flatnonzero(np.isin(labels, kept))
    n_val = val_count(val_size, len(pool))
    from sklearn.model_selection import train_test_split  # imported on use: ~1 s per process

    if n_val == 0:
        train, val = np.random.default_rng(seed).permutation(pool), pool[:0]
    else:
        train, val = train_test_split(
            pool, test_size=n_val, random_state=seed, stratify=labels[pool] if stratified else None
        )
    if train_size is not None:
        if train_size > len(train):
            raise NetgeomError("data.train_size", f"{train_size} exceeds the {len(train)} training samples left")
        train = train[:train_size]
    return Split(dataset, sorted(int(i) for i in train), sorted(int(i) for i in val), kept)
