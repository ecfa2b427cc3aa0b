"""Layer re-initialisation robustness (Zhang, Bengio and Singer 2019, "Are All Layers Created Equal?").

For each layer with parameters (every Conv*d and nn.Linear; weight and bias together) and each
chosen checkpoint epoch, plus `rand` (a fresh draw from the model's own initialiser), the
trained network is evaluated with that one layer's tensors replaced by the checkpoint's; top-1
accuracy and mean cross-entropy on the given (x, y) are reported with the relative drop
(acc_trained - acc) / acc_trained (NaN when acc_trained is 0). Replacement never touches the
caller's module: tensors are swapped with torch.func.functional_call, so "restore" is implicit.

Cost. The network is split at each reset layer with torch.fx: the prefix (every node before the
first node that touches the layer's tensors) does not depend on the layer, so its values are
computed once per batch with the trained weights and shared by every checkpoint of that layer;
only the suffix runs per checkpoint. The prefixes are chained: one trained forward pass per
batch yields the cached values at every cut, so the whole sweep costs one full forward plus one
suffix per (layer, checkpoint). The cache is exact for any traced graph, residual connections
included: what is cached at a cut is every prefix value the suffix reads (for a ResNet block's
second conv that is both the branch activation and the block input the shortcut adds back), and
no prefix value can depend on the reset layer. Tied weights or direct parameter reads move the
cut to the first node touching the tensors. A model fx cannot trace is evaluated with a full
forward pass per (layer, checkpoint) (`prefix_cached` False in the table).

BatchNorm. The model runs in eval mode with the trained model's BN running statistics and
affine parameters everywhere, including the BN right after the reset layer; `reset_bn=True`
resets that BN (affine and running statistics) together with the layer, from the same
checkpoint or the fresh draw. Dropout is off (eval mode).

`rand`: `make_model()` is called under a forked torch RNG seeded from `rand_seed` through
numpy's SeedSequence (a stream separate from the training seed, so rand_seed=42 does not
reproduce the epoch-0 init of a model trained with seed 42); one fresh model serves every layer
(only one layer is reset at a time, so this equals independent draws per layer).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from netgeom.errors import NetgeomError
from netgeom.progress import progress as progress_bar
from netgeom.studies.hyperplanes import is_conv, trace

StateDict = Mapping[str, Tensor]
RAND = "rand"
_RAND_STREAM = 0x7265696E  # "rein": keeps the rand draw off the stream a training seed uses

COLUMNS = [
    "layer", "position", "checkpoint", "epoch", "accuracy", "loss", "trained_accuracy", "trained_loss", "relative_drop",
    "prefix_cached", "accuracy_top5", "trained_accuracy_top5",
]  # fmt: skip
LAYER_KINDS = ("conv_and_linear", "conv")  # which layers a default sweep resets ("conv": the hp_arrangements seed's default)


def is_reinit_layer(module: nn.Module) -> bool:
    """Conv*d or nn.Linear with at least one parameter of its own."""
    return (is_conv(module) or isinstance(module, nn.Linear)) and any(True for _ in module.parameters(recurse=False))


def random_init_state(make_model: Callable[[], nn.Module], seed: int) -> dict[str, Tensor]:
    """State dict of a fresh `make_model()` drawn from a torch RNG derived from `seed`."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise NetgeomError("reinit.seed", f"must be a non-negative integer, got {seed!r}")
    derived = int(np.random.SeedSequence([_RAND_STREAM, int(seed)]).generate_state(1, dtype=np.uint64)[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived)
        fresh = make_model()
    return {k: v.detach().clone() for k, v in fresh.state_dict().items()}


# --------------------------------------------------------------------------- splitting


@dataclass
class _Cut:
    """A place in the graph: nodes before `index` are the prefix; `live` are what the suffix reads."""

    index: int
    live: list[torch.fx.Node]
    suffix: nn.Module  # live values -> model output
    advance: nn.Module  # live values of the previous cut (or the model input) -> these


def _tensor_owners(model: nn.Module, layer_keys: list[str]) -> set[str]:
    """Every qualified name (parameter or buffer) under which the tensors of `layer_keys` appear."""
    named = _named_tensors(model)
    tensors = {id(named[k]) for k in layer_keys}
    return {k for k, t in named.items() if id(t) in tensors}


def _named_tensors(model: nn.Module) -> dict[str, Tensor]:
    params = dict(model.named_parameters(remove_duplicate=False))
    return params | dict(model.named_buffers(remove_duplicate=False))


def _touches(node: torch.fx.Node, names: set[str]) -> bool:
    if node.op not in ("call_module", "get_attr"):
        return False
    target = node.target
    return any(n == target or n.startswith(target + ".") for n in names)


def _first_touch(nodes: list[torch.fx.Node], names: set[str]) -> int:
    return next(i for i, node in enumerate(nodes) if _touches(node, names))


def _live_nodes(nodes: list[torch.fx.Node], index: int, position: dict[torch.fx.Node, int]) -> list[torch.fx.Node]:
    """Prefix nodes (before `index`) that a node at or after `index` reads, in graph order."""
    return [n for n in nodes[:index] if any(position[u] >= index for u in n.users)]


def _subgraph(gm: torch.fx.GraphModule, nodes: list[torch.fx.Node], start: int, stop: int, inputs, outputs) -> torch.fx.GraphModule:
    """GraphModule over nodes[start:stop] taking `inputs` as placeholders; returns `outputs`
    (a tuple) or, when `outputs` is None, what the model returns. Submodules are shared with `gm`."""
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {n: graph.placeholder(f"live_{n.name}") for n in inputs}
    for node in nodes[start:stop]:
        if node.op == "output":
            graph.output(torch.fx.map_arg(node.args[0], env.__getitem__))
        else:
            env[node] = graph.node_copy(node, env.__getitem__)
    if outputs is not None:
        graph.output(tuple(env[n] for n in outputs))
    return torch.fx.GraphModule(gm, graph)


def _cuts(gm: torch.fx.GraphModule, indices: list[int]) -> dict[int, _Cut]:
    """A cut per distinct node index, each with its suffix and the segment from the previous cut."""
    nodes = list(gm.graph.nodes)
    position = {n: i for i, n in enumerate(nodes)}
    cuts: dict[int, _Cut] = {}
    previous, previous_live = 0, []
    for index in sorted(set(indices)):
        live = _live_nodes(nodes, index, position)
        cuts[index] = _Cut(
            index, live,
            suffix=_subgraph(gm, nodes, index, len(nodes), live, None),
            advance=_subgraph(gm, nodes, previous, index, previous_live, live),
        )  # fmt: skip
        previous, previous_live = index, live
    return cuts


# --------------------------------------------------------------------------- the plan


@dataclass
class _Target:
    """One reset: the layer, the state keys it replaces, and the cut whose suffix evaluates it."""

    layer: str
    position: int
    keys: list[str]
    cut: int


def eligible_layers(model: nn.Module) -> list[str]:
    """Module paths of the layers that can be reset, in forward order (registration order when
    the model cannot be traced)."""
    gm = trace(model)
    modules = dict(model.named_modules())
    if gm is None:
        order = list(modules)
    else:
        order = list(dict.fromkeys(n.target for n in gm.graph.nodes if n.op == "call_module"))
    return [name for name in order if is_reinit_layer(modules[name])]


def _following_bn(model: nn.Module, gm: torch.fx.GraphModule | None, layer: str) -> str | None:
    """The BatchNorm fed only by `layer` (the conv-BN pair), if any."""
    modules = dict(model.named_modules())
    if gm is None:
        names = list(modules)
        after = names[names.index(layer) + 1] if names.index(layer) + 1 < len(names) else None
        return after if isinstance(modules.get(after), _BatchNorm) else None
    node = next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == layer)
    users = list(node.users)
    if len(users) == 1 and users[0].op == "call_module" and isinstance(modules[users[0].target], _BatchNorm):
        return users[0].target
    return None


def _state_keys(model: nn.Module, module_name: str) -> list[str]:
    module = model.get_submodule(module_name)
    local = [n for n, _ in module.named_parameters(recurse=False)] + [n for n, _ in module.named_buffers(recurse=False)]
    return [f"{module_name}.{n}" for n in local]


def _check_layers(model: nn.Module, layers: Sequence[str] | None, kinds: str = "conv_and_linear") -> list[str]:
    available = eligible_layers(model)
    if not available:
        raise NetgeomError("reinit.layers", f"{type(model).__name__} has no conv or linear layer with parameters to reset")
    if kinds not in LAYER_KINDS:
        raise NetgeomError("reinit.layer_kinds", f"unknown {kinds!r}; allowed: {', '.join(LAYER_KINDS)}")
    if layers is None:
        if kinds == "conv":
            modules = dict(model.named_modules())
            available = [name for name in available if is_conv(modules[name])]
            if not available:
                raise NetgeomError("reinit.layer_kinds", f"conv: {type(model).__name__} has no convolutional layer; use conv_and_linear")
        return available
    layers = list(layers)
    unknown = [name for name in layers if name not in available]
    if unknown or not layers:
        what = f"unknown or not resettable: {', '.join(map(repr, unknown))}" if unknown else "empty list"
        raise NetgeomError("reinit.layers", f"{what}; allowed: {', '.join(available)}")
    return [name for name in available if name in layers]  # forward order, once each


def _check_epochs(checkpoints: Mapping[int, StateDict], epochs: Sequence[int] | None) -> list[int]:
    if epochs is None:
        return sorted(checkpoints)
    missing = [e for e in epochs if e not in checkpoints]
    if missing:
        raise NetgeomError("reinit.epochs", f"no checkpoint at epoch {', '.join(map(str, missing))}; have {sorted(checkpoints)}")
    return sorted(set(epochs))


def _check_data(x: Tensor, y: Tensor, batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise NetgeomError("reinit.batch_size", f"must be a positive integer, got {batch_size!r}")
    if len(x) == 0 or len(x) != len(y):
        raise NetgeomError("reinit.inputs", f"need as many labels as inputs (at least one), got {len(x)} inputs and {len(y)} labels")


def _replacements(sources: dict[str, StateDict], targets: list[_Target], reference: StateDict) -> dict[tuple[str, str], dict[str, Tensor]]:
    """(layer, checkpoint name) -> the tensors that replace the layer's, checked against `reference`."""
    out = {}
    for name, state in sources.items():
        for target in targets:
            tensors = {}
            for key in target.keys:
                if key not in state or state[key].shape != reference[key].shape:
                    found = "missing" if key not in state else f"shape {tuple(state[key].shape)} vs {tuple(reference[key].shape)}"
                    setting = "reinit.rand" if name == RAND else "reinit.epochs" if name.isdigit() else "reinit.inits_from"
                    raise NetgeomError(setting, f"checkpoint {name} does not fit the model: {key} {found}")
                tensors[key] = state[key].to(device=reference[key].device, dtype=reference[key].dtype)
            out[(target.layer, name)] = tensors
    return out


class _Tally:
    """Correct predictions and summed cross-entropy, accumulated in float64 over batches."""

    def __init__(self) -> None:
        self.correct, self.correct5, self.loss = 0, 0, 0.0

    def add(self, logits: Tensor, y: Tensor) -> None:
        self.correct += int((logits.argmax(dim=1) == y).sum())
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # top-5 (all classes when fewer)
        self.correct5 += int((top == y[:, None]).any(dim=1).sum())
        self.loss += float(F.cross_entropy(logits.double(), y, reduction="sum"))


# --------------------------------------------------------------------------- the sweep


def reinit_sweep(
    model: nn.Module,
    trained: StateDict,
    checkpoints: Mapping[int, StateDict],
    x: Tensor,
    y: Tensor,
    *,
    layers: Sequence[str] | None = None,
    epochs: Sequence[int] | None = None,
    make_model: Callable[[], nn.Module] | None = None,
    rand_seed: int | None = None,
    reset_bn: bool = False,
    batch_size: int = 256,
    progress: bool | None = None,
    layer_kinds: str = "conv_and_linear",
    extra_sources: Mapping[str, StateDict] | None = None,
) -> pd.DataFrame:
    """Accuracy and loss with one layer at a time reset to a checkpoint's (or a fresh) value.

    model: the architecture (its own weights are not used and not changed); trained: the state
    dict evaluated; checkpoints: {epoch: state dict}, of which `epochs` (default all) are used;
    layers: module paths (default every eligible layer, see `eligible_layers`, or with
    `layer_kinds="conv"` only the convolutions, the hp_arrangements seed's default); `rand` rows are
    added when `rand_seed` is given, drawing from `make_model` (a builder of the same
    architecture with its own initialiser); `extra_sources` {name: state dict} are further reset
    sources (e.g. weights from files, the hp_arrangements seed's --inits-from), between the
    epochs and `rand`.

    Returns one row per (layer, checkpoint), layers in forward order, checkpoints by epoch then
    `rand`. Columns: layer, position (index among the model's eligible layers), checkpoint
    (str: the epoch or 'rand'), epoch (Int64, <NA> for rand), accuracy, loss (mean
    cross-entropy), trained_accuracy, trained_loss, relative_drop, prefix_cached (bool),
    accuracy_top5, trained_accuracy_top5.
    `progress`: a bar over the batches (None: see `netgeom.progress.shows_progress`; False: none).
    """
    chosen = _check_layers(model, layers, layer_kinds)
    epoch_list = _check_epochs(checkpoints, epochs)
    _check_data(x, y, batch_size)
    sources: dict[str, StateDict] = {str(e): checkpoints[e] for e in epoch_list}
    for name, state in (extra_sources or {}).items():
        if name.isdigit() or name == RAND or name in sources:
            raise NetgeomError("reinit.inits_from", f"source name {name!r} clashes with an epoch or rand")
        sources[name] = state
    if rand_seed is not None:
        if make_model is None:
            raise NetgeomError("reinit.rand", "a rand_seed needs make_model, the builder whose initialiser draws the fresh layer")
        sources[RAND] = random_init_state(make_model, rand_seed)
    if not sources:
        raise NetgeomError("reinit.epochs", "no checkpoint to reset to (give checkpoints or a rand_seed)")

    net = _trained_copy(model, trained)
    gm = trace(net)
    all_layers = eligible_layers(net)
    targets = _targets(net, gm, chosen, all_layers, reset_bn)
    replacements = _replacements(sources, targets, net.state_dict())
    if gm is None:
        tallies, trained_tally = _sweep_full(net, targets, sources, replacements, x, y, batch_size, progress)
    else:
        tallies, trained_tally = _sweep_cached(gm, targets, sources, replacements, x, y, batch_size, progress)
    return _table(targets, sources, tallies, trained_tally, len(x), cached=gm is not None)


def _trained_copy(model: nn.Module, trained: StateDict) -> nn.Module:
    net = copy.deepcopy(model)
    try:
        net.load_state_dict(dict(trained))
    except RuntimeError as err:
        raise NetgeomError("reinit.trained", f"the trained state dict does not fit the model ({str(err).splitlines()[0]})") from None
    return net.eval()


def _targets(net: nn.Module, gm, chosen: list[str], all_layers: list[str], reset_bn: bool) -> list[_Target]:
    nodes = list(gm.graph.nodes) if gm is not None else []
    targets = []
    for layer in chosen:
        keys = _state_keys(net, layer)
        bn = _following_bn(net, gm, layer) if reset_bn else None
        if bn is not None:
            keys += _state_keys(net, bn)
        # The first node that reads any of the reset tensors (under any tied name): nothing before it
        # depends on them, so its prefix can be shared by every checkpoint.
        cut = _first_touch(nodes, _tensor_owners(net, keys)) if gm is not None else 0
        targets.append(_Target(layer, all_layers.index(layer), keys, cut))
    return targets


@torch.no_grad()
def _sweep_cached(gm, targets, sources, replacements, x, y, batch_size, progress=None):
    """One trained forward per batch through the chained cuts; one suffix per (layer, checkpoint)."""
    cuts = _cuts(gm, [t.cut for t in targets])
    by_cut = {index: [t for t in targets if t.cut == index] for index in cuts}
    tallies = {key: _Tally() for key in replacements}
    trained_tally = _Tally()
    device = _device(gm)
    for lo in progress_bar(range(0, len(x), batch_size), desc="reinit batches", enabled=progress):
        xb, yb = x[lo : lo + batch_size].to(device), y[lo : lo + batch_size].to(device)
        values: tuple = (xb,)
        for index, cut in cuts.items():
            values = cut.advance(*values)  # the trained prefix, extended to this cut
            for target in by_cut[index]:
                for name in sources:
                    tallies[(target.layer, name)].add(functional_call(cut.suffix, replacements[(target.layer, name)], values), yb)
        trained_tally.add(cut.suffix(*values), yb)
    return tallies, trained_tally


@torch.no_grad()
def _sweep_full(net, targets, sources, replacements, x, y, batch_size, progress=None):
    """Fallback for untraceable models: a full forward pass per (layer, checkpoint) and batch."""
    tallies = {key: _Tally() for key in replacements}
    trained_tally = _Tally()
    device = _device(net)
    for lo in progress_bar(range(0, len(x), batch_size), desc="reinit batches", enabled=progress):
        xb, yb = x[lo : lo + batch_size].to(device), y[lo : lo + batch_size].to(device)
        for key, tensors in replacements.items():
            tallies[key].add(functional_call(net, tensors, (xb,)), yb)
        trained_tally.add(net(xb), yb)
    return tallies, trained_tally


def _device(module: nn.Module) -> torch.device:
    first = next(iter(module.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def _table(targets, sources, tallies, trained_tally: _Tally, n: int, cached: bool) -> pd.DataFrame:
    trained_accuracy, trained_loss = trained_tally.correct / n, trained_tally.loss / n
    rows = []
    for target in targets:
        for name in sources:
            tally = tallies[(target.layer, name)]
            accuracy = tally.correct / n
            drop = (trained_accuracy - accuracy) / trained_accuracy if trained_accuracy > 0 else float("nan")
            rows.append({
                "layer": target.layer, "position": target.position, "checkpoint": name,
                "epoch": int(name) if name.isdigit() else None, "accuracy": accuracy, "loss": tally.loss / n,
                "trained_accuracy": trained_accuracy, "trained_loss": trained_loss, "relative_drop": drop,
                "prefix_cached": cached, "accuracy_top5": tally.correct5 / n, "trained_accuracy_top5": trained_tally.correct5 / n,
            })  # fmt: skip
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["epoch"] = table["epoch"].astype("Int64")
    return table
