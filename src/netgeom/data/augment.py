"""Batch augmentation on tensors: random crop + horizontal flip for images, random shifts for
1-D signals. All randomness comes from the caller's generator (resumable).

The crop pads with the raw value 0 (black) in the normalised inputs the loop trains on: what
torchvision's RandomCrop(padding=4) before Normalize gives, as the seeds train. Zeros in the
normalised space would be the mean colour instead."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def padding_for(length: int) -> int:
    """4 pixels for 32x32 images (the standard recipe), proportionally less for small inputs."""
    return max(1, length // 8)


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Pad every spatial side by `pad` with `fill` (per channel, shape (C,); None: zeros) and crop
    back at a random offset per sample."""
    batch, spatial = x.shape[0], x.shape[2:]
    if fill is None:
        padded = F.pad(x, (pad, pad) * len(spatial))
    else:
        padded = fill.to(x.dtype).view(1, -1, *[1] * len(spatial)).expand(batch, x.shape[1], *(n + 2 * pad for n in spatial)).clone()
        padded[(slice(None), slice(None), *[slice(pad, pad + n) for n in spatial])] = x
    # Drawn on the generator's (CPU) stream, then moved: the same draws on every device.
    offsets = torch.randint(0, 2 * pad + 1, (len(spatial), batch), generator=generator).to(x.device)
    arange = lambda n: torch.arange(n, device=x.device)  # noqa: E731
    index = [arange(batch).view(-1, *[1] * (len(spatial) + 1)), arange(x.shape[1]).view(1, -1, *[1] * len(spatial))]
    for axis, size in enumerate(spatial):
        shape = [batch, 1] + [1] * len(spatial)
        shape[2 + axis] = size
        index.append((offsets[axis].view(-1, 1) + arange(size)).view(shape))
    return padded[tuple(index)]


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
    return torch.where(flip.view(-1, *[1] * (x.dim() - 1)), x.flip(-1), x)


def raw_zero(mean, std, device=None) -> torch.Tensor:
    """The normalised value of a raw 0 per channel, (0 - mean) / std: the crop's padding."""
    return torch.tensor([-m / s for m, s in zip(mean, std)], device=device)


def augment(x: torch.Tensor, generator: torch.Generator, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Images (N, C, H, W): crop + flip. Signals (N, C, L): shifts (a flip would reverse time).
    `fill`: the crop's padding per channel (`raw_zero` of the data's normalisation)."""
    x = random_crop(x, padding_for(x.shape[-1]), generator, fill)
    return random_flip(x, generator) if x.dim() == 4 else x
