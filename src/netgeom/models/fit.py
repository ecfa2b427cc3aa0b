"""How a state dict differs from a model's: the one wording every loader refuses a file with."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

SHOWN = 3  # names listed per kind of difference; the rest is "..."


def mismatch(
    own: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], may_lack: Callable[[str], bool] = lambda name: False
) -> str:
    """'' when `found` has exactly `own`'s tensor names and shapes (names `may_lack` accepts may
    be absent); else e.g. 'missing: fc.bias; shape mismatch: fc.weight (10, 64) vs (10, 32)'."""
    kinds = {
        "missing": [k for k in own if k not in found and not may_lack(k)],
        "unexpected": [k for k in found if k not in own],
        "shape mismatch": [f"{k} {tuple(found[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in found and found[k].shape != own[k].shape],
    }
    return "; ".join(f"{kind}: {', '.join(names[:SHOWN])}{' ...' if len(names) > SHOWN else ''}" for kind, names in kinds.items() if names)
