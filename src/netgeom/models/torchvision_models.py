"""ImageNet architectures from torchvision (random init; `pretrained` loads a local file).

tv_alexnet, tv_vgg11..19 (batch_norm picks the _bn variant), tv_resnet18, tv_resnet50, all
with num_classes outputs. They take 3-channel images only (no 1-D variant). Every ReLU is made
non-inplace; torchvision's residual blocks call one nn.ReLU module at several sites, which
hooks see as several calls.
"""

from __future__ import annotations

from torch import nn
from netgeom.errors import NetgeomError
from netgeom.models.layers import disable_inplace, layer_kit, require_size
from netgeom.models.registry import register_model

# name -> (torchvision constructor, its BN twin or None, smallest input side it can take).
# Names, not functions: importing torchvision costs a second, paid only when one is built.
ARCHS = {
    "tv_alexnet": ("alexnet", None, 63),
    "tv_vgg11": ("vgg11", "vgg11_bn", 32),
    "tv_vgg13": ("vgg13", "vgg13_bn", 32),
    "tv_vgg16": ("vgg16", "vgg16_bn", 32),
    "tv_vgg19": ("vgg19", "vgg19_bn", 32),
    "tv_resnet18": ("resnet18", None, 32),
    "tv_resnet50": ("resnet50", None, 32),
}


def _build(name: str, input_shape, num_classes: int, batch_norm: bool) -> nn.Module:
    kit = layer_kit(input_shape, name, ranks=(2,))
    plain, with_bn, min_side = ARCHS[name]
    if kit.channels != 3:
        raise NetgeomError("input_shape", f"{name} takes 3-channel images, got {tuple(input_shape)}")
    require_size(kit.spatial, name, min_side)
    from torchvision import models

    constructor = getattr(models, with_bn if batch_norm else plain)
    model = constructor(weights=None, num_classes=num_classes)
    disable_inplace(model)
    return model


def _register(name: str) -> None:
    if ARCHS[name][1] is None:
        def build(input_shape, num_classes) -> nn.Module:
            return _build(name, input_shape, num_classes, False)
    else:
        def build(input_shape, num_classes, *, batch_norm: bool = False) -> nn.Module:
            return _build(name, input_shape, num_classes, batch_norm)
    build.__name__ = f"build_{name}"
    register_model(name)(build)


for _name in ARCHS:
    _register(_name)
