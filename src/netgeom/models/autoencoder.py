"""The MLI seed's MNIST autoencoder (after Hinton and Salakhutdinov 2006): a fully connected
encoder 784-1000-500-250-30 with ReLUs and a linear code layer, and the mirrored decoder back to
the input's shape. Not in the classifier zoo (`create_model`): its output is an image, not K
logits; the `mli` stage builds it for `mli.objective: reconstruction`."""

from __future__ import annotations

import math

from torch import nn

from netgeom.errors import NetgeomError
from netgeom.models.layers import relu

HINTON_WIDTHS = (1000, 500, 250, 30)


def build_mlp_autoencoder(input_shape: tuple[int, ...], widths: tuple[int, ...] = HINTON_WIDTHS, batch_norm: bool = False) -> nn.Module:
    """Encoder widths[0] .. widths[-1] (the code, linear), decoder widths[-2] .. widths[0], then
    a linear layer back to the flattened input, reshaped to `input_shape`. BN after every
    hidden linear but the code's when `batch_norm`."""
    if not widths or any(w < 1 for w in widths):
        raise NetgeomError("mli.autoencoder", f"must list positive layer widths ending with the code size, got {list(widths)}")
    size = math.prod(input_shape)

    def hidden(fan_in: int, width: int) -> list[nn.Module]:
        return [nn.Linear(fan_in, width, bias=not batch_norm), *([nn.BatchNorm1d(width)] if batch_norm else []), relu()]

    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = size
    for width in widths[:-1]:
        layers += hidden(fan_in, width)
        fan_in = width
    layers.append(nn.Linear(fan_in, widths[-1]))  # the code: linear units
    fan_in = widths[-1]
    for width in reversed(widths[:-1]):
        layers += hidden(fan_in, width)
        fan_in = width
    layers += [nn.Linear(fan_in, size), nn.Unflatten(1, tuple(input_shape))]
    return nn.Sequential(*layers)
