"""`netgeom reinit-model`: re-initialisation robustness of a pretrained off-the-shelf model on
labelled images from a folder (the hp_arrangements seed's --pretrained re-initialisation)."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from netgeom.models import create_model
from netgeom.stages.model_reinit import IMAGENET_MEAN, IMAGENET_STD
from netgeom.studies.reinit import reinit_sweep
from tests.conftest import ok, refused

SIZE, CLASSES = 32, 10  # tv_resnet18 takes 32 x 32; a 10-way head makes top-5 differ from top-1
# one solid colour per image: after resize, crop and normalisation every pixel is known exactly
COLOURS = {"a_class": [(255, 0, 0), (200, 30, 30)], "b_class": [(0, 255, 0), (20, 180, 60)], "c_class": [(0, 0, 255), (90, 90, 250)]}


def solid_images(folder):
    for name, colours in COLOURS.items():
        (folder / name).mkdir(parents=True)
        for i, colour in enumerate(colours):
            Image.new("RGB", (48, 40), colour).save(folder / name / f"{i}.png")
    x = torch.stack([
        ((torch.tensor(c, dtype=torch.float32) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD))[:, None, None].expand(3, SIZE, SIZE)
        for colours in COLOURS.values() for c in colours
    ])
    y = torch.tensor([k for k, colours in enumerate(COLOURS.values()) for _ in colours])
    return x, y


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = solid_images(tmp_path / "images")
    torch.manual_seed(7)
    donor = create_model("tv_resnet18", (3, SIZE, SIZE), CLASSES).eval()
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, tmp_path / "pretrained.safetensors")
    return tmp_path, donor, x, y


def test_reinit_of_a_pretrained_file_equals_the_sweep_on_its_weights_and_images(project):
    root, donor, x, y = project
    out = ok("reinit-model", "tv_resnet18", "--pretrained", "pretrained.safetensors", "--images", "images", "--size", str(SIZE),
             "--classes", str(CLASSES), "--seed", "3")
    folder = root / "artifacts/models/reinit/tv_resnet18-file-pretrained"
    assert "top-5" in out and str(folder) in out
    table = pd.read_parquet(folder / "reinit.parquet")
    expected = reinit_sweep(
        donor, donor.state_dict(), {}, x, y, make_model=lambda: create_model("tv_resnet18", (3, SIZE, SIZE), CLASSES), rand_seed=3,
        batch_size=64, progress=False,
    )
    pd.testing.assert_frame_equal(table, expected, rtol=1e-5, atol=1e-6)
    assert set(table["checkpoint"]) == {"rand"} and table["layer"].nunique() == 21  # 20 convs + fc
    # top-5 of the trained model by brute force over the 10 logits
    with torch.no_grad():
        logits = donor(x)
    top5 = float(np.mean([int(y[i]) in torch.argsort(logits[i], descending=True)[:5].tolist() for i in range(len(y))]))
    assert table["trained_accuracy_top5"].iloc[0] == pytest.approx(top5)


def test_conv_only_and_weights_from_files_as_reset_sources(project):
    root, donor, x, y = project
    torch.manual_seed(11)
    other = create_model("tv_resnet18", (3, SIZE, SIZE), CLASSES)
    torch.save(other.state_dict(), root / "other.pt")
    (root / "inits.txt").write_text("# one file per line\nother.pt\n")
    ok("reinit-model", "tv_resnet18", "--pretrained", "pretrained.safetensors", "--images", "images", "--size", str(SIZE),
       "--classes", str(CLASSES), "--conv-only", "--inits-from", "inits.txt", "--out", "conv")
    table = pd.read_parquet(root / "conv/reinit.parquet")
    assert set(table["checkpoint"]) == {"file:other", "rand"} and "fc" not in set(table["layer"])
    # resetting layer L to other.pt's tensors = evaluating the donor with L's tensors swapped in by hand
    row = table[(table["checkpoint"] == "file:other") & (table["layer"] == "layer1.0.conv1")].iloc[0]
    swapped = {**donor.state_dict(), "layer1.0.conv1.weight": other.state_dict()["layer1.0.conv1.weight"]}
    net = create_model("tv_resnet18", (3, SIZE, SIZE), CLASSES).eval()
    net.load_state_dict(swapped)
    with torch.no_grad():
        accuracy = float((net(x).argmax(1) == y).float().mean())
    assert row["accuracy"] == pytest.approx(accuracy)


def test_bad_images_and_weights_are_one_line_and_write_nothing(project):
    root, donor, _, _ = project
    common = ("--size", str(SIZE), "--classes", str(CLASSES))
    refused("reinit-model", "tv_resnet18", "--pretrained", "missing.pt", "--images", "images", *common, key="--pretrained")
    refused("reinit-model", "tv_resnet18", "--pretrained", "pretrained.safetensors", "--images", "nowhere", *common, key="--images")
    (root / "empty").mkdir()
    refused("reinit-model", "tv_resnet18", "--pretrained", "pretrained.safetensors", "--images", "empty", *common, key="--images")
    with open(root / "pickled.pt", "wb") as f:
        pickle.dump({"fc.weight": object()}, f)
    refused("reinit-model", "tv_resnet18", "--pretrained", "pickled.pt", "--images", "images", *common, key="model.pretrained")
    torch.save(create_model("tv_vgg11", (3, SIZE, SIZE), CLASSES).state_dict(), root / "vgg.pt")
    refused("reinit-model", "tv_resnet18", "--pretrained", "vgg.pt", "--images", "images", *common, key="model.pretrained")
    refused("reinit-model", "tv_resnet18", "--pretrained", "pretrained.safetensors", "--images", "images", "--size", str(SIZE),
            "--classes", "2", key="--classes")
    refused("reinit-model", "tv_resnet18", "--pretrained", "pretrained.safetensors", "--images", "images", *common,
            "--inits-from", "pickled.pt", key="--inits-from")
    (root / "images/a_class/broken.png").write_bytes(b"not a png")
    refused("reinit-model", "tv_resnet18", "--pretrained", "pretrained.safetensors", "--images", "images", *common, key="--images")
    assert not (root / "artifacts").exists()
