"""Checkpoints: safetensors state dicts + JSON metadata, written atomically.

Loading reads safetensors only (tensors and a JSON header), so a checkpoint can never execute
code. The resumable training state (model, optimizer, scheduler, RNG, history) is ONE safetensors
file whose header metadata carries the JSON part: one rename replaces it whole, so a crash can
never pair the tensors of one epoch with the history or scheduler of another.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from netgeom.errors import NetgeomError
from netgeom.io import atomic_write, atomic_write_json, read_json_object

_NAME = re.compile(r"^e(\d{4,})\.safetensors$")


def checkpoint_name(epoch: int) -> str:
    return f"e{epoch:04d}"


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    plain = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(plain, str(tmp), metadata=metadata))


def _load_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise NetgeomError(what, f"{path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise NetgeomError(what, f"{path} is not a valid safetensors file ({str(exc)[:100]}); refusing to load it") from None


def save_checkpoint(folder: Path, epoch: int, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """Write `eNNNN.safetensors` + `eNNNN.json`; the JSON lands last, so it marks completeness."""
    base = Path(folder) / checkpoint_name(epoch)
    _save_tensors(base.with_suffix(".safetensors"), state_dict)
    atomic_write_json(base.with_suffix(".json"), {"epoch": epoch, **metadata})
    return base.with_suffix(".safetensors")


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and metadata of one checkpoint (`.../eNNNN.safetensors`)."""
    path = Path(path)
    state = _load_tensors(path, "checkpoint")
    meta_path = path.with_suffix(".json")
    meta = read_json_object(meta_path) if meta_path.exists() else {}
    return state, meta


def list_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every complete checkpoint in `folder`, by epoch."""
    folder = Path(folder)
    found = []
    for path in folder.glob("e*.safetensors") if folder.exists() else []:
        match = _NAME.match(path.name)
        if match and path.with_suffix(".json").exists():
            found.append((int(match.group(1)), path))
    return sorted(found)


# --------------------------------------------------------------------------- resumable state


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, plain = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{pid}.{key}"] = value
            else:
                plain["state"].setdefault(str(pid), {})[key] = value
    return tensors, plain


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], plain: dict) -> dict:
    state: dict[int, dict] = {int(pid): dict(v) for pid, v in plain["state"].items()}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": plain["param_groups"]}


STATE_FILE = "state.safetensors"
_STATE_KEY = "netgeom.state"


def save_training_state(folder: Path, *, epoch: int, model, optimizer, scheduler, generator, extra: dict) -> None:
    """Everything needed to continue bit-exactly after `epoch` (CPU), in one file."""
    opt_tensors, opt_plain = _flatten_optimizer(optimizer.state_dict())
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(opt_tensors)
    tensors["rng.generator"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
    meta = {"epoch": epoch, "optimizer": opt_plain, "scheduler": scheduler.state_dict(), **extra}
    # Key order is kept (no sort_keys): a resumed run's history keeps its column order.
    _save_tensors(Path(folder) / STATE_FILE, tensors, {_STATE_KEY: json.dumps(meta)})


def load_training_state(folder: Path) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The saved state, None when there is none; NetgeomError naming the file when unreadable."""
    path = Path(folder) / STATE_FILE
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {})[_STATE_KEY])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise NetgeomError(str(path), f"is not a readable resume state ({type(exc).__name__}: {str(exc)[:100]})") from None
    return tensors, meta


def restore_training_state(tensors, meta, *, model, optimizer, scheduler, generator) -> int:
    """Load a saved state into live objects; returns the epoch it was saved after."""
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    generator.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((int(k.rsplit(".", 1)[1]), v) for k, v in tensors.items() if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([state for _, state in cuda][: torch.cuda.device_count()])
    return int(meta["epoch"])
