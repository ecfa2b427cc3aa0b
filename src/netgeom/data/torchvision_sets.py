"""MNIST, Fashion-MNIST, CIFAR-10/100 and SVHN read from `data/` in torchvision's own layout.

The reading is torchvision's code. Integrity is checked by file presence here; the md5 sums are
verified once, when `netgeom data fetch` downloads the files (hashing 170 MB on every load would
dominate small runs, and it would reject the small files tests write in the real formats).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
from netgeom.data.sources import DatasetInfo, DatasetSource, RawSplit, register_dataset
from netgeom.errors import NetgeomError


def _presence_checked(cls: type) -> type:
    """A subclass of a torchvision dataset whose file lists carry no md5 sums: torchvision's
    `check_integrity(path, None)` then checks presence only. The reading code is untouched."""
    overrides = {}
    for attribute in ("train_list", "test_list"):
        if hasattr(cls, attribute):
            overrides[attribute] = [[name, None] for name, _ in getattr(cls, attribute)]
    if hasattr(cls, "meta"):
        overrides["meta"] = {**cls.meta, "md5": None}
    if hasattr(cls, "split_list"):
        overrides["split_list"] = {k: [url, name, None] for k, (url, name, _) in cls.split_list.items()}
    return type(cls.__name__, (cls,), overrides)


class TorchvisionDataset(DatasetSource):
    class_name: str  # the torchvision.datasets class
    folder_name: str  # where torchvision looks, relative to the data root

    def __init__(self, params=None):
        pass

    @cached_property
    def dataset_class(self) -> type:
        from torchvision import datasets  # imported on use: it costs ~1.5 s per process

        return getattr(datasets, self.class_name)

    @cached_property
    def _reader(self) -> type:
        return _presence_checked(self.dataset_class)

    def where(self, root: Path) -> str:
        return str(Path(root) / self.folder_name)

    def _open(self, root: Path, split: str, download: bool = False):
        kwargs = {"split": split} if self.class_name == "SVHN" else {"train": split == "train"}
        reader = self.dataset_class if download else self._reader
        return reader(root=str(root), download=download, **kwargs)

    def is_available(self, root: Path) -> bool:
        try:
            for split in self.info.splits:
                self._open(root, split)
        except (RuntimeError, FileNotFoundError):
            return False
        return True

    def load(self, root: Path, split: str) -> RawSplit:
        self.check_split(split)
        try:
            data = self._open(root, split)
        except (RuntimeError, FileNotFoundError):
            raise NetgeomError(
                "data.name",
                f"{self.info.name} ({split}) not found under {self.where(root)}; run "
                f"`netgeom data fetch {self.info.name}` or place the files there in torchvision's layout",
            ) from None
        return self.to_arrays(data)

    def to_arrays(self, data) -> RawSplit:
        x = np.asarray(data.data)
        if x.ndim == 3:  # (N, H, W) grey images
            x = x[:, None]
        elif x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # (N, H, W, C) -> (N, C, H, W)
            x = x.transpose(0, 3, 1, 2)
        labels = getattr(data, "targets", None)
        if labels is None:
            labels = data.labels
        return RawSplit(np.ascontiguousarray(x, dtype=np.float32) / 255.0, np.asarray(labels, dtype=np.int64))

    def fetch(self, root: Path) -> None:
        Path(root).mkdir(parents=True, exist_ok=True)
        for split in self.info.splits:
            try:
                self._open(root, split, download=True)
            except Exception as exc:  # urllib, socket and HTTP errors all mean the same here
                raise NetgeomError(
                    "data.fetch",
                    f"could not download {self.info.name} ({type(exc).__name__}: {str(exc)[:120]}); "
                    f"without a network, copy the files into {self.where(root)} in torchvision's layout",
                ) from None


@register_dataset("mnist")
class Mnist(TorchvisionDataset):
    class_name, folder_name = "MNIST", "MNIST/raw"
    info = DatasetInfo("mnist", (1, 28, 28), 10, mean=(0.1307,), std=(0.3081,))


@register_dataset("fashion_mnist")
class FashionMnist(TorchvisionDataset):
    class_name, folder_name = "FashionMNIST", "FashionMNIST/raw"
    info = DatasetInfo("fashion_mnist", (1, 28, 28), 10, mean=(0.2860,), std=(0.3530,))


@register_dataset("cifar10")
class Cifar10(TorchvisionDataset):
    class_name, folder_name = "CIFAR10", "cifar-10-batches-py"
    info = DatasetInfo("cifar10", (3, 32, 32), 10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))


@register_dataset("cifar100")
class Cifar100(TorchvisionDataset):
    class_name, folder_name = "CIFAR100", "cifar-100-python"
    info = DatasetInfo("cifar100", (3, 32, 32), 100, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))


@register_dataset("svhn")
class Svhn(TorchvisionDataset):
    class_name, folder_name = "SVHN", "."
    info = DatasetInfo("svhn", (3, 32, 32), 10, mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970))
