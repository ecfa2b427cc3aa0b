"""DenseNet-40 with growth rate 12 (Huang et al., the CIFAR model without bottleneck or
compression): stem conv3x3(16), three dense blocks of 12 BN-ReLU-conv3x3(12) layers whose
outputs are concatenated, BN-ReLU-conv1x1-avgpool2 transitions, BN-ReLU, global average pool,
linear. About 1.0M parameters. No dropout (deterministic). With batch_norm false the BNs go
and the convs get biases."""

from __future__ import annotations

import torch
from torch import nn

from netgeom.models.layers import LayerKit, layer_kit, relu
from netgeom.models.registry import register_model


def preactivation(kit: LayerKit, cin: int, cout: int, kernel: int, batch_norm: bool) -> list[nn.Module]:
    norm = [kit.batch_norm(cin)] if batch_norm else []
    return [*norm, relu(), kit.conv(cin, cout, kernel, padding=kernel // 2, bias=not batch_norm)]


class DenseLayer(nn.Module):
    """x -> cat(x, BN-ReLU-conv(x)) along channels."""

    def __init__(self, kit: LayerKit, cin: int, growth: int, batch_norm: bool):
        super().__init__()
        self.body = nn.Sequential(*preactivation(kit, cin, growth, 3, batch_norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], dim=1)


def densenet(kit: LayerKit, num_classes: int, depth: int, growth: int, batch_norm: bool) -> nn.Sequential:
    per_block = (depth - 4) // 3
    channels = 16
    layers: list[nn.Module] = [kit.conv(kit.channels, channels, 3, padding=1, bias=not batch_norm)]
    for block in range(3):
        for _ in range(per_block):
            layers.append(DenseLayer(kit, channels, growth, batch_norm))
            channels += growth
        if block < 2:
            layers += preactivation(kit, channels, channels, 1, batch_norm) + [kit.avg_pool(2)]
    norm = [kit.batch_norm(channels)] if batch_norm else []
    layers += [*norm, relu(), kit.adaptive_avg_pool(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


@register_model("densenet40_12")
def build_densenet40_12(input_shape, num_classes, *, batch_norm: bool = True) -> nn.Module:
    return densenet(layer_kit(input_shape, "densenet40_12"), num_classes, 40, 12, batch_norm)
