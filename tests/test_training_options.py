"""The seeds' training options: label smoothing, gradient clipping, --kill-plateaus,
--snapshot-all-until, --unnormalize; and that options added later leave old run identities alone."""

from __future__ import annotations

import hashlib
import json

import numpy as np

import pytest
import torch
import torch.nn.functional as F

from netgeom.data.bundle import DataBundle, TrainSet
from netgeom.data.sources import DatasetInfo
from netgeom.errors import NetgeomError
from netgeom.params import CheckpointParams, Params, TrainParams, checkpoint_epochs
from netgeom.runs import identity_hash
from netgeom.studies.star import star_objective
from netgeom.training.loop import smoothed_cross_entropy, train


def tiny_bundle(n: int = 64, val: int = 16, seed: int = 0) -> DataBundle:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n + val, 1, 6, generator=g), torch.randint(0, 3, (n + val,), generator=g)
    info = DatasetInfo("tiny", (1, 6), 3, (0.0,), (1.0,))
    return DataBundle(info, TrainSet(x[:n], y[:n], y[:n].clone(), torch.arange(n)), (x[n:], y[n:]), (x[n:], y[n:]))


def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


def test_label_smoothing_is_the_mixture_of_the_label_and_the_uniform_target():
    torch.manual_seed(1)
    model, x, y, eps = net(), torch.randn(7, 1, 6), torch.randint(0, 3, (7,)), 0.1
    log_p = F.log_softmax(model(x), dim=1)
    by_hand = ((1 - eps) * -log_p.gather(1, y[:, None]).squeeze(1) + eps * -log_p.mean(1)).mean()
    got = smoothed_cross_entropy(eps)(model, x, y, torch.Generator())
    assert got.item() == pytest.approx(by_hand.item(), rel=1e-6)
    plain = smoothed_cross_entropy(0.0)(model, x, y, torch.Generator())
    assert torch.equal(plain, F.cross_entropy(model(x), y))  # bit for bit the old objective
    # the star objective at t = 0 (theta* itself) is the same smoothed loss
    star = star_objective(model, dict(model.named_parameters()), dict(model.named_parameters()), 0.0, x, y, label_smoothing=eps)
    assert star.item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_gradient_clipping_scales_the_one_step_to_the_norm(tmp_path):
    data, clip = tiny_bundle(), 0.05
    p = TrainParams(epochs=1, batch_size=64, optimizer="sgd", lr=1.0, momentum=0.0, grad_clip_norm=clip, checkpoints={"init": False})
    model = net()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    # the one full-batch step's gradient, by hand, clipped by hand
    F.cross_entropy(model(data.train.x), data.train.y).backward()
    grads = {k: v.grad.clone() for k, v in model.named_parameters()}
    norm = torch.sqrt(sum((g**2).sum() for g in grads.values()))
    assert norm > clip  # the case where clipping acts
    model.zero_grad()
    train(model, data, p, seed=0, workdir=tmp_path / "w")
    for name, value in model.state_dict().items():
        assert torch.allclose(value, start[name] - grads[name] * (clip / norm), atol=1e-6), name


def test_kill_plateaus_stops_when_the_validation_accuracy_repeats(tmp_path):
    frozen = dict(epochs=6, batch_size=64, optimizer="sgd", lr=1e-30, momentum=0.0, eval_every=1, checkpoints={"init": False})
    stopped = train(net(), tiny_bundle(), TrainParams(**frozen, kill_plateaus_within=10), seed=0, workdir=tmp_path / "a")
    # epoch 1 has no earlier evaluation to repeat (the seed starts from 0); epoch 2 repeats it
    assert stopped.stopped_early and list(stopped.history["epoch"]) == [0, 1, 2]
    late = train(net(), tiny_bundle(), TrainParams(**frozen, kill_plateaus_within=1), seed=0, workdir=tmp_path / "b")
    assert not late.stopped_early and int(late.history["epoch"].iloc[-1]) == 6
    no_val = tiny_bundle(val=0)
    with pytest.raises(NetgeomError, match="kill_plateaus_within"):
        train(net(), no_val, TrainParams(**frozen, kill_plateaus_within=10), seed=0, workdir=tmp_path / "c")


def test_snapshot_all_until_checkpoints_every_epoch_up_to_it_then_every_k():
    p = TrainParams(epochs=20, checkpoints=CheckpointParams(init=True, all_until=4, every=5))
    assert checkpoint_epochs(p) == [0, 1, 2, 3, 4, 5, 10, 15, 20]
    assert checkpoint_epochs(TrainParams(epochs=3, checkpoints=CheckpointParams(all_until=9))) == [0, 1, 2, 3]


def test_unnormalised_inputs_are_the_raw_values(project):
    from tests.conftest import ok, write_params

    write_params(project, data={"name": "digits", "val_size": 0.1, "normalize": False})
    ok("split"), ok("corrupt")
    from netgeom.layout import Layout
    from netgeom.params import load_params
    from netgeom.runs import load_cell_data

    raw = load_cell_data(load_params(), Layout(project))
    write_params(project)
    normalised = load_cell_data(load_params(), Layout(project))
    assert raw.info.mean == (0.0,) and raw.info.std == (1.0,)
    assert 0.0 <= raw.train.x.min() and raw.train.x.max() <= 1.0
    assert torch.allclose(normalised.train.x, (raw.train.x - 0.3053) / 0.3760, atol=1e-5)


def test_input_corruption_reaches_val_and_test_only_with_input_splits_all(project):
    # Zhang et al. test a model trained on shuffled pixels on images shuffled the same way; the
    # hyperplanes seed shuffles the training images only (the default).
    from netgeom.layout import Layout
    from netgeom.params import load_params
    from netgeom.runs import load_cell_data
    from tests.conftest import ok, write_params

    write_params(project, data={"name": "digits", "val_size": 0.1})
    ok("split"), ok("corrupt")
    clean = load_cell_data(load_params(), Layout(project))
    write_params(project, data={"name": "digits", "val_size": 0.1}, noise={"input": "pixel_shuffle", "seed": 3})
    train_only = load_cell_data(load_params(), Layout(project))
    write_params(project, data={"name": "digits", "val_size": 0.1}, noise={"input": "pixel_shuffle", "seed": 3, "input_splits": "all"})
    everywhere = load_cell_data(load_params(), Layout(project))

    def positions(x):
        return x.reshape(len(x), -1)

    order = torch.from_numpy(np.random.default_rng(3).permutation(64))  # the one permutation of 8x8 positions
    assert torch.equal(positions(train_only.train.x), positions(clean.train.x)[:, order])
    assert torch.equal(train_only.test[0], clean.test[0]) and torch.equal(train_only.val[0], clean.val[0])
    assert torch.equal(everywhere.train.x, train_only.train.x)
    for name in ("val", "test"):
        assert torch.equal(positions(getattr(everywhere, name)[0]), positions(getattr(clean, name)[0])[:, order])
        assert torch.equal(getattr(everywhere, name)[1], getattr(clean, name)[1])


def test_options_added_later_leave_the_identity_of_old_runs_alone():
    params = Params()

    from netgeom.code import code_digest
    from netgeom.runs import TRAINING_CODE

    def old_formula(p: Params) -> str:  # identity_hash before the options existed (at the same code)
        data, train_ = p.data.model_dump(mode="json"), p.train.model_dump(mode="json")
        data.pop("normalize")
        data.pop("root"), data.pop("random")  # never identity: the content's digest counts, not where it lies
        for name in ("label_smoothing", "grad_clip_norm", "kill_plateaus_within", "fused_optimizer"):
            train_.pop(name)
        train_["checkpoints"].pop("all_until")
        model = p.model.model_dump(mode="json")
        model.pop("bottleneck"), model.pop("pretrained")  # the file counts by its content
        noise = p.noise.model_dump(mode="json")
        noise.pop("input_splits")
        payload = {"seed": p.seed, "code": code_digest(*TRAINING_CODE), "device": "cpu", "deterministic": p.execution.deterministic,
                   "groups": [data, noise, model, train_], "data": "d"}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    assert identity_hash(params, "d") == old_formula(params)
    changed = params.model_copy(update={"train": params.train.model_copy(update={"label_smoothing": 0.1})})
    assert identity_hash(changed, "d") != identity_hash(params, "d")  # set away from its default, it counts
    everywhere = params.model_copy(update={"noise": params.noise.model_copy(update={"input": "pixel_shuffle", "input_splits": "all"})})
    assert identity_hash(everywhere, "d") != identity_hash(params.model_copy(update={"noise": everywhere.noise.model_copy(update={"input_splits": "train"})}), "d")
    narrowed = params.model_copy(update={"model": params.model.model_copy(update={"depth": 2, "bottleneck": 8})})
    assert identity_hash(narrowed, "d") != identity_hash(params.model_copy(update={"model": params.model.model_copy(update={"depth": 2})}), "d")


def test_where_the_data_or_the_pretrained_file_lies_is_not_part_of_the_identity(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("a.safetensors", "b.safetensors"):
        (tmp_path / name).write_bytes(b"the same weights")
    params = Params()
    moved = params.model_copy(update={"data": params.data.model_copy(update={"root": "elsewhere"})})
    assert identity_hash(moved, "d") == identity_hash(params, "d")  # the same content (digest "d")
    synthetic = params.model_copy(update={"data": params.data.model_copy(update={"random": params.data.random.model_copy(update={"classes": 3})})})
    assert identity_hash(synthetic, "d") == identity_hash(params, "d")  # unused unless data.name is random
    random = params.model_copy(update={"data": params.data.model_copy(update={"name": "random"})})
    random3 = random.model_copy(update={"data": random.data.model_copy(update={"random": random.data.random.model_copy(update={"classes": 3})})})
    assert identity_hash(random3, "d") != identity_hash(random, "d")
    a, b = (params.model_copy(update={"model": params.model.model_copy(update={"pretrained": n})}) for n in ("a.safetensors", "b.safetensors"))
    assert identity_hash(a, "d") == identity_hash(b, "d") != identity_hash(params, "d")


def test_the_identity_counts_cpu_threads_and_a_pretrained_file_by_its_content(tmp_path):
    params = Params()
    threaded = params.model_copy(update={"execution": params.execution.model_copy(update={"threads": 2})})
    assert identity_hash(threaded, "d", "cpu") != identity_hash(params, "d", "cpu")  # sums split by thread
    assert identity_hash(threaded, "d", "cuda") == identity_hash(params, "d", "cuda")  # the GPU's kernels ignore it
    weights = tmp_path / "weights.safetensors"
    with_file = params.model_copy(update={"model": params.model.model_copy(update={"pretrained": str(weights)})})
    weights.write_bytes(b"first")
    first = identity_hash(with_file, "d")
    weights.write_bytes(b"other")
    assert identity_hash(with_file, "d") != first  # the same path, other weights: another run
    weights.unlink()
    with pytest.raises(NetgeomError) as missing:
        identity_hash(with_file, "d")
    assert missing.value.key == "model.pretrained"


def test_a_pretrained_runs_rebuilt_model_is_a_random_initialisation_not_the_files_weights(tmp_path):
    """model_for_run gives the template the checkpoints are loaded into and the fresh draws of the
    random-init curves and reinit's `rand`: a pretrained run's file must not stand in for those."""
    from safetensors.torch import save_file

    from netgeom.models import create_model
    from netgeom.runs import model_for_run

    shape, classes = (1, 8, 8), 10
    donor = create_model("mlp", shape, classes, width=16, depth=1)
    weights = tmp_path / "weights.safetensors"
    save_file({k: torch.full_like(v, 0.5) for k, v in donor.state_dict().items()}, weights)
    info = {"params": {"model": {"arch": "mlp", "width": 16, "depth": 1, "pretrained": str(weights)}},
            "dataset": {"input_shape": list(shape), "num_classes": classes}}
    draws = []
    for _ in range(2):
        torch.manual_seed(5)
        draws.append(model_for_run(info).state_dict())
    torch.manual_seed(5)
    fresh = create_model("mlp", shape, classes, width=16, depth=1).state_dict()
    for key, value in fresh.items():
        assert torch.equal(draws[0][key], value) and torch.equal(draws[1][key], value), key
        assert not torch.all(draws[0][key] == 0.5), key
