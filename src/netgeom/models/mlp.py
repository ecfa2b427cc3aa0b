"""Fully connected nets: flatten, `depth` hidden layers of `width` units, a linear read-out."""

from __future__ import annotations

import math

from torch import nn

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
) -> nn.Module:
    """Linear [+ BatchNorm1d] + activation, `depth` times; depth 0 is a linear classifier.

    Hidden linears drop their bias under BN, where it would be redundant.
    """
    check_init(init, ("pytorch", "kaiming"), "mlp")
    make_activation(activation)  # validate the name before building anything
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(input_shape)
    for _ in range(depth):
        layers.append(nn.Linear(fan_in, width, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(make_activation(activation))
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    model = nn.Sequential(*layers)
    apply_init(model, init)
    return model
