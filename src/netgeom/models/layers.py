"""Building blocks shared by the families: layer classes per input rank, activations, shapes.

Every family written here works on 2-D images (C, H, W) and 1-D signals (C, L) alike: it asks
`layer_kit(input_shape, arch)` for Conv/BatchNorm/pool classes of the right rank instead of
hard-coding Conv2d, so mnist1d gets the same architectures with Conv1d.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from netgeom.errors import NetgeomError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module (non-inplace) by name."""
    if name not in ACTIVATIONS:
        raise NetgeomError("model.activation", f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def relu() -> nn.ReLU:
    # One module per call site, never in-place: the region walker hooks each nn.ReLU.
    return nn.ReLU(inplace=False)


def disable_inplace(model: nn.Module) -> None:
    """Turn off `inplace` on every module that has the flag (ReLU, Dropout, ...)."""
    for module in model.modules():
        if getattr(module, "inplace", False):
            module.inplace = False


@dataclass(frozen=True)
class LayerKit:
    """Layer classes of one input rank (1 = signals, 2 = images) and the spatial sizes."""

    rank: int
    channels: int
    spatial: tuple[int, ...]
    conv: type[nn.Module]
    batch_norm: type[nn.Module]
    max_pool: type[nn.Module]
    avg_pool: type[nn.Module]
    adaptive_avg_pool: type[nn.Module]


_KITS = {
    1: (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d),
    2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d),
}


def layer_kit(input_shape: tuple[int, ...], arch: str, ranks: tuple[int, ...] = (1, 2)) -> LayerKit:
    """Layer classes for `input_shape` = (C, L) or (C, H, W); refuses ranks `arch` cannot take."""
    rank = len(input_shape) - 1
    if rank not in ranks:
        wanted = " or ".join({1: "(C, L)", 2: "(C, H, W)"}[r] for r in ranks)
        no_1d = " (it has no 1-D variant)" if rank == 1 else ""
        raise NetgeomError("model.arch", f"{arch} takes {wanted} inputs, got shape {tuple(input_shape)}{no_1d}")
    return LayerKit(rank, input_shape[0], tuple(input_shape[1:]), *_KITS[rank])


def shrink(spatial: tuple[int, ...], kernel: int, stride: int, padding: int = 0) -> tuple[int, ...]:
    """Spatial size after a conv/pool with this kernel, stride and padding (floor mode)."""
    return tuple((s + 2 * padding - kernel) // stride + 1 for s in spatial)


def require_size(spatial: tuple[int, ...], arch: str, minimum: int) -> None:
    """Refuse inputs too small for the downsampling `arch` does."""
    if min(spatial) < minimum:
        raise NetgeomError("input_shape", f"{arch} needs spatial sizes >= {minimum}, got {spatial}")


def conv_block(kit: LayerKit, cin: int, cout: int, batch_norm: bool, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    """conv (bias only without BN, where it would be redundant) [+ BN] + ReLU, 'same' padding."""
    layers: list[nn.Module] = [kit.conv(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=not batch_norm)]
    if batch_norm:
        layers.append(kit.batch_norm(cout))
    layers.append(relu())
    return layers
