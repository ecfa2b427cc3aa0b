"""Name -> builder registry for the model zoo, and the one entry point `create_model`.

A builder is `def build(input_shape, num_classes, *, width=..., ...) -> nn.Module`. Families whose
width lives in the name register the stem (`resnet18_k`) and `create_model("resnet18_k8", ...)`
reads the trailing integer as `width`. `create_model` hands each builder only the options its
signature names, so one `model` group in params.yaml serves every family; an option set to None
means "the family's default".
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable

from torch import nn

from netgeom.errors import NetgeomError
from netgeom.model_traits import WIDTH_SUFFIX
from netgeom.models.layers import disable_inplace
from netgeom.models.pretrained import load_pretrained

Builder = Callable[..., nn.Module]

_BUILDERS: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator: register `builder` under `name` (a family with the width in its name ends in `_k`)."""

    def decorate(builder: Builder) -> Builder:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} registered twice")
        _BUILDERS[name] = builder
        return builder

    return decorate


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching the fnmatch `pattern`, sorted."""
    return sorted(n for n in _BUILDERS if fnmatch.fnmatchcase(n, pattern))


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (buffers such as BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def accepted_options(arch: str) -> set[str]:
    """The options `arch`'s builder takes (besides `pretrained`, which every family takes)."""
    builder, _ = _resolve(arch, {})
    return {name for name, p in inspect.signature(builder).parameters.items() if p.kind is p.KEYWORD_ONLY}


def create_model(arch: str, input_shape: tuple[int, ...], num_classes: int, **options) -> nn.Module:
    """Build `arch` for inputs of shape `input_shape` (no batch axis) and `num_classes` outputs.

    Options: width, depth, batch_norm, activation, init (each used by the families that take it),
    pretrained (a local safetensors / torch state-dict file, for every family).
    """
    builder, options = _resolve(arch, options)
    input_shape = _check_shape(input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise NetgeomError("num_classes", f"must be a positive integer, got {num_classes!r}")
    pretrained = options.pop("pretrained", None)
    _check_common(options)
    accepted = inspect.signature(builder).parameters
    kwargs = {k: v for k, v in options.items() if k in accepted and v is not None}
    model = builder(input_shape, num_classes, **kwargs)
    disable_inplace(model)  # a safety net: hooks must see every pre-activation
    if pretrained:
        load_pretrained(model, pretrained)
    return model


def _resolve(arch: str, options: dict) -> tuple[Builder, dict]:
    options = dict(options)
    if arch in _BUILDERS:
        return _BUILDERS[arch], options
    match = WIDTH_SUFFIX.match(arch) if isinstance(arch, str) else None
    if match and match["stem"] in _BUILDERS:
        width = int(match["width"])
        given = options.get("width")
        if given is not None and given != width:
            raise NetgeomError("model.width", f"arch {arch!r} fixes width {width}, but width={given!r} was also given")
        options["width"] = width
        return _BUILDERS[match["stem"]], options
    known = ", ".join(list_models())
    raise NetgeomError("model.arch", f"unknown model {arch!r}; known: {known} (a name ending in _k also takes a width, e.g. resnet18_k8)")


def _check_shape(input_shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise NetgeomError("input_shape", f"must be a tuple of positive integers, got {input_shape!r}") from None
    if not 1 <= len(shape) <= 3 or min(shape) < 1:
        raise NetgeomError("input_shape", f"must be (D,), (C, L) or (C, H, W) with positive sizes, got {input_shape!r}")
    return shape


def _check_common(options: dict) -> None:
    width = options.get("width")
    if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width <= 0):
        raise NetgeomError("model.width", f"must be a positive integer, got {width!r}")
    depth = options.get("depth")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
        raise NetgeomError("model.depth", f"must be a non-negative integer, got {depth!r}")
    batch_norm = options.get("batch_norm")
    if batch_norm is not None and not isinstance(batch_norm, bool):
        raise NetgeomError("model.batch_norm", f"must be true or false, got {batch_norm!r}")
