"""What a study needs of the model and the data, checked on params alone (no torch) by
`netgeom check` for every enabled study: a registry entry names its needs, each a function of the
params that returns why it is not met (None when it is)."""

from __future__ import annotations

from collections.abc import Callable

from netgeom.model_traits import CONV_FREE_FAMILIES, MAX_POOL_FAMILIES, family
from netgeom.params import Params

PIECEWISE_LINEAR = ("relu", "identity")


def _piecewise_linear(params: Params) -> str | None:
    activation = params.model.activation
    if activation is not None and activation not in PIECEWISE_LINEAR:
        return f"the exact walk needs a piecewise-linear network and model.activation is {activation} (allowed: {', '.join(PIECEWISE_LINEAR)})"
    return None


def _no_max_pool(params: Params) -> str | None:
    if family(params.model.arch) in MAX_POOL_FAMILIES:
        return f"{params.model.arch} max-pools, whose switching boundaries the exact walk does not trace (e.g. vgg8 instead of vgg8_maxpool)"
    return None


def _spatial_input(params: Params) -> str | None:
    # every named dataset is an image or a 1-D signal (channels first); `random` takes any shape
    if params.data.name == "random" and len(params.data.random.shape) < 2:
        return f"paths of a given radius need inputs with a channel and at least one spatial axis; data.random.shape is {list(params.data.random.shape)}"
    return None


def _hyperplane_layers(params: Params) -> str | None:
    if family(params.model.arch) in CONV_FREE_FAMILIES and not params.hyperplanes.with_linear:
        return f"{params.model.arch} has no conv layer: set hyperplanes.with_linear: true to analyse its linear layers"
    return None


REQUIREMENTS: dict[str, Callable[[Params], str | None]] = {
    "piecewise_linear": _piecewise_linear,
    "no_max_pool": _no_max_pool,
    "spatial_input": _spatial_input,
    "hyperplane_layers": _hyperplane_layers,
}


def unmet(name: str, needs: tuple[str, ...], params: Params) -> str | None:
    """One line saying why study `name` cannot run on these params, or None."""
    for need in needs:
        reason = REQUIREMENTS[need](params)
        if reason:
            return f"{name} cannot run here: {reason}; or switch it off with {name}.enabled: false"
    return None
