"""Exact linear regions of a ReLU network along segments x(t) = x0 + t d, t in [0, 1].

A ReLU network is piecewise affine. Walking a segment, every ReLU pre-activation z_i(t) is a
continuous piecewise-affine function of t whose slope g_i = dz_i/dt only changes where some
unit upstream flips. So the walker keeps z (and the output f) by continuity and needs, per
region, only the slopes: one forward pass of the *linear part* of the network (offsets removed,
every ReLU replaced by its frozen 0/1 mask) applied to d. The next boundary is the first unit
that reaches zero moving against its mask, t_next = t + min_i z_i / |g_i|; that unit's mask flips
and the next pass gives the new slopes. Values are never recomputed, so a crossing costs one
tangent pass (half the work of a (value, tangent) pass), and a direct forward at x1 checks the
walk at the end.

Resolution: a region narrower than `eps` (in t units) is merged into the next one (its flip is
applied, no region is recorded); this also absorbs exact ties and a ReLU fed by a ReLU. The
default 1e-9 is finer than the seed's 1e-6, which merges ~1% of the regions of a vgg8 segment
(~8000 regions) and so biases density down exactly where regions are dense. Masks are state,
not re-read from values, so the walk needs no eps to land on the right side of a boundary.
Stopping early when the pattern equals the endpoint's would be exact (the set of inputs with
one full activation pattern is a convex polyhedron) but would save nothing: the pass that finds
no boundary before t = 1 ends the walk anyway.

Statistics (per segment by `segment_statistics`, summed per path by `path_statistics`), and
every way they differ from the linear-regions seed's definitions:

* `crossings`: region boundaries crossed; the count to prefer. `regions` = crossings + 1 per
  segment and, per path, the sum over its segments = crossings + segments_per_path, as the
  seed counts: a region that straddles an anchor is counted as the last region of one segment
  and again as the first of the next. A closed path visits `crossings` affine pieces (1
  without crossings), an open one crossings + 1.
* `density` = crossings per unit input-space length (per path: its crossings over its length
  sum ||x1 - x0||); the seed's density is crossings per segment, i.e. crossings /
  segments_per_path here, blind to how long the segments are.
* `variation` = total variation, the sum over regions of |f(exit) - f(entry)| per logit; the
  seed's variation is the signed sum, here `signed_variation` = f(x1) - f(x0) (0 around a
  closed path, so useless there).
* `absolute_deviation` = L * integral over t of |f(x(t)) - chord(t)|, integrated exactly region by
  region (split at the integrand's zero) including the last region. The seed integrates the
  upper bound |c| + |m| t, reads each region's affine map at its exit boundary and drops the last
  region (0.295 instead of the exact 0.072 on a test segment).
* Resolution: eps = 1e-9 in t (the seed: 1e-6, crossing each boundary by eps), float64
  throughout, and ReLUs must be non-inplace modules (the seed's VGG8 hides its FC boundaries
  behind in-place ReLUs: 9/9/10 regions counted where there are 13/19/19).

`walk_paths(...).to_frame()` keeps every region (path, segment, region, t_start, t_end, the
segment length, f at entry and the slope per logit), from which all of the above, and the
seed's variants, can be recomputed (`PathRegions.from_frame(...).statistics()`).

Requirements on the model (checked by `check_model`): leaves are Linear, Conv1d/2d,
AvgPool1d/2d, AdaptiveAvgPool1d/2d, Flatten, eval-mode BatchNorm1d/2d, Identity, Dropout and
non-inplace nn.ReLU; containers may combine them freely (residual adds) but hold no parameters
themselves. Every ReLU must be an nn.ReLU *module*: a functional F.relu/torch.relu is invisible
to the walker; the end check then fails loudly rather than returning wrong counts.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch
from torch import nn

from netgeom.errors import NetgeomError
from netgeom.progress import progress as progress_bar
from netgeom.studies.input_paths import Paths

_LINEAR_LEAVES = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Sequential,  # an empty container is an identity leaf
    nn.ModuleList,
)
_ALLOWED = (
    "Linear, Conv1d/2d, AvgPool1d/2d, AdaptiveAvgPool1d/2d, Flatten, eval-mode BatchNorm1d/2d, "
    "Identity, Dropout, nn.ReLU(inplace=False), and containers of these (residual adds allowed)"
)
DEFAULT_EPS = 1e-9  # regions narrower than this (t units) are merged into the next one
# Keeps the division z / g finite when a unit sits exactly on its boundary with zero slope.
_TINY = 1e-300


# --------------------------------------------------------------------------- model preparation


def check_model(model: nn.Module) -> None:
    """Raise NetgeomError("regions.model", ...) unless the walker can trace `model` exactly."""
    for name, module in model.named_modules():
        where = name or "<model>"
        if module._modules:
            own = [n for n, _ in module.named_parameters(recurse=False)]
            own += [n for n, _ in module.named_buffers(recurse=False)]
            if own:
                raise NetgeomError(
                    "regions.model",
                    f"module '{where}' ({type(module).__name__}) holds parameters itself ({', '.join(own)}); "
                    f"every parameter must live in a supported layer. Allowed: {_ALLOWED}",
                )
            continue
        if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
            raise NetgeomError(
                "regions.model",
                f"module '{where}' is {type(module).__name__}: max-pooling has switching boundaries the "
                f"walker does not trace; use average pooling (e.g. vgg8 instead of vgg8_maxpool). Allowed: {_ALLOWED}",
            )
        if isinstance(module, nn.ReLU):
            if module.inplace:
                raise NetgeomError(
                    "regions.model", f"module '{where}' is an in-place ReLU; use nn.ReLU(inplace=False). Allowed: {_ALLOWED}"
                )
            continue
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and module.running_mean is None:
            raise NetgeomError(
                "regions.model", f"module '{where}' is a BatchNorm without running statistics (not affine in eval mode)"
            )
        if not isinstance(module, _LINEAR_LEAVES):
            raise NetgeomError("regions.model", f"module '{where}' ({type(module).__name__}) is not supported. Allowed: {_ALLOWED}")


class _Sites:
    """Shared state of the ReLU call sites of one forward (the k-th ReLU call is site k).

    Sites are counted per call, so a ReLU module used twice in a forward is two sites. In tangent
    mode the units of all sites live side by side in flat (B, units) tensors; site k owns the
    columns offset[k] : offset[k] + size[k].
    """

    def __init__(self) -> None:
        self.z: list[torch.Tensor] = []  # record mode: pre-activations, (B, n_k)
        self.offset: list[int] = []
        self.mask: list[torch.Tensor] = []  # per site: view of the frozen 0/1 masks (float64)
        self.slack: list[torch.Tensor] = []  # per site: view of |z| >= _TINY, the distance to the boundary
        self.approach: list[torch.Tensor] = []  # per site: speed towards the boundary, -sign(z) g
        self.rate: list[torch.Tensor] = []  # per site: max over units of approach / slack = 1 / step
        self.unit: list[torch.Tensor] = []  # per site: the unit attaining it


class _RecordingReLU(nn.Module):
    def __init__(self, sites: _Sites):
        super().__init__()
        self.sites = sites

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.sites.z.append(z.reshape(len(z), -1))
        return torch.relu(z)


class _FrozenReLU(nn.Module):
    """Applies the current region's mask to a tangent and finds the site's nearest boundary."""

    def __init__(self, sites: _Sites):
        super().__init__()
        self.sites = sites

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        s = self.sites
        k = len(s.approach)
        flat = g.reshape(len(g), -1)
        out = flat * s.mask[k]
        # sign * g with sign = 2 mask - 1 is 2 out - g; we keep its negative, the approach speed.
        approach = torch.sub(flat, out, alpha=2)
        rate, unit = torch.max(approach / s.slack[k], dim=1)
        s.approach.append(approach)
        s.rate.append(rate)
        s.unit.append(unit)
        return out.view_as(g)


def _replace_relus(model: nn.Module, make) -> None:
    made: dict[int, nn.Module] = {}  # a ReLU reused in several places stays one module
    for module in list(model.modules()):
        for key, child in list(module._modules.items()):
            if isinstance(child, nn.ReLU):
                if id(child) not in made:
                    made[id(child)] = make()
                module._modules[key] = made[id(child)]


def _drop_offsets(model: nn.Module) -> None:
    """Zero every additive offset, leaving the linear part of each affine layer."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)) and module.bias is not None:
            module.bias.zero_()
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.running_mean.zero_()
            if module.bias is not None:
                module.bias.zero_()


@dataclass
class PreparedModel:
    """Two float64 eval-mode copies of a checked model sharing one `_Sites` state.

    value: the network itself, recording each ReLU pre-activation;
    linear: the network without offsets whose ReLUs apply frozen masks (a tangent map), split
    into the part before the first ReLU of a Sequential (its tangent is constant along a
    segment, computed once) and the rest (run once per region); both on `device`.
    """

    value: nn.Module
    linear_prefix: nn.Module
    linear: nn.Module
    sites: _Sites
    device: torch.device


def prepare_model(model: nn.Module | PreparedModel, device: torch.device | str | None = None) -> PreparedModel:
    """Check `model`, then build the float64 copies the walker runs on `device` (default: where
    the model's parameters are; the model is not modified)."""
    if device is None:
        device = model.device if isinstance(model, PreparedModel) else next(model.parameters(), torch.empty(0)).device
    device = torch.device(device)
    if isinstance(model, PreparedModel):
        if model.device != device:
            raise NetgeomError("regions.model", f"prepared on {model.device}, the inputs are on {device}: prepare it for the inputs' device")
        return model
    check_model(model)
    sites = _Sites()
    value = copy.deepcopy(model).to(device, torch.float64).eval().requires_grad_(False)
    linear = copy.deepcopy(value)
    _replace_relus(value, lambda: _RecordingReLU(sites))
    _replace_relus(linear, lambda: _FrozenReLU(sites))
    with torch.no_grad():
        _drop_offsets(linear)
    prefix, rest = _split_before_first_relu(linear)
    return PreparedModel(value, prefix, rest, sites, device)


def _split_before_first_relu(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(prefix, rest) of a Sequential with no ReLU in the prefix; other models stay whole."""
    if not isinstance(model, nn.Sequential):
        return nn.Sequential(), model
    has_relu = [any(isinstance(m, _FrozenReLU) for m in child.modules()) for child in model]
    first = has_relu.index(True) if any(has_relu) else len(model)
    return model[:first], model[first:]


def _forward_recording(prep: PreparedModel, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    prep.sites.z = []
    f = prep.value(x)
    z, prep.sites.z = prep.sites.z, []
    return f.reshape(len(x), -1), z


# --------------------------------------------------------------------------- the walk


@dataclass(frozen=True)
class SegmentRegions:
    """Every region crossed by each segment, rows sorted by (segment, t_start).

    f_entry is f(x(t_start)), slope is J d (df/dt, constant inside the region); everything else
    follows: f(exit) = f_entry + (t_end - t_start) slope.
    """

    segment: np.ndarray  # (R,) int64 segment index of each region
    t_start: np.ndarray  # (R,)
    t_end: np.ndarray  # (R,)
    f_entry: np.ndarray  # (R, O)
    slope: np.ndarray  # (R, O)
    length: np.ndarray  # (S,) ||d|| per segment

    @property
    def n_segments(self) -> int:
        return len(self.length)

    @property
    def f_exit(self) -> np.ndarray:
        return self.f_entry + (self.t_end - self.t_start)[:, None] * self.slope

    @property
    def offset(self) -> np.ndarray:
        """The region's affine map read at x0: f_k(x0) = f_entry - t_start J d."""
        return self.f_entry - self.t_start[:, None] * self.slope

    def counts(self) -> np.ndarray:
        """Number of regions per segment (crossings + 1)."""
        return np.bincount(self.segment, minlength=self.n_segments)


def walk_segments(
    model: nn.Module | PreparedModel,
    x0: torch.Tensor,
    x1: torch.Tensor,
    *,
    eps: float = DEFAULT_EPS,
    batch_size: int = 256,
    check_end: bool = True,
    progress: bool | None = None,
) -> SegmentRegions:
    """Find every linear region on the segments x0[i] -> x1[i] (inputs (S, *input_shape)).

    Runs in float64 on copies of `model` (eval mode) on the inputs' device. Segments walk `batch_size` at a time; within a batch all walk at once and finished ones drop
    out. `check_end` compares the walked output at t = 1 with a direct forward of x1.
    `progress`: a bar over the batches (None: see `netgeom.progress.shows_progress`; False: none).
    """
    if x0.shape != x1.shape:
        raise NetgeomError("x1", f"must have the shape of x0 {tuple(x0.shape)}, got {tuple(x1.shape)}")
    if not eps >= 0:
        raise NetgeomError("regions.eps", f"must be >= 0 (t units), got {eps}")
    if batch_size < 1:
        raise NetgeomError("regions.batch_size", f"must be a positive integer, got {batch_size}")
    prep = prepare_model(model, x0.device)
    x0 = x0.detach().to(torch.float64)
    d = x1.detach().to(torch.float64) - x0
    tables: list[np.ndarray] = []
    starts = range(0, len(x0), batch_size)
    with torch.inference_mode():
        for start in progress_bar(starts, desc="regions", total=len(starts), enabled=progress):
            stop = start + batch_size
            tables.append(_walk_batch(prep, x0[start:stop], d[start:stop], start, eps, check_end).numpy())
    table = np.concatenate(tables) if tables else np.zeros((0, 3))
    table = table[np.argsort(table[:, 0], kind="stable")]  # steps were appended in t order per segment
    outputs = (table.shape[1] - 3) // 2
    length = torch.linalg.vector_norm(d.flatten(1), dim=1).cpu().numpy() if len(d) else np.zeros(0)
    return SegmentRegions(
        table[:, 0].astype(np.int64), table[:, 1], table[:, 2], table[:, 3 : 3 + outputs], table[:, 3 + outputs :], length
    )


class _Table:
    """Rows (segment, t_start, t_end, f_entry..., slope...) in one float64 buffer that doubles
    when full: memory follows the regions found, and few long-lived allocations keep the heap
    from fragmenting under the walk's large temporaries."""

    def __init__(self, outputs: int, device: torch.device):
        self.outputs, self.n = outputs, 0
        self.data = torch.empty(1024, 3 + 2 * outputs, dtype=torch.float64, device=device)

    def append(self, segment, t_start, t_end, f_entry, slope) -> None:
        k = len(segment)
        if self.n + k > len(self.data):
            grown = torch.empty(2 * (self.n + k), self.data.shape[1], dtype=torch.float64, device=self.data.device)
            grown[: self.n] = self.data[: self.n]
            self.data = grown
        rows = self.data[self.n : self.n + k]
        rows[:, 0], rows[:, 1], rows[:, 2] = segment, t_start, t_end
        rows[:, 3 : 3 + self.outputs], rows[:, 3 + self.outputs :] = f_entry, slope
        self.n += k

    def numpy(self) -> np.ndarray:
        return self.data[: self.n].cpu().numpy()


def _walk_batch(prep: PreparedModel, x0, d, offset: int, eps: float, check_end: bool) -> _Table:
    sites = prep.sites
    f, z = _forward_recording(prep, x0)
    sizes = [zk.shape[1] for zk in z]
    sites.offset = [sum(sizes[:k]) for k in range(len(sizes))]
    columns = [slice(o, o + n) for o, n in zip(sites.offset, sizes)]
    device = x0.device
    site_offset = torch.tensor(sites.offset, dtype=torch.long, device=device)[:, None]
    z = torch.cat(z, dim=1) if z else torch.zeros(len(x0), 0, dtype=torch.float64, device=device)
    if not (bool(torch.isfinite(z).all()) and bool(torch.isfinite(f).all()) and bool(torch.isfinite(d).all())):
        raise NetgeomError("inputs", "segment end points and the network's values must be finite (found inf/nan)")
    # all units side by side; each site reads and updates its own columns through views
    mask, slack = (z > 0).to(z.dtype), z.abs().clamp_(min=_TINY)
    direction = prep.linear_prefix(d)  # constant along the segment
    n = len(x0)
    rows, at = torch.arange(n, device=device) + offset, torch.arange(n, device=device)
    t = torch.zeros(n, dtype=torch.float64, device=device)
    t_start, f_start = t.clone(), f.clone()
    f_end = torch.empty_like(f)
    table = _Table(f.shape[1], device)
    while True:
        sites.mask, sites.slack = [mask[:, c] for c in columns], [slack[:, c] for c in columns]
        sites.approach, sites.rate, sites.unit = [], [], []
        slope = prep.linear(direction).reshape(len(rows), -1)
        if sites.rate:
            rate, site = torch.stack(sites.rate).max(dim=0)
            step = rate.clamp_(min=0).reciprocal_()  # inf where no unit approaches its boundary
        else:  # no ReLU at all: one affine region
            step = torch.full_like(t, torch.inf)
        t_next = t + step
        done = t_next >= 1
        emit = done | (step > eps)  # a narrower region is merged into the next one
        every = bool(emit.all())
        t_end = t_next.clamp(max=1.0)
        if every:
            table.append(rows, t_start, t_end, f_start, slope)
        else:
            table.append(rows[emit], t_start[emit], t_end[emit], f_start[emit], slope[emit])
        approach, unit = sites.approach, sites.unit
        if bool(done.any()):
            f_end[rows[done] - offset] = f[done] + (1.0 - t[done])[:, None] * slope[done]
            go = ~done
            if not bool(go.any()):
                break
            # drop finished segments from every piece of state
            rows, t_next, step, emit, slope, f, t_start, f_start, site, mask, slack, direction = (
                a[go] for a in (rows, t_next, step, emit, slope, f, t_start, f_start, site, mask, slack, direction)
            )
            approach, unit, at = [a[go] for a in approach], [u[go] for u in unit], at[: len(rows)]
            sites.slack = [slack[:, c] for c in columns]
        # advance to the boundary: everything is affine in t up to there
        f = f.addcmul_(slope, step[:, None])
        t = t_next
        if every:
            t_start, f_start = t, f.clone()
        else:
            t_start, f_start = torch.where(emit, t, t_start), torch.where(emit[:, None], f, f_start)
        for view, a in zip(sites.slack, approach):
            view.addcmul_(a, step[:, None], value=-1)
        slack.clamp_(min=_TINY)
        # the unit that reached its boundary flips
        flip = (torch.stack(unit) + site_offset).gather(0, site[None])[0]
        mask[at, flip] = 1.0 - mask[at, flip]
        slack[at, flip] = _TINY
    sites.mask, sites.slack, sites.approach, sites.rate, sites.unit = [], [], [], [], []
    if check_end:
        _check_end(prep, x0 + d, f_end)
    return table


def _check_end(prep: PreparedModel, x1: torch.Tensor, f_walked: torch.Tensor) -> None:
    f_direct, _ = _forward_recording(prep, x1)
    scale = 1.0 + f_direct.abs().amax(dim=1)
    error = ((f_walked - f_direct).abs().amax(dim=1) / scale).max().item()
    if error > 1e-6:
        raise NetgeomError(
            "regions.model",
            f"the walked output at the segment end differs from a direct forward (relative error {error:.2g}): "
            "the model has a non-linearity the walker cannot see; every ReLU must be an nn.ReLU module "
            f"(not F.relu / torch.relu) and no other activation is allowed. Allowed: {_ALLOWED}",
        )


# --------------------------------------------------------------------------- dense reference


def count_regions_dense(
    model: nn.Module | PreparedModel, x0: torch.Tensor, x1: torch.Tensor, n_points: int = 10_000, chunk: int = 1024
) -> np.ndarray:
    """Regions per segment seen by sampling n_points equispaced t in [0, 1]: 1 + pattern changes.

    A lower bound of the exact count (regions between two samples are missed).
    """
    prep = prepare_model(model, x0.device)
    x0 = x0.detach().to(torch.float64)
    d = x1.detach().to(torch.float64) - x0
    ts = torch.linspace(0.0, 1.0, n_points, dtype=torch.float64, device=x0.device)
    counts = np.ones(len(x0), dtype=np.int64)
    shape = (-1,) + (1,) * (x0.dim() - 1)
    with torch.no_grad():
        for i in range(len(x0)):
            previous = None
            for start in range(0, n_points, chunk):
                tt = ts[start : start + chunk]
                _, z = _forward_recording(prep, x0[i] + tt.view(shape) * d[i])
                pattern = torch.cat([zk > 0 for zk in z], dim=1) if z else torch.zeros(len(tt), 0, dtype=torch.bool, device=x0.device)
                if previous is not None:
                    pattern = torch.cat([previous[None], pattern])
                counts[i] += int((pattern[1:] != pattern[:-1]).any(dim=1).sum())
                previous = pattern[-1]
    return counts


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class RegionStatistics:
    """Per segment or per path: counts, length, and per-logit variation / deviation (rows, O)."""

    regions: np.ndarray  # crossings + 1 per segment, summed per path (see the module docstring)
    crossings: np.ndarray  # boundaries crossed: the count to prefer
    length: np.ndarray  # input-space length ||d|| (summed over a path's segments)
    density: np.ndarray  # crossings per unit input-space length (0 on a zero-length segment)
    variation: np.ndarray  # sum over regions of |f(exit) - f(entry)|
    signed_variation: np.ndarray  # sum over regions of f(exit) - f(entry) = f(x1) - f(x0)
    absolute_deviation: np.ndarray  # L * int_0^1 |f(x(t)) - g(t)| dt, g the chord f(x0) -> f(x1)

    def to_frame(self) -> pd.DataFrame:
        """One row per segment/path: scalar columns, then `<metric>_<logit>` columns."""
        columns: dict[str, np.ndarray] = {}
        for field in fields(self):
            values = getattr(self, field.name)
            if values.ndim == 1:
                columns[field.name] = values
            else:
                columns.update({f"{field.name}_{j}": values[:, j] for j in range(values.shape[1])})
        return pd.DataFrame(columns)


def segment_statistics(regions: SegmentRegions) -> RegionStatistics:
    """Statistics of each segment, integrated exactly over its affine pieces (last one included)."""
    seg, width = regions.segment, regions.t_end - regions.t_start
    first = np.searchsorted(seg, np.arange(regions.n_segments))  # every segment has >= 1 region
    last = np.r_[first[1:], len(seg)] - 1
    f_entry, f_exit = regions.f_entry, regions.f_exit
    f0, f1 = f_entry[first], f_exit[last]
    # chord g(t) = f0 + t (f1 - f0); h = f - g is affine inside a region
    a = f_entry - (f0[seg] + regions.t_start[:, None] * (f1 - f0)[seg])
    b = f_exit - (f0[seg] + regions.t_end[:, None] * (f1 - f0)[seg])
    integral = width[:, None] * _mean_abs_affine(a, b)
    count = np.diff(np.r_[first, len(seg)])
    crossings = count - 1
    length = regions.length

    def sum_(v: np.ndarray) -> np.ndarray:  # over each segment's regions, in t order
        return np.add.reduceat(v, first, axis=0) if len(seg) else v[:0]

    change = regions.slope * width[:, None]
    return RegionStatistics(
        regions=count,
        crossings=crossings,
        length=length,
        density=_density(crossings, length),
        variation=sum_(np.abs(change)),
        signed_variation=sum_(change),
        absolute_deviation=length[:, None] * sum_(integral),
    )


def _density(crossings: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Crossings per unit length; 0 on a zero-length segment (it crosses nothing)."""
    return np.where(length > 0, crossings / np.where(length > 0, length, 1.0), 0.0)


def _mean_abs_affine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean of |h| over an interval where h is affine from a to b (split at its zero)."""
    total = np.abs(a) + np.abs(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = (a * a + b * b) / (2.0 * total)
    return np.where(a * b >= 0, total / 2.0, np.where(total > 0, crossing, 0.0))


def path_statistics(segments: RegionStatistics, segments_per_path: int) -> RegionStatistics:
    """Sum each path's consecutive `segments_per_path` segments (density: crossings / length)."""
    n = len(segments.regions)
    if segments_per_path < 1 or n % segments_per_path:
        raise NetgeomError("segments_per_path", f"must divide the number of segments {n}, got {segments_per_path}")

    def group(v: np.ndarray) -> np.ndarray:
        return v.reshape(n // segments_per_path, segments_per_path, *v.shape[1:]).sum(axis=1)

    crossings, length = group(segments.crossings), group(segments.length)
    return RegionStatistics(
        regions=group(segments.regions),
        crossings=crossings,
        length=length,
        density=_density(crossings, length),
        variation=group(segments.variation),
        signed_variation=group(segments.signed_variation),
        absolute_deviation=group(segments.absolute_deviation),
    )


def _walk_path_chunks(
    prep: PreparedModel, paths: Paths, eps: float, batch_size: int, check_end: bool, progress: bool | None = None
) -> Iterator[SegmentRegions]:
    """The regions of consecutive groups of whole paths, about `batch_size` segments a group."""
    step = max(1, batch_size // paths.segments_per_path)
    if not paths.n_paths:
        raise NetgeomError("regions.n_paths", "no paths to walk")
    chunks = range(0, paths.n_paths, step)
    for start in progress_bar(chunks, desc="paths", total=len(chunks), enabled=progress):
        x0, x1 = paths.select(range(start, min(start + step, paths.n_paths))).segments()
        # one batch per chunk: the bar over the chunks is the only one worth drawing
        yield walk_segments(prep, x0, x1, eps=eps, batch_size=len(x0), check_end=check_end, progress=False)


def study_paths(
    model: nn.Module,
    paths: Paths,
    *,
    eps: float = DEFAULT_EPS,
    batch_size: int = 256,
    check_end: bool = True,
    progress: bool | None = None,
) -> RegionStatistics:
    """Per-path statistics (rows in the order of `paths`), walking about `batch_size` segments
    at a time and keeping only the statistics, so memory stays bounded for any number of paths
    (`walk_paths` keeps every region). `progress` as `walk_segments`."""
    per_path = paths.segments_per_path
    results = [
        path_statistics(segment_statistics(regions), per_path)
        for regions in _walk_path_chunks(prepare_model(model, paths.anchors.device), paths, eps, batch_size, check_end, progress)
    ]
    return _concat_statistics(results)


def _concat_statistics(parts: list[RegionStatistics]) -> RegionStatistics:
    return RegionStatistics(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(RegionStatistics)})


# --------------------------------------------------------------------------- per-region output


@dataclass(frozen=True)
class PathRegions:
    """Every region crossed along every path: `regions.segment` numbers the segments path-major
    (segment k of path p is p * segments_per_path + k). What `study_paths` summarises, kept."""

    regions: SegmentRegions
    segments_per_path: int

    def statistics(self) -> RegionStatistics:
        """Per-path statistics, equal to `study_paths`'s."""
        return path_statistics(segment_statistics(self.regions), self.segments_per_path)

    def to_frame(self) -> pd.DataFrame:
        """One row per region: path (row of the `Paths` walked), segment (k within the path),
        region (index along the segment), t_start, t_end, length (||x1 - x0|| of the segment),
        f_entry_<j> (logit j where the path enters the region) and slope_<j> (its derivative
        d f_j / dt inside the region). Exit values, crossings, variations and the absolute
        deviation all follow (`from_frame(...).statistics()` recomputes them)."""
        r = self.regions
        first = np.searchsorted(r.segment, np.arange(r.n_segments))
        columns = {
            "path": r.segment // self.segments_per_path,
            "segment": r.segment % self.segments_per_path,
            "region": np.arange(len(r.segment)) - first[r.segment],
            "t_start": r.t_start,
            "t_end": r.t_end,
            "length": r.length[r.segment],
        }
        columns.update({f"f_entry_{j}": r.f_entry[:, j] for j in range(r.f_entry.shape[1])})
        columns.update({f"slope_{j}": r.slope[:, j] for j in range(r.slope.shape[1])})
        return pd.DataFrame(columns)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, segments_per_path: int) -> PathRegions:
        """The inverse of `to_frame` (rows in any order; every segment must have its regions)."""
        frame = frame.sort_values(["path", "segment", "region"], kind="stable")
        segment = (frame["path"].to_numpy() * segments_per_path + frame["segment"].to_numpy()).astype(np.int64)
        n_segments = int(segment.max()) + 1 if len(segment) else 0
        if not np.array_equal(np.unique(segment), np.arange(n_segments)):
            raise NetgeomError("regions", "the table misses the regions of some segments")
        length = np.zeros(n_segments)
        length[segment] = frame["length"].to_numpy()
        outputs = sum(c.startswith("f_entry_") for c in frame.columns)
        f_entry = frame[[f"f_entry_{j}" for j in range(outputs)]].to_numpy()
        slope = frame[[f"slope_{j}" for j in range(outputs)]].to_numpy()
        regions = SegmentRegions(segment, frame["t_start"].to_numpy(), frame["t_end"].to_numpy(), f_entry, slope, length)
        return cls(regions, segments_per_path)


def walk_paths(
    model: nn.Module,
    paths: Paths,
    *,
    eps: float = DEFAULT_EPS,
    batch_size: int = 256,
    check_end: bool = True,
    progress: bool | None = None,
) -> PathRegions:
    """Every region along `paths` (memory grows with the regions found); `.statistics()` equals
    `study_paths`, `.to_frame()` is the per-region table. `progress` as `walk_segments`."""
    parts = list(_walk_path_chunks(prepare_model(model, paths.anchors.device), paths, eps, batch_size, check_end, progress))
    offsets = np.cumsum([0] + [p.n_segments for p in parts[:-1]])
    regions = SegmentRegions(
        segment=np.concatenate([p.segment + o for p, o in zip(parts, offsets)]),
        **{name: np.concatenate([getattr(p, name) for p in parts]) for name in ("t_start", "t_end", "f_entry", "slope", "length")},
    )
    return PathRegions(regions, paths.segments_per_path)
