"""VGG nets for CIFAR-sized inputs: the small `vgg8` of the regions seed and VGG11/13/16/19.

vgg8: conv 6,6,avgpool,16,16,avgpool,64,64,avgpool -> linear 1024-120-K (64*4*4 on 32x32),
He-normal convs, N(0, 0.01) linears; `vgg8_maxpool` is the same net with max-pools (the
LeNet-like net of the hyperplanes seed). vgg11..19: the VGG configurations with 3x3 convs and
five max-pools, then one linear read-out (the common CIFAR variant); `width` is the first
stage's channels (64), the others scale with it; optional BN. All 3x3 convs are 'same'-padded
and carry a bias only without BN.
"""

from __future__ import annotations

import math

from torch import nn

from netgeom.models.initialisation import apply_init, check_init, vgg_style_
from netgeom.models.layers import conv_block, layer_kit, relu, require_size, shrink
from netgeom.models.registry import register_model

M = "M"
CONFIGS = {
    11: (64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M),
    13: (64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M),
    16: (64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M),
    19: (64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512, 512, M),
}


def vgg_features(kit, config, batch_norm: bool, pool) -> tuple[list[nn.Module], int, tuple[int, ...]]:
    """Conv blocks and pools of `config`; returns layers, output channels, output spatial size."""
    layers: list[nn.Module] = []
    channels, spatial = kit.channels, kit.spatial
    for entry in config:
        if entry == M:
            layers.append(pool(2))
            spatial = shrink(spatial, 2, 2)
        else:
            layers += conv_block(kit, channels, entry, batch_norm)
            channels = entry
    return layers, channels, spatial


def _vgg8(input_shape, num_classes: int, pooling: str, arch: str) -> nn.Module:
    kit = layer_kit(input_shape, arch)
    require_size(kit.spatial, arch, 8)
    pool = kit.avg_pool if pooling == "avg" else kit.max_pool
    layers, channels, spatial = vgg_features(kit, (6, 6, M, 16, 16, M, 64, 64, M), False, pool)
    flat = channels * math.prod(spatial)
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(flat, 120), relu(), nn.Linear(120, num_classes))
    vgg_style_(model)
    return model


@register_model("vgg8")
def build_vgg8(input_shape, num_classes) -> nn.Module:
    return _vgg8(input_shape, num_classes, "avg", "vgg8")


@register_model("vgg8_maxpool")
def build_vgg8_maxpool(input_shape, num_classes) -> nn.Module:
    return _vgg8(input_shape, num_classes, "max", "vgg8_maxpool")


def _register_vgg(depth: int) -> None:
    name = f"vgg{depth}"

    @register_model(name)
    def build(input_shape, num_classes, *, width: int = 64, batch_norm: bool = False, init: str = "pytorch") -> nn.Module:
        check_init(init, ("pytorch", "kaiming"), name)
        kit = layer_kit(input_shape, name)
        require_size(kit.spatial, name, 32)  # five halvings
        config = tuple(c if c == M else c * width // 64 for c in CONFIGS[depth])
        layers, channels, spatial = vgg_features(kit, config, batch_norm, kit.max_pool)
        model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * math.prod(spatial), num_classes))
        apply_init(model, init)
        return model

    build.__name__ = f"build_{name}"


for _depth in CONFIGS:
    _register_vgg(_depth)
