"""MNIST and Fashion-MNIST from IDX files in torchvision's layout (`data/<Class>/raw/`).

The files are read by `netgeom.data.idx` (every header field and length checked), plain or
`.gz`. Where they came from is recorded in `provenance.json` beside them by whoever put them
there (`netgeom data import` from a local copy such as Debian's `dataset-fashion-mnist`, or
`netgeom data fetch`); `netgeom data info` reports it and checks the decompressed bytes against
the published md5 sums. The sums are not checked on every load: hashing 55 MB per stage would
dominate small runs, and tests load small files written in the same format.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

from netgeom.data.idx import md5_of, read_images_and_labels
from netgeom.data.sources import DatasetInfo, RawSplit, register_dataset
from netgeom.data.torchvision_sets import TorchvisionDataset
from netgeom.errors import NetgeomError
from netgeom.io import atomic_write_json, publish_dir, read_json_object

PROVENANCE = "provenance.json"
_PREFIX = {"train": "train", "test": "t10k"}


class IdxDataset(TorchvisionDataset):
    # file name -> md5 of its decompressed bytes (empty: nothing published to check against)
    decompressed_md5: dict[str, str] = {}

    def files(self, split: str) -> tuple[str, str]:
        prefix = _PREFIX[split]
        return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"

    def all_files(self) -> list[str]:
        return [name for split in self.info.splits for name in self.files(split)]

    def _find(self, root: Path, name: str) -> Path | None:
        folder = Path(root) / self.folder_name
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
        return None

    def files_present(self, root: Path) -> bool:
        return self.is_available(root)

    def is_available(self, root: Path) -> bool:
        return all(self._find(root, name) is not None for name in self.all_files())

    def read(self, root: Path, split: str) -> RawSplit:
        self.check_split(split)
        images, labels = (self._find(root, name) for name in self.files(split))
        if images is None or labels is None:
            raise NetgeomError(
                "data.root",
                f"{self.info.name} ({split}) not found under {self.where(root)}; run "
                f"`make {self.info.name.replace('_', '-')}` or `netgeom data fetch {self.info.name}`",
            )
        x, y = read_images_and_labels(images, labels)
        return RawSplit(x, y)

    def verified(self, root: Path) -> bool | None:
        if not self.decompressed_md5:
            return None
        return not self.mismatches(root)

    def mismatches(self, root: Path) -> list[str]:
        """The files whose decompressed bytes differ from the published sums."""
        bad = []
        for name, md5 in self.decompressed_md5.items():
            path = self._find(root, name)
            if path is None or md5_of(path, decompress=path.suffix == ".gz") != md5:
                bad.append(str(path or Path(root) / self.folder_name / name))
        return bad

    def origin(self, root: Path) -> str | None:
        path = Path(root) / self.folder_name / PROVENANCE
        if not path.is_file():
            return "unknown (no provenance.json: the files were placed by hand)"
        return str(read_json_object(path, required=("source",))["source"])

    def import_from(self, source: Path, root: Path, origin: str) -> Path:
        """Copy the four files (plain or .gz) from a local folder into `root` in torchvision's
        layout, decompressed, refusing any file whose bytes differ from the published sums.
        The folder is built aside and published whole: a refusal or a crash writes nothing."""
        source, target = Path(source), Path(root) / self.folder_name
        _remove_stale_imports(Path(root), self.info.name)
        staging = Path(root) / f".import-{self.info.name}-{os.getpid()}"  # mkdir, not mkdtemp: the umask's mode
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            for name in self.all_files():
                found = next((p for p in (source / name, source / f"{name}.gz") if p.is_file()), None)
                if found is None:
                    raise NetgeomError(str(source / f"{name}.gz"), f"is missing: {self.info.name} needs {', '.join(self.all_files())}")
                opener = gzip.open if found.suffix == ".gz" else open
                try:
                    with opener(found, "rb") as src, open(staging / name, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                except (OSError, EOFError) as exc:
                    raise NetgeomError(str(found), f"cannot be read ({exc})") from None
                expected = self.decompressed_md5.get(name)
                if expected and (actual := md5_of(staging / name)) != expected:
                    raise NetgeomError(str(found), f"decompresses to md5 {actual}, not the published {expected}")
            for split in self.info.splits:  # the formats and counts, before anything is published
                read_images_and_labels(*(staging / name for name in self.files(split)))
            atomic_write_json(staging / PROVENANCE, {"source": origin, "copied_from": str(source), "verified": bool(self.decompressed_md5)})
            publish_dir(staging, target, Path(root) / f".import-{self.info.name}-trash")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def fetch(self, root: Path) -> None:
        super().fetch(root)
        atomic_write_json(Path(root) / self.folder_name / PROVENANCE, {"source": "download (torchvision's mirrors)"})


def _remove_stale_imports(root: Path, name: str) -> None:
    """Staging folders a killed import left behind (its process is gone), so `dvc add data`
    never records half an import."""
    for folder in root.glob(f".import-{name}-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@register_dataset("mnist")
class Mnist(IdxDataset):
    class_name, folder_name = "MNIST", "MNIST/raw"
    info = DatasetInfo("mnist", (1, 28, 28), 10, mean=(0.1307,), std=(0.3081,))


@register_dataset("fashion_mnist")
class FashionMnist(IdxDataset):
    """Zalando's Fashion-MNIST (MIT licence): 60,000 + 10,000 28x28 grey images, 10 classes."""

    class_name, folder_name = "FashionMNIST", "FashionMNIST/raw"
    info = DatasetInfo("fashion_mnist", (1, 28, 28), 10, mean=(0.2860,), std=(0.3530,))
    decompressed_md5 = {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    }
