"""Datasets, splits and label noise. Importing this package registers every dataset.

The dataset sources (file names, readers) import no torch, so `netgeom check` can ask whether a
dataset's files are there at a fraction of torch's import; `DataBundle` and friends (tensors)
load on first use."""

from netgeom.data import embedded, idx_sets, synthetic, torchvision_sets  # noqa: F401  (registry lines)
from netgeom.data.sources import DatasetInfo, get_source, list_datasets, normalise, register_dataset

__all__ = [
    "DataBundle",
    "DatasetInfo",
    "TrainSet",
    "get_source",
    "list_datasets",
    "load_bundle",
    "normalise",
    "register_dataset",
]
_BUNDLE = ("DataBundle", "TrainSet", "load_bundle")  # from netgeom.data.bundle, which imports torch


def __getattr__(name: str):
    if name in _BUNDLE:
        from netgeom.data import bundle

        return getattr(bundle, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
