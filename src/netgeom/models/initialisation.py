"""Named weight initialisations (the `init` option). Fixup needs the residual structure and
lives with the ResNets; the schemes here only look at layer types."""

from __future__ import annotations

from torch import nn

from netgeom.errors import NetgeomError

_CONV = (nn.Conv1d, nn.Conv2d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d)


def check_init(init: str, allowed: tuple[str, ...], arch: str) -> None:
    if init not in allowed:
        raise NetgeomError("model.init", f"{arch} takes init in {', '.join(allowed)}; got {init!r}")


def kaiming_(model: nn.Module) -> None:
    """He-normal weights for ReLU nets (convs fan_out as torchvision does, linears fan_in), zero biases."""
    for m in model.modules():
        if isinstance(m, _CONV):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(m, _NORM):
            nn.init.ones_(m.weight)
        if isinstance(m, (*_CONV, nn.Linear, *_NORM)) and m.bias is not None:
            nn.init.zeros_(m.bias)


def vgg_style_(model: nn.Module) -> None:
    """torchvision's VGG init: He-normal (fan_out) convs, N(0, 0.01) linears, zero biases."""
    kaiming_(model)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)


def apply_init(model: nn.Module, init: str) -> None:
    """'pytorch' keeps the layers' own defaults; 'kaiming' re-draws with `kaiming_`."""
    if init == "kaiming":
        kaiming_(model)
