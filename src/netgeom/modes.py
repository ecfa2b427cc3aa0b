"""A module's train/eval flags, set for a block and restored per submodule afterwards.

`model.train(was)` would overwrite every submodule with the top module's flag: a caller who
froze BatchNorm inside a training model (BN in eval, the rest in train) would get it back in
train mode. Restoring each submodule's own flag leaves the caller's model exactly as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode for the block; every submodule's own flag restored on exit."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training
