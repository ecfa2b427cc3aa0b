"""Colour jitter with explicitly drawn factors, for the tangent metrics of the smoothness study.

The smoothness seed took 4 torchvision `ColorJitter(brightness=0.01, contrast=0.01,
saturation=0.01, hue=0)` variants of each image, its random generator seeded 44 per data-loader
worker, so its values changed with `--workers`. Here the variants of one point come from their
own numpy generator seeded by (seed, *key), the key naming the sample and the point of its
volume: the same point gets the same variants whatever the batch size, shard count or worker
count, and no global random state is touched.

Per variant: a random order of the three ops (as ColorJitter), then factors ~ U[0.99, 1.01] for
brightness, contrast and saturation (hue stays 0). The ops are torchvision's
(`transforms.v2.functional.adjust_brightness/contrast/saturation` on float images, clamped to
[0, 1] after each), written here on batched tensors so every image takes its own factors.
Images must be raw (values in [0, 1]) with 1 or 3 channels. On 1-channel images brightness and
contrast apply and saturation is the identity (as torchvision does for grayscale); its factor is
still drawn, so a sample's brightness and contrast factors do not depend on the channel count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from netgeom.errors import NetgeomError

JITTER_RANGE = 0.01  # factors ~ U[1 - range, 1 + range], the seed's ColorJitter(0.01, 0.01, 0.01)
VARIANTS = 4
OPS = ("brightness", "contrast", "saturation")
# ITU-R 601-2 luma, the weights torchvision's rgb_to_grayscale uses
_LUMA = (0.2989, 0.587, 0.114)


@dataclass(frozen=True)
class JitterDraws:
    """order[p, v] is the permutation of OPS applied in turn to variant v of point p;
    factors[p, v] the brightness, contrast and saturation factors (float64)."""

    order: np.ndarray  # (P, V, 3) int64
    factors: np.ndarray  # (P, V, 3)


def draw_jitter(keys: np.ndarray, seed: int, variants: int = VARIANTS) -> JitterDraws:
    """The jitter of each point, from numpy's default_rng([seed, *keys[p]]) (keys: (P, k) integers >= 0)."""
    keys = np.asarray(keys, dtype=np.int64).reshape(len(keys), -1)
    if len(keys) and int(keys.min()) < 0:
        raise NetgeomError("sample_ids", "must be integers >= 0 (they seed the colour jitter)")
    order = np.empty((len(keys), variants, len(OPS)), dtype=np.int64)
    factors = np.empty((len(keys), variants, len(OPS)))
    for p, key in enumerate(keys):
        rng = np.random.default_rng([seed, *key.tolist()])
        for v in range(variants):
            order[p, v] = rng.permutation(len(OPS))
            factors[p, v] = rng.uniform(1.0 - JITTER_RANGE, 1.0 + JITTER_RANGE, size=len(OPS))
    return JitterDraws(order, factors)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """(..., 1, H, W) luma of (..., 3, H, W) images; 1-channel images are their own grayscale."""
    if images.shape[-3] == 1:
        return images
    r, g, b = images.unbind(dim=-3)
    return (r * _LUMA[0] + g * _LUMA[1] + b * _LUMA[2]).unsqueeze(-3)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor, complement: torch.Tensor) -> torch.Tensor:
    return (images * factor + other * complement).clamp_(0.0, 1.0)


def jitter_images(raw: torch.Tensor, draws: JitterDraws) -> torch.Tensor:
    """The jittered variants (P, V, C, H, W) of raw images (P, C, H, W) in [0, 1]."""
    if raw.dim() != 4 or raw.shape[1] not in (1, 3):
        raise NetgeomError("smoothness.metric", f"colour jitter needs (C, H, W) images with 1 or 3 channels, got {tuple(raw.shape[1:])}")
    shape = draws.factors.shape[:2] + (1, 1, 1)
    factor = [torch.as_tensor(draws.factors[..., k], dtype=raw.dtype, device=raw.device).view(shape) for k in range(len(OPS))]
    # 1 - f in float64 before rounding to the image dtype, as torchvision's alpha = 1 - factor
    complement = [torch.as_tensor(1.0 - draws.factors[..., k], dtype=raw.dtype, device=raw.device).view(shape) for k in range(len(OPS))]
    order = torch.as_tensor(draws.order, device=raw.device).view(draws.order.shape[:2] + (len(OPS), 1, 1, 1))
    images = raw.unsqueeze(1).expand(-1, draws.factors.shape[1], -1, -1, -1)
    colour = raw.shape[1] == 3
    for step in range(len(OPS)):
        brightness = (images * factor[0]).clamp(0.0, 1.0)
        mean = grayscale(images).mean(dim=(-3, -2, -1), keepdim=True)
        contrast = _blend(images, mean, factor[1], complement[1])
        saturation = _blend(images, grayscale(images), factor[2], complement[2]) if colour else images
        op = order[:, :, step]
        images = torch.where(op == 0, brightness, torch.where(op == 1, contrast, saturation))
    return images
