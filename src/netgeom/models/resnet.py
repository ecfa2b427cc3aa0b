"""Post-activation BasicBlock ResNets without max-pool: `resnet18_k` and CIFAR `resnet20..56`.

resnet18_k: stem conv3x3 (k), stages k/2k/4k/8k of 2 blocks, strides 1,2,2,2, global average
pool, linear. resnet{20,32,44,56} (He et al.): stem 16, stages 16/32/64 of n = (depth-2)/6
blocks, strides 1,2,2 (`width` scales the 16).

Conventions (they reproduce the published counts):
- Convs carry a bias only without BN. Downsampling shortcuts are 1x1 convs without bias
  (+ BN when batch_norm), so every shortcut is a conv the region walker understands.
  resnet18_k on CIFAR-10: 2724 k^2 + 168 k + 10 parameters without BN (k=64: 11,168,266),
  2724 k^2 + 257 k + 10 with BN (k=64: 11,173,962). resnet20 with BN: 272,474.
- init: pytorch (layer defaults), kaiming (He-normal), fixup (no BN only): He-normal, the first
  conv of each residual branch scaled by L^-1/2 (L branches, m = 2 layers each), the last conv
  of each branch and the classifier zeroed. The convs' per-channel biases (zero at init) stand
  in for Fixup's scalar biases; Fixup's scalar multiplier (1 at init) is omitted.
"""

from __future__ import annotations

import torch
from torch import nn

from netgeom.errors import NetgeomError
from netgeom.models.initialisation import check_init, kaiming_
from netgeom.models.layers import LayerKit, conv_block, layer_kit, relu
from netgeom.models.registry import register_model

INITS = ("pytorch", "kaiming", "fixup")


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x)), each ReLU its own module."""

    def __init__(self, kit: LayerKit, cin: int, cout: int, stride: int, batch_norm: bool):
        super().__init__()
        norm = kit.batch_norm if batch_norm else (lambda c: nn.Identity())
        self.conv1 = kit.conv(cin, cout, 3, stride=stride, padding=1, bias=not batch_norm)
        self.bn1 = norm(cout)
        self.relu1 = relu()
        self.conv2 = kit.conv(cout, cout, 3, stride=1, padding=1, bias=not batch_norm)
        self.bn2 = norm(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(kit.conv(cin, cout, 1, stride=stride, bias=False), norm(cout))
        self.relu2 = relu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, kit: LayerKit, widths, blocks, strides, num_classes: int, batch_norm: bool):
        super().__init__()
        self.stem = nn.Sequential(*conv_block(kit, kit.channels, widths[0], batch_norm))
        stages, cin = [], widths[0]
        for cout, n, stride in zip(widths, blocks, strides):
            stage = [BasicBlock(kit, cin if i == 0 else cout, cout, stride if i == 0 else 1, batch_norm) for i in range(n)]
            stages.append(nn.Sequential(*stage))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = kit.adaptive_avg_pool(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.stages(self.stem(x)))))


def fixup_(model: ResNet) -> None:
    kaiming_(model)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    with torch.no_grad():
        for block in blocks:
            block.conv1.weight.mul_(len(blocks) ** -0.5)  # L^(-1/(2m-2)) with m = 2
            block.conv2.weight.zero_()
        model.fc.weight.zero_()
        model.fc.bias.zero_()


def build_resnet(input_shape, num_classes, widths, blocks, strides, batch_norm: bool, init: str, arch: str) -> ResNet:
    check_init(init, INITS, arch)
    if init == "fixup" and batch_norm:
        raise NetgeomError("model.init", f"fixup is the init for {arch} without batch norm; set batch_norm: false or pick init pytorch|kaiming")
    kit = layer_kit(input_shape, arch)
    model = ResNet(kit, widths, blocks, strides, num_classes, batch_norm)
    if init == "kaiming":
        kaiming_(model)
    elif init == "fixup":
        fixup_(model)
    return model


@register_model("resnet18_k")
def build_resnet18_k(input_shape, num_classes, *, width: int = 64, batch_norm: bool = True, init: str = "pytorch") -> nn.Module:
    k = width
    return build_resnet(input_shape, num_classes, (k, 2 * k, 4 * k, 8 * k), (2, 2, 2, 2), (1, 2, 2, 2), batch_norm, init, "resnet18_k")


def _register_cifar_resnet(depth: int) -> None:
    name = f"resnet{depth}"
    n = (depth - 2) // 6

    @register_model(name)
    def build(input_shape, num_classes, *, width: int = 16, batch_norm: bool = True, init: str = "pytorch") -> nn.Module:
        w = width
        return build_resnet(input_shape, num_classes, (w, 2 * w, 4 * w), (n, n, n), (1, 2, 2), batch_norm, init, name)

    build.__name__ = f"build_{name}"
    build.__doc__ = f"He et al.'s CIFAR ResNet-{depth}: {n} BasicBlocks per stage, projection shortcuts."


for _depth in (20, 32, 44, 56):
    _register_cifar_resnet(_depth)
