"""AlexNet for CIFAR-sized inputs, one of the MLI seed's architectures: the common CIFAR variant
(bearpaw/pytorch-classification) of conv11/4(64), maxpool2, conv5(192), maxpool2, conv3(384),
conv3(256), conv3(256), maxpool2, linear -> K. 2,472,266 parameters on CIFAR-10 shapes
(torchvision's `tv_alexnet` needs inputs of at least 63 pixels)."""

from __future__ import annotations

import math

from torch import nn

from netgeom.errors import NetgeomError
from netgeom.models.layers import layer_kit, relu, shrink
from netgeom.models.registry import register_model


@register_model("alexnet_cifar")
def build_alexnet_cifar(input_shape, num_classes) -> nn.Module:
    kit = layer_kit(input_shape, "alexnet_cifar")
    spatial = shrink(kit.spatial, 11, 4, 5)
    for _ in range(3):  # the three 2x2 max-pools; the 5x5 and 3x3 convs keep the size
        spatial = shrink(spatial, 2, 2)
    if min(spatial) < 1:
        raise NetgeomError("input_shape", f"alexnet_cifar needs spatial sizes >= 29 (four halvings after a stride-4 conv), got {kit.spatial}")
    return nn.Sequential(
        kit.conv(kit.channels, 64, 11, stride=4, padding=5), relu(), kit.max_pool(2),
        kit.conv(64, 192, 5, padding=2), relu(), kit.max_pool(2),
        kit.conv(192, 384, 3, padding=1), relu(),
        kit.conv(384, 256, 3, padding=1), relu(),
        kit.conv(256, 256, 3, padding=1), relu(), kit.max_pool(2),
        nn.Flatten(),
        nn.Linear(256 * math.prod(spatial), num_classes),
    )
