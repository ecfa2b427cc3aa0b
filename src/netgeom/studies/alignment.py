"""Git Re-Basin weight matching (Ainsworth et al., 2023): permute B's hidden units to match A.

Hidden units of a network can be permuted without changing its function, as long as every
tensor that touches a unit moves with it. A `PermutationSpec` says which axis of which state
entry each permutation acts on. It is derived automatically by tracing the model with torch.fx:

- Conv / Linear outputs start a new permutation group (axis 0 of weight and bias); their
  inputs use the group of whatever feeds them (axis 1 of the weight).
- BatchNorm (weight, bias, running_mean, running_var) and elementwise or pooling ops pass a
  group through unchanged.
- `add` (residual connections) merges the groups of its operands, so a ResNet stage's residual
  stream shares one permutation.
- Flatten after a conv turns a channel permutation into a permutation of blocks of the next
  Linear's inputs (channel-major, as torch.flatten lays them out). A flatten is nn.Flatten(),
  torch.flatten(x, 1), x.flatten(1), or a view/reshape to (batch size, -1 or a count) where the
  batch size is read from a traced tensor: x.shape[0], x.size(0) or x.size()[0] (the seeds'
  `x.view(x.shape[0], -1)`). A literal batch size or any other view is refused: it cannot be
  told apart from a reshape that mixes units across axes.
- The network input and output are fixed (not permuted); a group merged with them is dropped.

Anything else (concatenation, grouped convs, LayerNorm, attention, ...) raises
NetgeomError("alignment.model", ...) rather than producing a wrong spec.

Matching maximises sum over layers <W_A, P W_B> one group at a time with
scipy.optimize.linear_sum_assignment (cost sum of W_A W_B^T along the permuted axis, other
groups held fixed), groups in a seeded random order, until a full sweep brings no improvement
(at most `max_sweeps`). `method="sinkhorn"` solves each group's assignment by entropic optimal
transport instead (Sinkhorn iterations in the log domain at a temperature relative to the
cost's scale, then the plan rounded to the nearest permutation): the relaxation behind
Sinkhorn re-basin (Pena et al., 2023), which the starlight seed offers beside weight matching;
as the temperature goes to 0 its permutation is the exact assignment. Only weights enter the cost (BN running statistics are permuted but
then usually recomputed).
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from netgeom.errors import NetgeomError
from netgeom.studies.interpolation import BN_BATCH_SIZE, check_same_architecture, recalibrate_bn
from netgeom.studies.weight_space import is_bn_statistic

StateDict = Mapping[str, Tensor]
AxisPerm = tuple[str, int]  # (permutation name, block size along the axis)


@dataclass(frozen=True)
class PermutationSpec:
    """sizes: permutation name -> number of units; axes: state key -> per-axis AxisPerm or None.

    An axis with (name, block) has length sizes[name] * block and is permuted in blocks of
    `block` consecutive entries (block > 1 only for Linear inputs after a Flatten).
    """

    sizes: dict[str, int]
    axes: dict[str, tuple[AxisPerm | None, ...]]

    def perm_to_axes(self) -> dict[str, list[tuple[str, int, int]]]:
        """name -> [(state key, axis, block)] for every axis the permutation acts on."""
        out: dict[str, list[tuple[str, int, int]]] = {p: [] for p in self.sizes}
        for key, per_axis in self.axes.items():
            for axis, entry in enumerate(per_axis):
                if entry is not None:
                    out[entry[0]].append((key, axis, entry[1]))
        return out


# --------------------------------------------------------------------------- spec by tracing

_FIXED = 0  # union-find root standing for "the network's input/output: cannot permute"
# A sweep counts as an improvement only above float64 round-off of the matched similarity.
_IMPROVEMENT_RTOL = 1e-12
MAX_SWEEPS = 100  # Ainsworth et al.'s cap on coordinate-ascent sweeps

_PASS_MODULES = (
    nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
_PASS_FUNCTIONS = {
    torch.relu, F.relu, torch.tanh, torch.sigmoid, F.gelu, F.silu, F.leaky_relu, F.elu, F.dropout,
    F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, operator.neg,
}  # fmt: skip
_PASS_METHODS = {"relu", "tanh", "sigmoid", "contiguous", "clone", "neg"}
_MERGE_FUNCTIONS = {operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub, operator.mul, torch.mul, operator.truediv}
_MERGE_METHODS = {"add", "add_", "sub", "mul", "div"}


@dataclass(frozen=True)
class _Feat:
    """Features of a traced value: group id and layout ('map' = (N, C, ...), 'vec' = (N, F), 'flat')."""

    group: int
    kind: str


class _Tracer:
    def __init__(self, model: nn.Module):
        self.model = model
        self.parent = [_FIXED]
        self.size = {_FIXED: 0}
        self.label = {_FIXED: "fixed"}
        self.axes: dict[str, list] = {}  # key -> per-axis [group, block] or None
        self.module_groups: dict[str, tuple[int, int]] = {}  # module -> (input group, output group)

    # union-find over group ids
    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self.size[ra] and self.size[rb] and self.size[ra] != self.size[rb]:
            raise NetgeomError("alignment.model", f"cannot merge unit groups of sizes {self.size[ra]} and {self.size[rb]}")
        keep, drop = (ra, rb) if ra == _FIXED or (rb != _FIXED and ra < rb) else (rb, ra)
        self.parent[drop] = keep
        return keep

    def new_group(self, size: int, label: str) -> int:
        g = len(self.parent)
        self.parent.append(g)
        self.size[g] = size
        self.label[g] = label
        return g

    def assign(self, module_name: str, param: str, axis: int, group: int, block: int = 1) -> None:
        key = f"{module_name}.{param}" if module_name else param
        tensor = getattr(self.model.get_submodule(module_name), param, None)
        if tensor is None:
            return
        per_axis = self.axes.setdefault(key, [None] * tensor.ndim)
        per_axis[axis] = [group, block]

    # op handlers -------------------------------------------------------------
    def layer(self, name: str, module: nn.Module, x: _Feat) -> _Feat:
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            if module.groups != 1:
                raise NetgeomError("alignment.model", f"grouped convolution {name} (groups={module.groups}) is not supported")
            if x.group != _FIXED and x.kind != "map":
                raise NetgeomError("alignment.model", f"{name} receives non-spatial features")
            out_size, block, kind = module.out_channels, 1, "map"
        elif isinstance(module, nn.Linear):
            if x.group != _FIXED and x.kind == "map":
                raise NetgeomError("alignment.model", f"{name} is applied to a feature map without flatten")
            out_size, kind = module.out_features, "vec"
            block = 1
            if x.group != _FIXED and x.kind == "flat":
                block, rem = divmod(module.in_features, self.size[self.find(x.group)])
                if rem:
                    raise NetgeomError("alignment.model", f"{name}: {module.in_features} inputs are not blocks of the flattened channels")
        else:
            raise AssertionError(type(module))
        if name in self.module_groups:  # a module called twice shares its permutations
            g_in, g_out = self.module_groups[name]
            self.union(g_in, x.group)
            return _Feat(g_out, kind)
        g_out = self.new_group(out_size, name)
        self.module_groups[name] = (x.group, g_out)
        self.assign(name, "weight", 0, g_out)
        self.assign(name, "weight", 1, x.group, block)
        self.assign(name, "bias", 0, g_out)
        return _Feat(g_out, kind)

    def norm(self, name: str, module: _BatchNorm, x: _Feat) -> _Feat:
        for param in ("weight", "bias", "running_mean", "running_var"):
            self.assign(name, param, 0, x.group)
        return x

    def merge(self, what: str, feats: list[_Feat]) -> _Feat:
        if not feats:
            return None
        kinds = {f.kind for f in feats if self.find(f.group) != _FIXED}
        if len(kinds) > 1:
            raise NetgeomError("alignment.model", f"{what} combines features of different layouts {sorted(kinds)}")
        g = feats[0].group
        for f in feats[1:]:
            g = self.union(g, f.group)
        return _Feat(g, kinds.pop() if kinds else feats[0].kind)


def _flatten(x: _Feat, start_dim: int, end_dim: int, where: str) -> _Feat:
    if start_dim != 1 or end_dim != -1:
        raise NetgeomError("alignment.model", f"{where}: only flatten(start_dim=1) is supported")
    return _Feat(x.group, "flat" if x.kind in ("map", "flat") else x.kind)


@dataclass(frozen=True)
class _Size:
    """A traced tensor's shape (dim None) or one of its sizes (dim 0: the batch size)."""

    dim: int | None


_CONSTANT_ATTRIBUTES = {"dtype", "device", "ndim", "is_cuda", "requires_grad"}


def _attribute(name: str) -> _Size | None:
    """getattr(tensor, name) in a traced forward: its shape, or a constant that permutes nothing."""
    if name == "shape":
        return _Size(None)
    if name in _CONSTANT_ATTRIBUTES:
        return None
    raise NetgeomError("alignment.model", f"tensor attribute .{name} in forward is not supported by weight matching")


def _view_shape(node: torch.fx.Node) -> tuple:
    """The target shape of view/reshape, given as separate arguments or as one tuple/list."""
    shape = node.args[1:] or (node.kwargs.get("shape") or node.kwargs.get("size"),)
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


def _is_flatten_view(shape: tuple, env: dict) -> bool:
    """(batch size read from a traced tensor, -1 or a feature count): a flatten from axis 1."""
    if len(shape) != 2 or not isinstance(shape[0], torch.fx.Node) or env.get(shape[0]) != _Size(0):
        return False
    rest = shape[1]
    return (isinstance(rest, int) and (rest == -1 or rest > 0)) or (isinstance(rest, torch.fx.Node) and env.get(rest) is None)


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """Derive the permutation groups of `model` by tracing it with torch.fx (see module docstring)."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as err:  # fx raises many types for untraceable code
        raise NetgeomError("alignment.model", f"cannot trace {type(model).__name__} with torch.fx ({type(err).__name__}: {err})") from None
    walk = _GraphWalk(model)
    for node in graph.nodes:
        walk.visit(node)
    return _finish(walk.tracer, model)


def _flatten_dims(node: torch.fx.Node) -> tuple[int, int]:
    """(start_dim, end_dim) of a torch.flatten / Tensor.flatten call, with flatten's defaults."""
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return start, end


class _GraphWalk:
    """One pass over an fx graph: what each node carries (a feature group, a size, or nothing),
    one method per node kind; anything it does not know is refused in one line."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.tracer = _Tracer(model)
        self.env: dict[torch.fx.Node, object] = {}

    def feats(self, args) -> list[_Feat]:
        return [self.env[a] for a in args if isinstance(a, torch.fx.Node) and isinstance(self.env.get(a), _Feat)]

    def first(self, node: torch.fx.Node) -> _Feat:
        found = self.feats(node.args[:1])
        if not found:
            raise NetgeomError("alignment.model", f"{node.op} {node.target} does not act on a traced tensor")
        return found[0]

    def visit(self, node: torch.fx.Node) -> None:
        if node.op == "output":
            for f in self.feats(node.args[0] if isinstance(node.args[0], (tuple, list)) else node.args):
                self.tracer.union(f.group, _FIXED)
            return
        self.env[node] = getattr(self, f"_{node.op}")(node)

    def _placeholder(self, node: torch.fx.Node) -> _Feat:
        return _Feat(_FIXED, "input")

    def _get_attr(self, node: torch.fx.Node) -> None:
        value = self.model
        for part in str(node.target).split("."):
            value = getattr(value, part)
        if isinstance(value, Tensor) and value.numel() > 1:
            raise NetgeomError("alignment.model", f"tensor attribute {node.target} used directly in forward is not supported")
        return None  # a scalar: elementwise with anything

    def _call_module(self, node: torch.fx.Node) -> _Feat:
        module, name, x = self.model.get_submodule(str(node.target)), str(node.target), self.first(node)
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            return self.tracer.layer(name, module, x)
        if isinstance(module, _BatchNorm):
            return self.tracer.norm(name, module, x)
        if isinstance(module, nn.Flatten):
            return _flatten(x, module.start_dim, module.end_dim, name)
        if isinstance(module, _PASS_MODULES) and not any(True for _ in module.parameters()):
            return x
        raise NetgeomError("alignment.model", f"module {node.target} ({type(module).__name__}) is not supported by weight matching")

    def _call_function(self, node: torch.fx.Node) -> object:
        target, env = node.target, self.env
        if target in _PASS_FUNCTIONS:
            return self.first(node)
        if target in _MERGE_FUNCTIONS:
            return self.tracer.merge(str(target), self.feats(node.args))
        if target is torch.flatten:
            return _flatten(self.first(node), *_flatten_dims(node), "torch.flatten")
        if target is builtins.getattr and self.feats(node.args[:1]):
            return _attribute(str(node.args[1]))
        if target is operator.getitem and isinstance(node.args[0], torch.fx.Node) and env.get(node.args[0]) == _Size(None):
            index = node.args[1]
            return _Size(index) if isinstance(index, int) and index >= 0 else None
        if target is operator.getitem and not self.feats(node.args):
            return None  # indexing a tuple of constants
        if target is torch.reshape:
            if not _is_flatten_view(_view_shape(node), env):
                raise NetgeomError("alignment.model", "torch.reshape is supported only as torch.reshape(x, (x.shape[0], -1))")
            return _flatten(self.first(node), 1, -1, "torch.reshape")
        raise NetgeomError("alignment.model", f"function {getattr(target, '__name__', target)} is not supported by weight matching")

    def _call_method(self, node: torch.fx.Node) -> object:
        name = str(node.target)
        if name in _PASS_METHODS:
            return self.first(node)
        if name in _MERGE_METHODS:
            return self.tracer.merge(name, self.feats(node.args))
        if name == "size":
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            return _Size(None) if dim is None else _Size(dim) if isinstance(dim, int) and dim >= 0 else None
        if name == "dim":
            return None
        if name == "flatten":
            return _flatten(self.first(node), *_flatten_dims(node), "Tensor.flatten")
        if name in ("view", "reshape"):
            if not _is_flatten_view(_view_shape(node), self.env):
                raise NetgeomError("alignment.model", f"Tensor.{name} is supported only as x.{name}(x.shape[0], -1) (a flatten after the batch axis)")
            return _flatten(self.first(node), 1, -1, f"Tensor.{name}")
        raise NetgeomError("alignment.model", f"method Tensor.{name} is not supported by weight matching")


def _finish(tr: _Tracer, model: nn.Module) -> PermutationSpec:
    names: dict[int, str] = {}
    sizes: dict[str, int] = {}
    for g in range(1, len(tr.parent)):
        root = tr.find(g)
        if root != _FIXED and root not in names:
            names[root] = f"P_{tr.label[root]}"
            sizes[names[root]] = tr.size[root]
    state = model.state_dict()
    axes: dict[str, tuple[AxisPerm | None, ...]] = {}
    for key, value in state.items():
        per_axis = tr.axes.get(key, [None] * value.ndim)
        entries = []
        for axis, entry in enumerate(per_axis):
            root = tr.find(entry[0]) if entry is not None else _FIXED
            if root == _FIXED:
                entries.append(None)
                continue
            name, block = names[root], entry[1]
            if value.shape[axis] != sizes[name] * block:
                raise NetgeomError("alignment.model", f"{key} axis {axis} has {value.shape[axis]} entries, expected {sizes[name]} x {block}")
            entries.append((name, block))
        axes[key] = tuple(entries)
    return PermutationSpec(sizes, axes)


# --------------------------------------------------------------------------- permutations


def _permute_axis(w: Tensor, axis: int, perm: Tensor, block: int) -> Tensor:
    if block == 1:
        return w.index_select(axis, perm)
    shape = w.shape
    blocked = w.reshape(*shape[:axis], perm.numel(), block, *shape[axis + 1 :])
    return blocked.index_select(axis, perm).reshape(shape)


def _permuted_entry(spec: PermutationSpec, perms, key: str, value: Tensor, skip_axis: int = -1) -> Tensor:
    w = value
    for axis, entry in enumerate(spec.axes.get(key, ())):
        if entry is not None and axis != skip_axis:
            w = _permute_axis(w, axis, perms[entry[0]].to(w.device), entry[1])
    return w


def apply_permutation(spec: PermutationSpec, perms: Mapping[str, Tensor], state: StateDict) -> dict[str, Tensor]:
    """New state permuted along every permuted axis: out[key][..., i, ...] = state[key][..., perm[i], ...]."""
    missing = set(spec.sizes) - set(perms)
    if missing:
        raise NetgeomError("permutations", f"missing permutations {sorted(missing)}")
    return {key: _permuted_entry(spec, perms, key, value) for key, value in state.items()}


MATCHING_METHODS = ("lap", "sinkhorn")
SINKHORN_MAX_ITERS = 2000  # per eps stage
SINKHORN_TOL = 1e-9  # largest violation of a marginal of the plan (whose entries sum to n)


def sinkhorn_plan(similarity: np.ndarray, temperature: float, *, max_iters: int = SINKHORN_MAX_ITERS, tol: float = SINKHORN_TOL) -> np.ndarray:
    """The doubly stochastic plan P maximising <P, S> + entropy at `temperature` x max|S|.

    P = diag(e^f) exp(S / eps) diag(e^g) with every row and column summing to 1, found by
    alternating log-domain normalisations (stable at small eps) until both marginals are within
    `tol`. A temperature relative to the similarities' scale makes one value fit every layer.
    Small temperatures converge slowly from cold potentials, so eps is annealed from 1 down to
    the target (eps-scaling), each stage warm-starting the next.
    """
    if not temperature > 0:
        raise NetgeomError("sinkhorn_temperature", f"must be > 0, got {temperature!r}")
    s = torch.as_tensor(similarity, dtype=torch.float64)
    scale = float(s.abs().max()) or 1.0
    stages = np.geomspace(max(1.0, temperature), temperature, int(np.ceil(np.log(max(1.0, 1.0 / temperature)) / np.log(4.0))) + 1)
    f = torch.zeros(s.shape[0], dtype=torch.float64)
    g = torch.zeros(s.shape[1], dtype=torch.float64)
    for stage in stages:
        logits = s / (float(stage) * scale)
        for _ in range(max_iters):
            f = -torch.logsumexp(logits + g[None, :], dim=1)
            g = -torch.logsumexp(logits + f[:, None], dim=0)
            rows = torch.exp(logits + f[:, None] + g[None, :]).sum(1)
            if float((rows - 1).abs().max()) < tol:  # columns are exact right after the g update
                break
    return torch.exp(logits + f[:, None] + g[None, :]).numpy()


def sinkhorn_assignment(similarity: np.ndarray, temperature: float) -> np.ndarray:
    """cols with row i matched to column cols[i]: the permutation nearest the Sinkhorn plan."""
    _, cols = linear_sum_assignment(sinkhorn_plan(similarity, temperature), maximize=True)
    return cols


def weight_matching(
    spec: PermutationSpec,
    state_a: StateDict,
    state_b: StateDict,
    *,
    seed: int = 0,
    max_sweeps: int = MAX_SWEEPS,
    method: str = "lap",
    temperature: float = 0.01,
) -> tuple[dict[str, Tensor], int]:
    """Permutations that make B's weights closest to A's, and the number of sweeps used.

    Coordinate ascent over groups (Ainsworth et al., Algorithm 1): for group p, the cost
    C = sum over (key, axis) of A_key (moved to axis 0, flattened) @ B_key^T (all other axes
    already permuted); linear_sum_assignment(C, maximize=True) gives the new perm[p]. Stops
    after a sweep with no improvement, or after max_sweeps. `method="sinkhorn"` takes each
    group's permutation from the Sinkhorn plan at `temperature` (see `sinkhorn_plan`).
    """
    check_same_architecture(state_a, state_b, "alignment.models")
    if max_sweeps < 1:
        raise NetgeomError("max_sweeps", f"must be >= 1, got {max_sweeps}")
    if method not in MATCHING_METHODS:
        raise NetgeomError("matching", f"unknown method {method!r}; allowed: {', '.join(MATCHING_METHODS)}")
    perms = {p: torch.arange(n) for p, n in spec.sizes.items()}
    by_perm = {p: [(k, ax, b) for k, ax, b in axes if not is_bn_statistic(k)] for p, axes in spec.perm_to_axes().items()}
    a64 = {k: v.detach().double().cpu() for k, v in state_a.items() if v.is_floating_point()}
    b64 = {k: v.detach().double().cpu() for k, v in state_b.items() if v.is_floating_point()}
    rng = np.random.default_rng(seed)
    names = list(spec.sizes)
    sweeps = 0
    for sweeps in range(1, max_sweeps + 1):
        improved = False
        for idx in rng.permutation(len(names)):
            p = names[idx]
            n = spec.sizes[p]
            cost = torch.zeros(n, n, dtype=torch.float64)
            for key, axis, _block in by_perm[p]:
                wa = a64[key].movedim(axis, 0).reshape(n, -1)
                wb = _permuted_entry(spec, perms, key, b64[key], axis).movedim(axis, 0).reshape(n, -1)
                cost += wa @ wb.T
            c = cost.cpu().numpy()
            cols = linear_sum_assignment(c, maximize=True)[1] if method == "lap" else sinkhorn_assignment(c, temperature)
            old = c[np.arange(n), perms[p].cpu().numpy()].sum()
            new = c[np.arange(n), cols].sum()
            if new > old + _IMPROVEMENT_RTOL * max(1.0, abs(old)):
                improved = True
                perms[p] = torch.as_tensor(cols, dtype=torch.long)
        if not improved:
            break
    return perms, sweeps


@dataclass(frozen=True)
class Alignment:
    state: dict[str, Tensor]  # B permuted onto A (BN statistics recomputed when inputs were given)
    permutations: dict[str, Tensor]
    spec: PermutationSpec
    sweeps: int


def align(
    model: nn.Module,
    state_a: StateDict,
    state_b: StateDict,
    *,
    calibration_inputs: Tensor | None = None,
    seed: int = 0,
    max_sweeps: int = MAX_SWEEPS,
    bn_batch_size: int = BN_BATCH_SIZE,
    method: str = "lap",
    temperature: float = 0.01,
) -> Alignment:
    """Match B to A on `model`'s architecture, permute B, and recompute B's BN statistics.

    BN statistics are re-estimated on `calibration_inputs` (training inputs) when given, with the
    same cumulative average as the interpolation engine; otherwise they are only permuted.
    """
    check_same_architecture(state_a, state_b, "alignment.models")
    spec = permutation_spec(model)
    perms, sweeps = weight_matching(spec, state_a, state_b, seed=seed, max_sweeps=max_sweeps, method=method, temperature=temperature)
    permuted = apply_permutation(spec, perms, state_b)
    if calibration_inputs is not None:
        permuted = recalibrate_bn(model, permuted, calibration_inputs, bn_batch_size)
    return Alignment(permuted, perms, spec, sweeps)
