"""`netgeom hyperplanes-model`: the hyperplane statistics of a model outside any training run,
from a local weights file (an off-the-shelf torchvision architecture) or a seeded random init."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from netgeom.models import create_model
from netgeom.studies.hyperplanes import network_statistics, projection_table
from tests.conftest import ok, refused


def test_a_pretrained_file_gives_the_statistics_of_its_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(123)  # "pretrained": some other model's weights, ImageNet-sized head
    donor = create_model("tv_resnet18", (3, 224, 224), 1000)
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, tmp_path / "imagenet.safetensors")
    out = ok("hyperplanes-model", "tv_resnet18", "--pretrained", str(tmp_path / "imagenet.safetensors"))
    folder = tmp_path / "artifacts/models/hyperplanes/tv_resnet18-file-imagenet"
    assert str(folder) in out and "mass" in out
    expected = network_statistics(donor, donor.state_dict())
    network = pd.read_parquet(folder / "network.parquet")
    assert network["mass"].iloc[0] == pytest.approx(expected["mass"].iloc[0], abs=1e-12)
    convs = [m for m in donor.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert int(network["filters"].iloc[0]) == sum(m.out_channels for m in convs)  # every spatial conv (1x1 shortcuts have no arrangement)
    projections = pd.read_parquet(folder / "projections.parquet")
    pd.testing.assert_frame_equal(projections, projection_table(donor, donor.state_dict()))


def test_a_random_init_is_seeded_and_differs_between_seeds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for seed in ("0", "0", "1"):
        ok("hyperplanes-model", "vgg8", "--seed", seed, "--input-shape", "3,32,32", "--classes", "10", "--out", f"s{seed}")
    torch.manual_seed(0)
    model = create_model("vgg8", (3, 32, 32), 10)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "s0/projections.parquet"), projection_table(model, model.state_dict()))
    one = pd.read_parquet(tmp_path / "s1/projections.parquet")
    assert not one["raw"].equals(pd.read_parquet(tmp_path / "s0/projections.parquet")["raw"])


def test_bad_models_and_files_are_one_line_and_write_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused("hyperplanes-model", "no_such_net", key="model.arch")
    refused("hyperplanes-model", "tv_resnet18", "--pretrained", "missing.pt", key="--pretrained")
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    refused("hyperplanes-model", "tv_resnet18", "--pretrained", str(tmp_path / "other.pt"), key="model.pretrained")
    refused("hyperplanes-model", "mlp", "--input-shape", "1,8,8", "--classes", "10", key="--with-linear")
    refused("hyperplanes-model", "vgg8", "--input-shape", "3,x", key="--input-shape")
    assert not (tmp_path / "artifacts").exists()
    (tmp_path / "notes.txt").write_text("mine")  # an --out that names a file is refused, not replaced by a folder
    refused("hyperplanes-model", "vgg8", "--input-shape", "3,32,32", "--classes", "10", "--out", "notes.txt", key="--out")
    assert (tmp_path / "notes.txt").read_text() == "mine"
