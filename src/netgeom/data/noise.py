"""Label and input corruption of the training subset.

Every function takes an explicit numpy Generator, so each corruption is a pure function of its
seed. Validation labels are never corrupted.
"""

from __future__ import annotations

import numpy as np

from netgeom.errors import NetgeomError


def symmetric(labels: np.ndarray, p: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Exactly round(n p) samples, chosen uniformly, each moved to one of the K-1 other classes."""
    noisy = labels.copy()
    chosen = rng.choice(len(labels), size=int(round(len(labels) * p)), replace=False)
    # An offset in 1..K-1 added modulo K is uniform over the other classes and never the same one.
    offsets = rng.integers(1, num_classes, size=len(chosen))
    noisy[chosen] = (labels[chosen] + offsets) % num_classes
    return noisy


def uniform(labels: np.ndarray, p: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Each label with probability p replaced by a uniform draw over all K classes (may keep it)."""
    noisy = labels.copy()
    replace = rng.random(len(labels)) < p
    noisy[replace] = rng.integers(0, num_classes, size=int(replace.sum()))
    return noisy


def asymmetric(labels: np.ndarray, p: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Class c -> (c + 1) mod K for exactly round(n_c p) samples of each class.

    Counting per class keeps the flip rate exact on unbalanced splits (and on classes that are
    missing altogether, where there is simply nothing to flip).
    """
    noisy = labels.copy()
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        chosen = rng.choice(members, size=int(round(len(members) * p)), replace=False)
        noisy[chosen] = (c + 1) % num_classes
    return noisy


LABEL_NOISE = {"none": None, "symmetric": symmetric, "uniform": uniform, "asymmetric": asymmetric}


def corrupt_labels(labels: np.ndarray, kind: str, p: float, num_classes: int, seed: int) -> np.ndarray:
    if kind not in LABEL_NOISE:
        raise NetgeomError("noise.kind", f"unknown {kind!r}; allowed: {', '.join(LABEL_NOISE)}")
    if not 0 <= p <= 1:
        raise NetgeomError("noise.label", f"must lie within [0, 1] (got {p})")
    outside = labels[(labels < 0) | (labels >= num_classes)]
    if len(outside):
        # The offsets below work modulo K: an out-of-range label would be silently wrapped.
        raise NetgeomError("labels", f"{len(outside)} labels lie outside 0..{num_classes - 1} (e.g. {int(outside[0])}); check data.classes")
    if kind == "none" or p == 0:
        return labels.copy()
    if num_classes < 2 and kind in ("symmetric", "asymmetric"):
        raise NetgeomError("noise.kind", f"{kind} noise moves labels to another class, but the data has {num_classes} class; use noise.kind: none")
    return LABEL_NOISE[kind](labels, p, num_classes, np.random.default_rng(seed))


def _image_rng(seed: int, sample_id: int) -> np.random.Generator:
    # Keyed by sample id, so a sample's corruption doesn't depend on which others are present.
    return np.random.default_rng([seed, int(sample_id)])


def pixel_shuffle(x: np.ndarray, sample_ids: np.ndarray, seed: int, per_image: bool) -> np.ndarray:
    """Permute spatial positions (all channels alike): one permutation for all, or one per image."""
    flat = x.reshape(len(x), x.shape[1], -1)
    positions = flat.shape[-1]
    if not per_image:
        return flat[:, :, np.random.default_rng(seed).permutation(positions)].reshape(x.shape)
    out = np.empty_like(flat)
    for row, sid in enumerate(sample_ids):
        out[row] = flat[row][:, _image_rng(seed, sid).permutation(positions)]
    return out.reshape(x.shape)


def random_pixels(x: np.ndarray, sample_ids: np.ndarray, seed: int) -> np.ndarray:
    """Replace each (normalised) image by independent standard-normal pixels."""
    out = np.empty_like(x)
    for row, sid in enumerate(sample_ids):
        out[row] = _image_rng(seed, sid).standard_normal(x.shape[1:]).astype(x.dtype)
    return out


def corrupt_inputs(x: np.ndarray, sample_ids: np.ndarray, kind: str, seed: int, per_image: bool) -> np.ndarray:
    if kind == "none":
        return x
    if kind == "pixel_shuffle":
        return pixel_shuffle(x, sample_ids, seed, per_image)
    if kind == "random_pixels":
        return random_pixels(x, sample_ids, seed)
    raise NetgeomError("noise.input", f"unknown {kind!r}; allowed: none, pixel_shuffle, random_pixels")
