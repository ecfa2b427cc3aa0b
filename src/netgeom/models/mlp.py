"""Fully connected nets: flatten, `depth` hidden layers of `width` units, a linear read-out.

With `bottleneck`, a linear layer of that many units (no activation, no bias) sits between
consecutive hidden layers: the linear bottlenecks of Lin, Memisevic and Konda (2015), whose
3072-4096 CIFAR-10 MLP the hyperplanes seed trains beside its ConvNets. It factors each
hidden-to-hidden weight matrix through rank `bottleneck` and leaves the function class otherwise
as it was; a bias there would be redundant with the next layer's (or removed by its BN).
"""

from __future__ import annotations

import math

from torch import nn

from netgeom.errors import NetgeomError
from netgeom.models.initialisation import apply_init, check_init
from netgeom.models.layers import activation as make_activation
from netgeom.models.registry import register_model


@register_model("mlp")
def build_mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    width: int = 256,
    depth: int = 2,
    batch_norm: bool = False,
    activation: str = "relu",
    init: str = "pytorch",
    bottleneck: int | None = None,
) -> nn.Module:
    """Linear [+ BatchNorm1d] + activation, `depth` times; depth 0 is a linear classifier.

    Hidden linears drop their bias under BN, where it would be redundant.
    """
    check_init(init, ("pytorch", "kaiming"), "mlp")
    make_activation(activation)  # validate the name before building anything
    if bottleneck is not None:
        if isinstance(bottleneck, bool) or not isinstance(bottleneck, int) or bottleneck < 1:
            raise NetgeomError("model.bottleneck", f"must be a positive integer or null, got {bottleneck!r}")
        if depth < 2:
            raise NetgeomError("model.bottleneck", f"sits between consecutive hidden layers: needs model.depth >= 2, got depth {depth}")
    layers: list[nn.Module] = [nn.Flatten()]
    bottlenecks: list[nn.Linear] = []
    fan_in = math.prod(input_shape)
    for i in range(depth):
        if bottleneck is not None and i > 0:
            bottlenecks.append(nn.Linear(fan_in, bottleneck, bias=False))
            layers.append(bottlenecks[-1])
            fan_in = bottleneck
        layers.append(nn.Linear(fan_in, width, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(make_activation(activation))
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    model = nn.Sequential(*layers)
    apply_init(model, init)
    if init == "kaiming":  # no ReLU follows a bottleneck: unit gain keeps the signal's variance
        for m in bottlenecks:
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="linear")
    return model
