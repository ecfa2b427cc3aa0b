"""LeNet-5 with ReLUs: conv5x5(6), maxpool2, conv5x5(16), maxpool2, linear 120-84-K.
62,006 parameters on CIFAR-10 shapes."""

from __future__ import annotations

import math

from torch import nn

from netgeom.models.layers import layer_kit, relu, require_size, shrink
from netgeom.models.registry import register_model


@register_model("lenet")
def build_lenet(input_shape, num_classes) -> nn.Module:
    kit = layer_kit(input_shape, "lenet")
    require_size(kit.spatial, "lenet", 16)  # 5x5 conv, pool, 5x5 conv, pool leaves >= 1
    spatial = shrink(shrink(shrink(shrink(kit.spatial, 5, 1), 2, 2), 5, 1), 2, 2)
    return nn.Sequential(
        kit.conv(kit.channels, 6, 5), relu(), kit.max_pool(2),
        kit.conv(6, 16, 5), relu(), kit.max_pool(2),
        nn.Flatten(),
        nn.Linear(16 * math.prod(spatial), 120), relu(),
        nn.Linear(120, 84), relu(),
        nn.Linear(84, num_classes),
    )
