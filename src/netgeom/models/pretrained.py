"""Load weights from a local file into a freshly built model, never executing code.

Accepted: a safetensors file, or a file written by `torch.save` holding a state dict (read with
`torch.load(weights_only=True)`, which refuses any pickled object that is not plain tensors and
containers). A `{"state_dict": ...}` / `{"model": ...}` wrapper and a DataParallel `module.`
prefix are unwrapped. When only the classifier (the last nn.Linear) differs in shape, e.g. an
ImageNet file loaded into a 10-class model, everything else is loaded and a warning says so.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch
from torch import nn

from netgeom.errors import NetgeomError
from netgeom.models.fit import mismatch

KEY = "model.pretrained"


def load_pretrained(model: nn.Module, path: str | Path) -> None:
    """Copy the tensors in `path` into `model` (in place); NetgeomError on any mismatch."""
    state = read_state_dict(Path(path))
    own = model.state_dict()
    skipped = _classifier_mismatch(model, own, state)
    if skipped:
        warnings.warn(
            f"{path}: classifier {', '.join(skipped)} has a different number of classes; "
            "loaded every other tensor and kept the fresh classifier",
            stacklevel=3,
        )
    wanted = {k: v for k, v in state.items() if k not in skipped}
    # Files from older torch versions lack BN's step counter; it does not affect outputs.
    detail = mismatch(own, wanted, may_lack=lambda k: k in skipped or k.endswith("num_batches_tracked"))
    if detail:
        raise NetgeomError(KEY, f"{path} does not fit this model ({detail})")
    model.load_state_dict(wanted, strict=False)


def read_state_dict(path: Path, key: str = KEY) -> dict[str, torch.Tensor]:
    """The state dict in a safetensors or weights-only torch.save file; NetgeomError naming
    `key` (the setting that named the file) for anything else."""
    if not path.is_file():
        raise NetgeomError(key, f"no such file: {path}")
    try:
        if _looks_like_safetensors(path):
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            with warnings.catch_warnings():  # torch's notes on pickle protocols are noise here
                warnings.simplefilter("ignore", UserWarning)
                state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's own message suggests weights_only=False: exactly what must not happen.
        raise NetgeomError(key, f"{path} holds pickled objects other than tensors; refused, since loading it could run code") from err
    except Exception as err:  # every other reader failure (corrupt, truncated, not a checkpoint) is bad input
        raise NetgeomError(key, f"cannot read {path} as a safetensors or torch.save state dict ({type(err).__name__}: {_first_line(err)})") from err
    state = _unwrap(state)
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise NetgeomError(key, f"{path} does not hold a state dict (a mapping of names to tensors)")
    return state


def _looks_like_safetensors(path: Path) -> bool:
    # safetensors: 8-byte little-endian header length, then a JSON header starting with '{'.
    if path.suffix == ".safetensors":
        return True
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def _unwrap(state):
    if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if isinstance(state, dict) and state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _classifier_mismatch(model: nn.Module, own: dict, state: dict) -> list[str]:
    """Keys of the last nn.Linear whose shapes differ between `model` and the file."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return []
    prefix = linears[-1] + "."
    keys = [k for k in own if k.startswith(prefix) and k.count(".") == prefix.count(".")]
    if all(k in state and state[k].shape != own[k].shape for k in keys):
        return keys
    return []


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else ""
