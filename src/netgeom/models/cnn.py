"""Nakkiran et al.'s 5-layer CNN of width k (`cnn_k`) and its average-pooled twin (`cnn5_k`).

conv(C->k), conv(k->2k)+pool2, conv(2k->4k)+pool2, conv(4k->8k)+pool2, a pool over what is
left (4x4 on CIFAR: Nakkiran's MaxPool(4)), flatten, linear(8k->K). 3x3 convs with bias, no
BN by default; on CIFAR-10 k=1 has 510 parameters, k=64 has 1,556,106 (+30k with BN).
Works on (C, L) signals with Conv1d as well.
"""

from __future__ import annotations

from torch import nn

from netgeom.models.layers import conv_block, layer_kit, require_size, shrink
from netgeom.models.registry import register_model


def five_layer_cnn(input_shape, num_classes: int, width: int, batch_norm: bool, pooling: str, arch: str) -> nn.Sequential:
    kit = layer_kit(input_shape, arch)
    require_size(kit.spatial, arch, 8)  # three halvings must leave at least one pixel
    pool = kit.max_pool if pooling == "max" else kit.avg_pool
    k = width
    layers = conv_block(kit, kit.channels, k, batch_norm)
    spatial = kit.spatial
    for cin, cout in ((k, 2 * k), (2 * k, 4 * k), (4 * k, 8 * k)):
        layers += conv_block(kit, cin, cout, batch_norm) + [pool(2)]
        spatial = shrink(spatial, 2, 2)
    # Pool over the whole remaining map: MaxPool(4) on 32x32 exactly as in Nakkiran's code,
    # and still a plain pooling module (which the region walker understands) on other sizes.
    layers.append(kit.max_pool(spatial) if pooling == "max" else kit.adaptive_avg_pool(1))
    layers += [nn.Flatten(), nn.Linear(8 * k, num_classes)]
    return nn.Sequential(*layers)


@register_model("cnn_k")
def build_cnn(input_shape, num_classes, *, width: int = 64, batch_norm: bool = False) -> nn.Module:
    return five_layer_cnn(input_shape, num_classes, width, batch_norm, "max", "cnn_k")


@register_model("cnn5_k")
def build_cnn5(input_shape, num_classes, *, width: int = 64, batch_norm: bool = False) -> nn.Module:
    return five_layer_cnn(input_shape, num_classes, width, batch_norm, "avg", "cnn5_k")
