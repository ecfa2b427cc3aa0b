"""Datasets, splits and label noise. Importing this package registers every dataset."""

from netgeom.data import embedded, idx_sets, synthetic, torchvision_sets  # noqa: F401  (registry lines)
from netgeom.data.bundle import DataBundle, TrainSet, load_bundle
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
