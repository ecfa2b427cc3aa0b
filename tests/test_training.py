"""Training: schedules, the checkpoint schedule, bit-exact resume, NaN handling, safe loading."""

from __future__ import annotations

import pickle

import pytest
import torch

from netgeom.data.bundle import DataBundle, TrainSet
from netgeom.data.sources import DatasetInfo
from netgeom.errors import NetgeomError
from netgeom.models import create_model
from netgeom.params import TrainParams, validate
from netgeom.training import TrainingHooks, list_checkpoints, load_checkpoint, train
from netgeom.training.schedule import checkpoint_epochs, lr_factor, make_optimizer, make_scheduler


def bundle(n=192, seed=0) -> DataBundle:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    clean = (x.mean((1, 2, 3)) > 0).long() + 2 * (x[:, 0, 0, 0] > 0).long()
    y = clean.clone()
    y[:20] = (y[:20] + 1) % 4
    info = DatasetInfo("toy", (1, 8, 8), 4, (0.0,), (1.0,))
    return DataBundle(info, TrainSet(x, y, clean, torch.arange(n)), (x[:32], clean[:32]), (x[-32:], clean[-32:]))


def params(**overrides) -> TrainParams:
    base = {"epochs": 6, "batch_size": 32, "optimizer": "sgd", "lr": 0.05, "augment": True, "checkpoints": {"epochs": [2]}}
    return validate({**base, **overrides}, TrainParams, prefix="train.")


def model(seed=0):
    torch.manual_seed(seed)
    return create_model("mlp", (1, 8, 8), 4, width=16, depth=2)


def test_warmup_rises_linearly_and_reaches_the_target_lr():
    p = params(lr=0.1, warmup_epochs=2, warmup_start_lr=0.001, schedule="constant")
    optimizer = make_optimizer(torch.nn.Linear(2, 2).parameters(), p)
    scheduler = make_scheduler(optimizer, steps_per_epoch=5, p=p)
    seen = []
    for _ in range(12):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx(0.001)
    assert seen[5] == pytest.approx(0.001 + (0.1 - 0.001) * 0.5)
    assert seen[10] == pytest.approx(0.1) and seen[11] == pytest.approx(0.1)
    assert all(a < b for a, b in zip(seen[:10], seen[1:11]))


def test_step_multistep_and_cosine_schedules():
    assert lr_factor(45, 10, params(schedule="step", step_size=2, gamma=0.5)) == pytest.approx(0.25)  # epoch 4
    p = params(schedule="multistep", milestones=[2, 4], gamma=0.1)
    assert [lr_factor(e * 10, 10, p) for e in (1, 2, 4)] == pytest.approx([1, 0.1, 0.01])
    c = params(schedule="cosine", epochs=4)
    assert lr_factor(0, 10, c) == pytest.approx(1.0) and lr_factor(20, 10, c) == pytest.approx(0.5)
    assert lr_factor(40, 10, c) == pytest.approx(0.0, abs=1e-12)


def test_checkpoint_schedule():
    p = params(epochs=10, checkpoints={"epochs": [3], "every": 4})
    assert checkpoint_epochs(p) == [0, 3, 4, 8, 10]
    assert checkpoint_epochs(params(epochs=5, checkpoints={"init": False, "epochs": [2]})) == [2, 5]
    with pytest.raises(NetgeomError, match="train.checkpoints.epochs"):
        params(epochs=5, checkpoints={"epochs": [6]})
    # every study reads the final weights: a schedule without them is refused, not ignored
    with pytest.raises(NetgeomError, match="train.checkpoints.final: must be true"):
        params(epochs=5, checkpoints={"final": False})


def test_training_writes_the_scheduled_checkpoints_and_learns(tmp_path):
    net = model()
    result = train(net, bundle(), params(), seed=3, workdir=tmp_path)
    assert [e for e, _ in result.checkpoints] == [0, 2, 6]
    weights, meta = load_checkpoint(result.checkpoints[-1][1])
    assert all(torch.equal(weights[k], v) for k, v in net.state_dict().items())
    assert meta["epoch"] == 6 and "test_acc" in meta["metrics"]
    assert list(result.history["epoch"]) == list(range(7))
    assert result.final["train_loss"] < result.history["train_loss"].iloc[0]
    # clean/noisy split of train accuracy recombines to the overall accuracy
    noisy = 20 / 192
    h = result.final
    assert h["train_acc"] == pytest.approx((1 - noisy) * h["train_acc_clean"] + noisy * h["train_acc_noisy"], abs=1e-6)


@pytest.mark.parametrize(("n", "size", "spans"), [
    (65, 32, [(0, 32), (32, 65)]),  # a one-sample tail joins the batch before
    (66, 32, [(0, 32), (32, 64), (64, 66)]),
    (64, 32, [(0, 32), (32, 64)]),
    (1, 32, [(0, 1)]),
    (33, 32, [(0, 33)]),
])
def test_batch_spans_cover_every_sample_once_and_never_leave_one_alone(n, size, spans):
    from netgeom.batching import batch_spans

    assert batch_spans(n, size) == spans


def test_a_batchnorm_model_trains_on_a_set_one_sample_past_a_whole_batch(tmp_path):
    # 2 * 32 + 1 samples: the last batch held one sample and train-mode BN raised in epoch 1.
    torch.manual_seed(0)
    net = create_model("mlp", (1, 8, 8), 4, width=16, depth=2, batch_norm=True)
    result = train(net, bundle(n=65), params(epochs=2, checkpoints={"epochs": []}, augment=False), seed=3, workdir=tmp_path)
    assert [e for e, _ in result.checkpoints] == [0, 2] and torch.isfinite(torch.tensor(result.final["train_loss"]))


class Crash(RuntimeError):
    pass


def test_resume_after_a_crash_is_bit_identical(tmp_path, capsys):
    reference = model()
    train(reference, bundle(), params(), seed=5, workdir=tmp_path / "a")
    assert "resuming" not in capsys.readouterr().err  # a fresh start says nothing

    def crash_after_3(epoch, _row):
        if epoch == 3:
            raise Crash

    interrupted = model()
    with pytest.raises(Crash):
        train(interrupted, bundle(), params(), seed=5, workdir=tmp_path / "b", metadata={"h": 1}, hooks=TrainingHooks(on_epoch=crash_after_3))
    resumed = model(seed=99)  # a fresh process would build a different net; the state overrides it
    capsys.readouterr()
    result = train(resumed, bundle(), params(), seed=5, workdir=tmp_path / "b", metadata={"h": 1})
    said = capsys.readouterr().err
    assert said.startswith("netgeom: b: resuming after epoch ") and said.count("\n") == 1  # the rerun says so, once
    assert list(result.history["epoch"]) == list(range(7))
    for key, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_resume_ignores_state_from_other_settings(tmp_path):
    first = model()
    train(first, bundle(), params(epochs=2), seed=5, workdir=tmp_path, metadata={"h": 1})
    again = model()
    result = train(again, bundle(), params(epochs=2), seed=5, workdir=tmp_path, metadata={"h": 2})
    assert len(result.history) == 3  # trained from scratch, not resumed
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in first.state_dict().items())


def test_same_seed_same_weights_different_seed_different(tmp_path):
    a, b, c = model(), model(), model()
    train(a, bundle(), params(epochs=2), seed=1, workdir=tmp_path / "a")
    train(b, bundle(), params(epochs=2), seed=1, workdir=tmp_path / "b")
    train(c, bundle(), params(epochs=2), seed=2, workdir=tmp_path / "c")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not all(torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


class ExplodesAfter(torch.nn.Module):
    def __init__(self, calls: int):
        super().__init__()
        self.linear = torch.nn.Linear(64, 4)
        self.calls, self.limit = 0, calls

    def forward(self, x):
        self.calls += self.training
        out = self.linear(x.flatten(1))
        return out * float("nan") if self.training and self.calls > self.limit else out


@pytest.mark.parametrize("calls", [12, 17])  # 6 steps per epoch: NaN from the first or the last step of epoch 3
def test_nan_loss_stops_at_its_epoch_and_keeps_the_last_good_checkpoint(tmp_path, calls):
    """The check runs once per epoch (no per-step wait for the device), yet stops in the epoch
    of the first non-finite loss, before anything of that epoch is saved."""
    with pytest.raises(NetgeomError, match=r"loss became nan during epoch 3.*e0002\.safetensors"):
        train(ExplodesAfter(calls=calls), bundle(), params(augment=False), seed=0, workdir=tmp_path)
    assert [e for e, _ in list_checkpoints(tmp_path)] == [0, 2]


def test_early_exit_on_accuracy(tmp_path):
    result = train(model(), bundle(), params(epochs=50, stop_accuracy=0.5, augment=False), seed=0, workdir=tmp_path)
    assert result.stopped_early and len(result.history) < 51
    assert result.final["train_acc"] >= 0.5
    assert result.checkpoints[-1][0] == int(result.final["epoch"])


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_malicious_pickle_offered_as_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "e0001.safetensors"
    bad.write_bytes(pickle.dumps({"weight": Payload(str(marker))}))
    with pytest.raises(NetgeomError, match="not a valid safetensors file"):
        load_checkpoint(bad)
    assert not marker.exists()
    with pytest.raises(NetgeomError, match="does not exist"):
        load_checkpoint(tmp_path / "e0002.safetensors")


def conv_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(64, 4),
    )  # fmt: skip


def test_channels_last_training_matches_nchw_and_resumes_bit_identically(tmp_path):
    runs = {}
    for fmt in ("contiguous", "channels_last"):
        net = conv_model()
        result = train(net, bundle(), params(memory_format=fmt), seed=5, workdir=tmp_path / fmt)
        runs[fmt] = (net, result)
    (plain, plain_result), (fast, fast_result) = runs["contiguous"], runs["channels_last"]
    assert fast[0].weight.is_contiguous(memory_format=torch.channels_last)
    for key, value in plain.state_dict().items():  # same training up to float summation order
        torch.testing.assert_close(fast.state_dict()[key], value, rtol=1e-4, atol=1e-5)
    assert fast_result.final["train_loss"] == pytest.approx(plain_result.final["train_loss"], abs=1e-4)
    saved, _ = load_checkpoint(fast_result.checkpoints[-1][1])
    assert all(torch.equal(v, fast.state_dict()[k]) for k, v in saved.items())

    def crash_after_3(epoch, _row):
        if epoch == 3:
            raise Crash

    with pytest.raises(Crash):
        train(conv_model(), bundle(), params(), seed=5, workdir=tmp_path / "b", hooks=TrainingHooks(on_epoch=crash_after_3))
    resumed = conv_model(seed=99)
    train(resumed, bundle(), params(), seed=5, workdir=tmp_path / "b")
    for key, value in fast.state_dict().items():  # "auto" picked channels-last for the conv net
        assert torch.equal(value, resumed.state_dict()[key]), key


@pytest.mark.parametrize(
    "settings",
    [
        {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
        {"optimizer": "sgd", "lr": 0.05, "momentum": 0.0},
        {"optimizer": "adam", "lr": 1e-3},
        {"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-4},
        {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-2},
    ],
    ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()),
)
def test_the_foreach_optimisers_give_the_very_weights_of_the_per_tensor_ones(settings):
    """make_optimizer's foreach kernels (faster on the CPU) change no bit of training, against
    torch's optimiser built by hand with the same settings (so a dropped or misrouted momentum,
    nesterov or weight decay shows too)."""
    from netgeom.params import TrainParams
    from netgeom.training.schedule import make_optimizer

    by_hand = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[settings["optimizer"]]
    options = {k: v for k, v in settings.items() if k not in ("optimizer", "lr")}
    if settings["optimizer"] == "sgd":
        options.setdefault("momentum", TrainParams().momentum)
    else:
        options.setdefault("weight_decay", 0.0)
    x, y = torch.randn(256, 20, generator=torch.Generator().manual_seed(0)), torch.arange(256) % 5
    weights = []
    for ours in (True, False):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))
        if ours:
            optimiser = make_optimizer(model.parameters(), TrainParams(**settings))
            assert optimiser.defaults["foreach"] is True
        else:
            optimiser = by_hand(model.parameters(), lr=settings["lr"], foreach=False, **options)
        for i in range(0, 256, 32):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i : i + 32]), y[i : i + 32]).backward()
            optimiser.step()
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_the_fused_optimiser_follows_the_same_update_up_to_rounding(optimizer):
    """train.fused_optimizer: torch's fused kernel, the same update as the default's to rounding,
    not bit for bit (why it is opt-in), and the default keeps its foreach kernel."""
    from netgeom.params import TrainParams
    from netgeom.training.schedule import make_optimizer

    x, y = torch.randn(256, 20, generator=torch.Generator().manual_seed(0)), torch.arange(256) % 5
    weights = []
    for fused in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))
        settings = TrainParams(optimizer=optimizer, lr=1e-3, momentum=0.9, weight_decay=1e-4, fused_optimizer=fused)
        optimiser = make_optimizer(model.parameters(), settings)
        assert optimiser.defaults["fused"] is (True if fused else None) and optimiser.defaults["foreach"] is (None if fused else True)
        for i in range(0, 256, 32):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i : i + 32]), y[i : i + 32]).backward()
            optimiser.step()
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(weights[1], weights[0], rtol=1e-5, atol=1e-6)
    assert TrainParams().identity_dump() == TrainParams(fused_optimizer=False).identity_dump() != TrainParams(fused_optimizer=True).identity_dump()
