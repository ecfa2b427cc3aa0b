"""Layers as a reader knows them: '1 · Linear 64→256' rather than the module index '1'.

The studies key layers by their module path in the model (stable, unambiguous: what a script
needs); figures label them with the layer's kind and shape, read from the run's own model."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from torch import nn

from netgeom.layout import RUN_FILE


def describe(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return f"Linear {module.in_features}→{module.out_features}"
    if isinstance(module, nn.Conv2d):
        kernel = "×".join(map(str, module.kernel_size))
        return f"Conv {kernel} {module.in_channels}→{module.out_channels}"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return f"BatchNorm {module.num_features}"
    return type(module).__name__


def layer_labels(model: nn.Module, layers: Iterable[str]) -> dict[str, str]:
    """module path -> 'path · kind shape' for each of `layers` (a path the model lacks keeps its name)."""
    modules = dict(model.named_modules())
    return {name: f"{name} · {describe(modules[name])}" if name in modules else name for name in layers}


def run_layer_labels(run_folder: Path, layers: Iterable[str]) -> dict[str, str]:
    """The same for a finished run (its model built from run.json, no weights loaded); a folder
    without a run.json (a table from elsewhere) keeps the names."""
    layers = list(layers)
    if not (Path(run_folder) / RUN_FILE).exists():
        return {name: name for name in layers}
    from netgeom.runs import model_for_run, read_run

    return layer_labels(model_for_run(read_run(Path(run_folder)).info), layers)
