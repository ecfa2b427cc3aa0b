"""Datasets, splits and noise: oracles are exact counts, set algebra and the real file formats."""

from __future__ import annotations

import hashlib
import pickle
import struct

import numpy as np
import pytest
import scipy.io
import torch

from netgeom.data import get_source, list_datasets
from netgeom.data.augment import random_crop
from netgeom.data.noise import asymmetric, corrupt_inputs, corrupt_labels, symmetric, uniform
from netgeom.data.split import make_split
from netgeom.errors import NetgeomError

LABELS = np.repeat(np.arange(10), 50)  # a balanced pool of 500


def test_registry_lists_the_datasets():
    assert {"digits", "mnist1d", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "random"} <= set(list_datasets())
    with pytest.raises(NetgeomError, match="data.name"):
        get_source("imagenet")


def test_split_is_deterministic_disjoint_and_seeded():
    a = make_split("d", LABELS, 10, val_size=0.2, seed=0)
    b = make_split("d", LABELS, 10, val_size=0.2, seed=0)
    c = make_split("d", LABELS, 10, val_size=0.2, seed=1)
    assert a == b
    assert not set(a.train) & set(a.val)
    assert sorted(a.train + a.val) == list(range(500))
    assert len(a.val) == 100 and a.val != c.val


def test_stratified_split_keeps_class_proportions_and_counts_work():
    split = make_split("d", LABELS, 10, val_size=100, seed=3, stratified=True)
    assert np.bincount(LABELS[split.val], minlength=10).tolist() == [10] * 10
    plain = make_split("d", LABELS, 10, val_size=100, seed=3, stratified=False)
    assert len(plain.val) == 100


def test_class_subsampling_relabels_to_a_contiguous_range():
    split = make_split("d", LABELS, 10, val_size=0.1, seed=0, classes=3, class_seed=5)
    assert len(split.classes) == 3
    kept = LABELS[split.train + split.val]
    assert set(kept) == set(split.classes)
    assert sorted(set(split.relabel(kept))) == [0, 1, 2]
    other = make_split("d", LABELS, 10, val_size=0.1, seed=0, classes=3, class_seed=6)
    assert other.classes != split.classes


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"val_size": 500}, "data.val_size"), ({"val_size": 0.1, "classes": 11}, "data.classes"), ({"val_size": 0.1, "train_size": 1000}, "data.train_size")],
)
def test_split_rejects_impossible_sizes(kwargs, key):
    with pytest.raises(NetgeomError, match=key):
        make_split("d", LABELS, 10, seed=0, **kwargs)


@pytest.mark.parametrize("p", [0.0, 0.13, 0.2, 0.5, 1.0])
def test_symmetric_noise_flips_exactly_round_np_never_to_the_same_class(p):
    noisy = symmetric(LABELS, p, 10, np.random.default_rng(0))
    flipped = noisy != LABELS
    assert flipped.sum() == round(len(LABELS) * p)
    assert noisy.min() >= 0 and noisy.max() < 10


def test_symmetric_noise_targets_are_uniform_over_the_other_classes():
    labels = np.zeros(20000, dtype=np.int64)
    noisy = symmetric(labels, 0.9, 10, np.random.default_rng(1))
    counts = np.bincount(noisy[noisy != 0], minlength=10)[1:]
    expected = 18000 / 9
    assert counts.min() > 0 and np.abs(counts - expected).max() < 5 * np.sqrt(expected)


def test_uniform_noise_changes_labels_within_binomial_bounds():
    n, p, k = 20000, 0.3, 10
    labels = np.random.default_rng(2).integers(0, k, n)
    changed = (uniform(labels, p, k, np.random.default_rng(3)) != labels).sum()
    mean = n * p * (k - 1) / k  # a uniform redraw keeps the label with probability 1/K
    sd = np.sqrt(n * p * (k - 1) / k * (1 - p * (k - 1) / k))
    assert abs(changed - mean) < 5 * sd


def test_asymmetric_noise_works_on_unbalanced_classes():
    labels = np.concatenate([np.zeros(97), np.ones(3), np.full(10, 2)]).astype(np.int64)
    noisy = asymmetric(labels, 0.4, 4, np.random.default_rng(0))
    for c, n_c in [(0, 97), (1, 3), (2, 10)]:
        members = labels == c
        assert (noisy[members] != c).sum() == round(n_c * 0.4)
        assert set(noisy[members & (noisy != labels)]) <= {(c + 1) % 4}


def test_corrupt_labels_validates_its_inputs():
    with pytest.raises(NetgeomError, match="noise.label"):
        corrupt_labels(LABELS, "symmetric", 1.5, 10, 0)
    with pytest.raises(NetgeomError, match="noise.kind"):
        corrupt_labels(LABELS, "adversarial", 0.1, 10, 0)
    assert (corrupt_labels(LABELS, "symmetric", 0.2, 10, 7) == corrupt_labels(LABELS, "symmetric", 0.2, 10, 7)).all()


def test_input_corruption_is_keyed_by_sample():
    x = np.random.default_rng(0).standard_normal((6, 2, 4, 4)).astype(np.float32)
    ids = np.arange(100, 106)
    shared = corrupt_inputs(x, ids, "pixel_shuffle", 5, per_image=False)
    # one permutation for all images: the same positions move everywhere, channels alike
    order = np.argsort(np.argsort(shared[0, 0].ravel()))
    assert np.array_equal(np.sort(shared.reshape(6, 2, -1), -1), np.sort(x.reshape(6, 2, -1), -1))
    perm = [np.flatnonzero(x[0, 0].ravel() == v)[0] for v in shared[0, 0].ravel()]
    assert np.array_equal(shared[3, 1].ravel(), x[3, 1].ravel()[perm]) and len(order) == 16
    per_image = corrupt_inputs(x, ids, "pixel_shuffle", 5, per_image=True)
    subset = corrupt_inputs(x[2:4], ids[2:4], "pixel_shuffle", 5, per_image=True)
    assert np.array_equal(per_image[2:4], subset)  # a sample's corruption ignores the others
    noise = corrupt_inputs(x, ids, "random_pixels", 5, per_image=False)
    assert np.array_equal(noise[1:3], corrupt_inputs(x[1:3], ids[1:3], "random_pixels", 5, False))
    assert not np.allclose(noise, x)


def test_random_crop_shifts_by_the_drawn_offset():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5)
    generator = torch.Generator().manual_seed(0)
    out = random_crop(x, 1, generator)
    offsets = torch.randint(0, 3, (2, 2), generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for b in range(2):
        i, j = offsets[0, b].item(), offsets[1, b].item()
        assert torch.equal(out[b], padded[b, :, i : i + 5, j : j + 5])


def test_the_crop_pads_normalised_images_black_as_torchvisions_crop_before_normalize():
    from netgeom.data.augment import raw_zero

    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    raw = torch.rand(4, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    cropped = random_crop((raw - m) / s, 2, torch.Generator().manual_seed(3), raw_zero(mean, std))
    # torchvision's RandomCrop(padding=2) on raw images pads zeros (black); Normalize comes after
    expected = (random_crop(raw, 2, torch.Generator().manual_seed(3)) - m) / s
    assert torch.allclose(cropped, expected, atol=1e-6)
    assert (cropped == raw_zero(mean, std).view(1, 3, 1, 1)).any()  # some padding is in the crops


def test_embedded_datasets_materialise_deterministically(tmp_path):
    digests = []
    for folder in (tmp_path / "a", tmp_path / "b"):
        paths = get_source("digits").materialise(folder)
        digests.append([hashlib.md5(p.read_bytes()).hexdigest() for p in paths])
    assert digests[0] == digests[1]
    train = get_source("digits").load(tmp_path / "a", "train")
    assert train.x.shape == (1500, 1, 8, 8) and 0 <= train.x.min() and train.x.max() <= 1


def test_mnist1d_has_its_own_split(project):
    source = get_source("mnist1d")
    train, test = source.load(project / "data", "train"), source.load(project / "data", "test")
    assert train.x.shape == (4000, 1, 40) and test.x.shape == (1000, 1, 40)
    assert source.info.num_classes == 10


def test_the_split_records_the_raw_files_digest_and_loaders_refuse_files_changed_since(project):
    # split.json stands for the data in the DVC graph (the stages after `split` depend on it, not
    # on data/), so it must change with the dataset's bytes and with nothing else.
    import json

    from tests.conftest import ok, refused, write_params

    write_params(project, train={"epochs": 1})
    ok("split", "--quiet")
    first = json.loads((project / "artifacts" / "splits" / "split.json").read_text())
    assert set(first["content"]) == {"train", "test"}
    get_source("mnist1d").materialise(project / "data" / "elsewhere")  # another dataset's files
    ok("split", "--quiet")
    assert json.loads((project / "artifacts" / "splits" / "split.json").read_text()) == first
    ok("corrupt", "--quiet")

    test_x = project / "data" / "digits" / "test_x.npy"
    original = np.load(test_x)
    changed = original.copy()
    changed[0, 0, 0, 0] += 0.5
    np.save(test_x, changed)
    line = refused("train", "--quiet", key="data.root")
    assert "test files" in line and "changed since the split" in line
    assert not (project / "artifacts" / "runs").exists()  # nothing half-written
    ok("split", "--quiet")
    again = json.loads((project / "artifacts" / "splits" / "split.json").read_text())
    assert again["content"]["test"] != first["content"]["test"] and again["content"]["train"] == first["content"]["train"]
    assert again["train"] == first["train"]


def test_a_split_file_from_before_the_digest_still_loads(project):
    import json

    from netgeom.data.bundle import read_split

    path = project / "split.json"
    path.write_text(json.dumps({"dataset": "digits", "train": [0, 1], "val": [2], "classes": list(range(10))}))
    assert read_split(path).content == {}


def test_random_data_is_seeded_and_shaped():
    from netgeom.params import DataParams

    params = DataParams(name="random", random={"kind": "hypersphere", "shape": [3, 4, 4], "train_size": 20, "seed": 3})
    a = get_source("random", params).load(None, "train")
    b = get_source("random", params).load(None, "train")
    assert np.array_equal(a.x, b.x) and a.x.shape == (20, 3, 4, 4)
    assert np.allclose(np.linalg.norm(a.x.reshape(20, -1), axis=1), np.sqrt(48), rtol=1e-5)


# --------------------------------------------------------------------------- torchvision formats


def _idx(path, magic, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(struct.pack(">i", magic) + b"".join(struct.pack(">i", d) for d in array.shape) + array.tobytes())


def _write_mnist(root, folder, n=7):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    for prefix in ("train", "t10k"):
        _idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", 2051, images)
        _idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", 2049, labels)
    return images, labels


def _write_cifar(root, folder, files, label_key, meta, n=5):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, n).tolist()
    (root / folder).mkdir(parents=True)
    for name in files:
        with open(root / folder / name, "wb") as handle:
            pickle.dump({"data": images.reshape(n, -1), label_key: labels}, handle)
    with open(root / folder / meta[0], "wb") as handle:
        pickle.dump({meta[1]: [f"c{i}" for i in range(100)]}, handle)
    return images, labels


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_family_loads_from_idx_files(tmp_path, name, folder):
    images, labels = _write_mnist(tmp_path, folder)
    data = get_source(name).load(tmp_path, "train")
    assert data.x.shape == (7, 1, 28, 28)
    assert np.allclose(data.x[:, 0] * 255, images) and data.y.tolist() == labels.tolist()


def test_cifar10_loads_from_python_batches(tmp_path):
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    images, labels = _write_cifar(tmp_path, "cifar-10-batches-py", files, "labels", ("batches.meta", "label_names"))
    data = get_source("cifar10").load(tmp_path, "test")
    assert data.x.shape == (5, 3, 32, 32)
    assert np.allclose(data.x * 255, images) and data.y.tolist() == labels
    assert len(get_source("cifar10").load(tmp_path, "train").y) == 25  # five batches


def test_cifar100_loads_fine_labels(tmp_path):
    images, labels = _write_cifar(tmp_path, "cifar-100-python", ["train", "test"], "fine_labels", ("meta", "fine_label_names"))
    data = get_source("cifar100").load(tmp_path, "train")
    assert np.allclose(data.x * 255, images) and data.y.tolist() == labels


def test_svhn_loads_from_mat_files_and_maps_label_10_to_0(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)
    y = np.array([[10], [1], [2], [10]], dtype=np.uint8)
    for split in ("train", "test"):
        scipy.io.savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
    data = get_source("svhn").load(tmp_path, "train")
    assert data.y.tolist() == [0, 1, 2, 0]
    assert np.allclose(data.x * 255, x.transpose(3, 2, 0, 1))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "no X"])
def test_a_damaged_svhn_file_is_one_line_naming_where_it_is(tmp_path, damage):
    x, y = np.zeros((32, 32, 3, 2), dtype=np.uint8), np.ones((2, 1), dtype=np.uint8)
    for split in ("train", "test"):
        scipy.io.savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
    target = tmp_path / "train_32x32.mat"
    whole = target.read_bytes()
    if damage == "no X":
        scipy.io.savemat(target, {"Z": x})
    else:
        target.write_bytes(b"garbage" * 10 if damage == "garbage" else whole[: len(whole) // 2])
    with pytest.raises(NetgeomError, match=r"svhn \(train\): a file there cannot be read") as raised:
        get_source("svhn").load(tmp_path, "train")
    assert str(tmp_path) in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(NetgeomError):
        get_source("svhn").is_available(tmp_path)


def test_a_damaged_embedded_array_is_one_line_naming_it(tmp_path):
    source = get_source("digits")
    source.materialise(tmp_path)
    x_file = tmp_path / "digits" / "train_x.npy"
    whole = x_file.read_bytes()
    x_file.write_bytes(whole[:100])
    with pytest.raises(NetgeomError, match="train_x.npy: is not a valid .npy array file.*netgeom data materialise digits"):
        source.load(tmp_path, "train")
    np.save(x_file, np.array([{"code": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(NetgeomError, match="pickled objects, which are never loaded"):
        source.load(tmp_path, "train")
    x_file.write_bytes(whole)
    np.save(tmp_path / "digits" / "train_y.npy", np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(NetgeomError, match=r"train_y.npy: holds labels of shape \(3, 2\) for 1500 inputs"):
        source.load(tmp_path, "train")


def test_inputs_that_are_no_finite_numbers_are_one_line_naming_the_files(tmp_path):
    """A NaN pixel trained to a NaN loss, which the training loop blamed on the learning rate."""
    digits = get_source("digits")
    digits.materialise(tmp_path)
    x_file = tmp_path / "digits" / "test_x.npy"
    good = np.load(x_file)
    assert np.array_equal(digits.load(tmp_path, "test").x, good)
    for value in (np.nan, np.inf):
        x = good.astype(np.float32)
        x[3, 0, 5, 1], x[9, 0, 0, 0] = value, -np.inf
        np.save(x_file, x)
        with pytest.raises(NetgeomError, match=r"^data.root: the test files of digits under .* hold 2 NaN or infinite input values; restore"):
            digits.load(tmp_path, "test")
    np.save(x_file, good.astype(np.complex64))
    with pytest.raises(NetgeomError, match=r"hold complex64 inputs, not numbers"):
        digits.load(tmp_path, "test")


def test_missing_torchvision_dataset_is_one_clear_error(tmp_path):
    with pytest.raises(NetgeomError, match="data.root.*cifar10.*not found.*netgeom data fetch"):
        get_source("cifar10").load(tmp_path, "train")


def test_labels_that_are_no_class_of_the_dataset_are_one_line_naming_the_files(tmp_path):
    """A raw label past the classes was dropped from the split without a word; CIFAR text labels
    and fractional ones were tracebacks. Every loader goes through `DatasetSource.load`."""
    digits = get_source("digits")
    digits.materialise(tmp_path)
    y_file = tmp_path / "digits" / "train_y.npy"
    good = np.load(y_file)
    assert np.array_equal(digits.load(tmp_path, "train").y, good)
    for bad, found in [(10, "1500 labels in 0..10"), (-1, "1500 labels in -1..9")]:
        y = good.copy()
        y[7] = bad
        np.save(y_file, y)
        with pytest.raises(NetgeomError, match=rf"data.root: the train files of digits .* do not give one class in 0..9 for each of their 1500 inputs \({found}\)"):
            digits.load(tmp_path, "train")
    np.save(y_file, good + 0.5)
    with pytest.raises(NetgeomError, match=r"\(float64 labels of shape \(1500,\)\)"):
        digits.load(tmp_path, "train")

    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    _write_cifar(tmp_path, "cifar-10-batches-py", files, "labels", ("batches.meta", "label_names"))
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as handle:
        batch = pickle.load(handle)
    batch["labels"] = ["cat"] * len(batch["labels"])
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as handle:
        pickle.dump(batch, handle)
    with pytest.raises(NetgeomError, match=r"the test files of cifar10 .* \(<U3 labels of shape \(5,\)\)"):
        get_source("cifar10").load(tmp_path, "test")


def test_split_refuses_a_label_past_the_classes_instead_of_dropping_the_sample(project):
    from tests.conftest import refused, write_params

    y_file = project / "data" / "digits" / "train_y.npy"
    y = np.load(y_file)
    y[0] = 10
    np.save(y_file, y)
    write_params(project)
    refused("split", key="data.root")
    assert not (project / "artifacts").exists()
