"""Synthetic `random` data with uniform labels: the off-manifold control.

Inputs are generated already normalised (mean 0, std 1 per channel), so `uniform` is uniform
within mean +- std of the channel, `gaussian` is standard normal, and `hypersphere` lies on the
sphere of radius sqrt(D) (the typical norm of a standard normal vector).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from netgeom.data.sources import DatasetInfo, DatasetSource, RawSplit, register_dataset
from netgeom.params import DataParams, RandomDataParams


def random_inputs(kind: str, n: int, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if kind == "uniform":
        return rng.uniform(-1.0, 1.0, size=(n, *shape)).astype(np.float32)
    x = rng.standard_normal(size=(n, *shape))
    if kind == "hypersphere":
        flat = x.reshape(n, -1)
        x = (flat / np.linalg.norm(flat, axis=1, keepdims=True) * np.sqrt(flat.shape[1])).reshape(x.shape)
    return x.astype(np.float32)


@register_dataset("random")
class RandomData(DatasetSource):
    def __init__(self, params: DataParams | None = None):
        self.params: RandomDataParams = (params or DataParams()).random
        p = self.params
        channels = p.shape[0]
        self.info = DatasetInfo("random", tuple(p.shape), p.classes, mean=(0.0,) * channels, std=(1.0,) * channels)

    def read(self, root: Path, split: str) -> RawSplit:
        self.check_split(split)
        p = self.params
        n = p.train_size if split == "train" else p.test_size
        # Separate streams per split so changing one size never changes the other split.
        rng = np.random.default_rng([p.seed, 0 if split == "train" else 1])
        x = random_inputs(p.kind, n, tuple(p.shape), rng)
        y = rng.integers(0, p.classes, size=n).astype(np.int64)
        return RawSplit(x, y)
