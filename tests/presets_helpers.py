"""Scaled-down copies of the real-data presets, run through the real pipeline (`netgeom repro`)
in a temporary git + DVC repository: the same stages, the same study settings, few epochs, two
widths, two seeds at most, a few hundred training images."""

from __future__ import annotations

import copy
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import yaml

from netgeom.cli import _merge as merge  # the preset command's own merge
from netgeom.data import get_source
from netgeom.data.idx import write_idx
from tests.conftest import commit_dvc_repo, copy_pipeline

REPO = Path(__file__).resolve().parents[1]


def scaled_down(preset: dict) -> dict:
    """The preset with its costs cut and its choices (data, model, studies, switches) kept."""
    small = copy.deepcopy(preset)
    small.setdefault("data", {})["train_size"] = 240
    train = small.setdefault("train", {})
    train.update(epochs=2, eval_every=1, checkpoints={"init": True, "epochs": [1]})
    grid = small.setdefault("grid", {})
    grid["widths"] = grid.get("widths", [64])[:2]
    grid["seed_offsets"] = grid.get("seed_offsets", [0])[:2]
    if (star := small.get("star")) and star.get("enabled", True):
        star.update(widths=star["widths"][:2], anchors=star["anchors"][:2], held_out=star["held_out"][:2], anchor_counts=[2], epochs=2)
    if (mli := small.get("mli")) and mli.get("enabled", True):
        mli.update(width=32, depth=2, seeds=[0], epochs=2)
    small["smoothness"] = {**small.get("smoothness", {}), "samples": 32}
    small["regions"] = {**small.get("regions", {}), "paths": 2}
    small["mlflow"] = {"enabled": False}
    return small


def spread(n: int, total: int) -> np.ndarray:
    """n indices spread evenly over `total` samples: mnist5k is sorted by class, so its first n
    would all be zeros and any net would score 100%."""
    return np.linspace(0, total - 1, n).round().astype(int)


def fashion_mnist_fixture(data: Path) -> None:
    """Small Fashion-MNIST-format files (real IDX bytes: 600 + 200 real MNIST digits of mnist5k)
    in torchvision's layout, for machines without Debian's package; loaded by the same reader."""
    source = get_source("mnist5k")
    source.materialise(data)
    raw = data / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, prefix, n in (("train", "train", 600), ("test", "t10k", 200)):
        part = source.load(data, split)
        chosen = spread(n, len(part.y))
        write_idx(raw / f"{prefix}-images-idx3-ubyte", np.rint(part.x[chosen, 0] * 255).astype(np.uint8))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", part.y[chosen].astype(np.uint8))


def cifar10_fixture(data: Path) -> None:
    """A small CIFAR-10 in its real on-disk format (python-pickled batches, read by the safe
    unpickler): 5 x 60 training and 100 test images made of real MNIST digits, each padded to
    32 x 32 and repeated over three channels, with their labels. No CIFAR here; the same reader."""
    source = get_source("mnist5k")
    source.materialise(data)
    folder = data / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(split: str, chosen: np.ndarray) -> dict:
        part = source.load(data, split)
        digits = np.rint(part.x[chosen, 0] * 255).astype(np.uint8)  # (n, 28, 28)
        images = np.repeat(np.pad(digits, ((0, 0), (2, 2), (2, 2)))[:, None], 3, axis=1)
        return {"data": images.reshape(len(chosen), -1), "labels": part.y[chosen].astype(int).tolist()}

    train = spread(300, len(source.load(data, "train").y))
    for i in range(5):  # every batch holds every class, as CIFAR's do
        (folder / f"data_batch_{i + 1}").write_bytes(pickle.dumps(batch("train", train[i::5])))
    (folder / "test_batch").write_bytes(pickle.dumps(batch("test", spread(100, len(source.load(data, "test").y)))))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(c) for c in range(10)]}))


def run_preset(name: str, root: Path, sh, overrides: dict | None = None) -> dict:
    """Run the scaled-down preset `name` (with `overrides` on top) end to end; returns
    reports/summary.json."""
    copy_pipeline(root)
    fashion_mnist_fixture(root / "data")
    cifar10_fixture(root / "data")
    write_merged_params(root, merge(scaled_down(yaml.safe_load((REPO / "presets" / f"{name}.yaml").read_text())), overrides or {}))
    commit_dvc_repo(root, sh)
    sh(sys.executable, "-m", "netgeom", "check", cwd=root)
    sh(sys.executable, "-m", "netgeom", "repro", "-j", "2", "--quiet", cwd=root)
    return json.loads((root / "reports" / "summary.json").read_text())


def write_merged_params(root: Path, overrides: dict) -> None:
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(merge(base, overrides), sort_keys=False))
