"""CIFAR-10/100 and SVHN read from `data/` in torchvision's own layout (MNIST-like IDX files:
`idx_sets.py`).

SVHN is read by torchvision's own code (.mat files: no code can run).
CIFAR's batches are pickles, which torchvision unpickles with `pickle.load`: a crafted file would
run code. They are read here with an unpickler that accepts numpy arrays and builtin containers
only (`safe_unpickle`). Integrity: torchvision verifies the published md5 sums when `netgeom data
fetch` downloads the files, and `netgeom data info` reports whether the files on disk match them
(hashing 170 MB on every load would dominate small runs, and the md5 would reject the small files
tests write in the real formats).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np

from netgeom.data.safe_unpickle import load_data_pickle
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
                self._read(root, split)
        except (RuntimeError, FileNotFoundError):
            return False
        return True

    def read(self, root: Path, split: str) -> RawSplit:
        self.check_split(split)
        try:
            data = self._read(root, split)
        except (RuntimeError, FileNotFoundError):
            raise NetgeomError(
                "data.root",
                f"{self.info.name} ({split}) not found under {self.where(root)}; run "
                f"`netgeom data fetch {self.info.name}` or place the files there in torchvision's layout",
            ) from None
        return self.to_arrays(data)

    def _read(self, root: Path, split: str):
        """The torchvision dataset, its files present (RuntimeError / FileNotFoundError otherwise)
        and readable: a damaged file is one line naming where it is, not the reader's traceback."""
        try:
            return self._open(root, split)
        except (RuntimeError, FileNotFoundError):
            raise
        except Exception as exc:  # scipy.io / PIL / numpy raise a zoo of types for a damaged file
            raise NetgeomError(
                self.where(root), f"{self.info.name} ({split}): a file there cannot be read ({type(exc).__name__}: {exc}); fetch or copy it again"
            ) from None

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

    def published_md5(self) -> dict[str, str]:
        """File (relative to the data root) -> the md5 torchvision publishes for it."""
        return {}

    def verified(self, root: Path) -> bool | None:
        """Whether every file matches its published md5 (None: nothing published to check)."""
        sums = self.published_md5()
        if not sums:
            return None
        from torchvision.datasets.utils import check_integrity

        return all(check_integrity(str(Path(root) / name), md5) for name, md5 in sums.items())

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


class CifarDataset(TorchvisionDataset):
    """CIFAR python batches (dicts of a uint8 `data` array (N, 3072) and a label list), read
    without `pickle.load`; the file names and md5 sums are torchvision's."""

    label_key: str

    def _batches(self, split: str) -> list[tuple[str, str]]:
        cls = self.dataset_class
        return [(name, md5) for name, md5 in (cls.train_list if split == "train" else cls.test_list)]

    def published_md5(self) -> dict[str, str]:
        meta = self.dataset_class.meta
        entries = self._batches("train") + self._batches("test") + [(meta["filename"], meta["md5"])]
        return {f"{self.folder_name}/{name}": md5 for name, md5 in entries}

    def files_present(self, root: Path) -> bool:
        return self.is_available(root)

    def is_available(self, root: Path) -> bool:
        return all((Path(root) / name).is_file() for name in self.published_md5())

    def read(self, root: Path, split: str) -> RawSplit:
        self.check_split(split)
        if not self.is_available(root):
            raise NetgeomError(
                "data.root",
                f"{self.info.name} ({split}) not found under {self.where(root)}; run "
                f"`netgeom data fetch {self.info.name}` or place the files there in torchvision's layout",
            )
        images, labels = [], []
        for name, _ in self._batches(split):
            path = Path(root) / self.folder_name / name
            batch = load_data_pickle(path)
            data = batch.get("data") if isinstance(batch, dict) else None
            if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
                raise NetgeomError(str(path), "is not a CIFAR batch (expected a uint8 `data` array of shape (N, 3072))")
            images.append(data.reshape(-1, 3, 32, 32))
            labels.extend(batch.get(self.label_key, []))
        x = np.concatenate(images)
        if len(labels) != len(x):
            raise NetgeomError(str(Path(root) / self.folder_name), f"has {len(x)} images but {len(labels)} `{self.label_key}`")
        y = np.asarray(labels)  # anything but integers is refused by DatasetSource.load, naming the files
        return RawSplit(x.astype(np.float32) / 255.0, y.astype(np.int64) if np.issubdtype(y.dtype, np.integer) else y)


@register_dataset("cifar10")
class Cifar10(CifarDataset):
    class_name, folder_name, label_key = "CIFAR10", "cifar-10-batches-py", "labels"
    info = DatasetInfo("cifar10", (3, 32, 32), 10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))


@register_dataset("cifar100")
class Cifar100(CifarDataset):
    class_name, folder_name, label_key = "CIFAR100", "cifar-100-python", "fine_labels"
    info = DatasetInfo("cifar100", (3, 32, 32), 100, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))


@register_dataset("svhn")
class Svhn(TorchvisionDataset):
    class_name, folder_name = "SVHN", "."
    info = DatasetInfo("svhn", (3, 32, 32), 10, mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970))
