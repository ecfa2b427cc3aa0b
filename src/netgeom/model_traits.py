"""What the studies need to know of a model family before anything is built: which families
contain max-pooling and which have no conv layer. Plain data outside `netgeom.models` (whose
package imports torch), so `netgeom check` can refuse a study the model cannot take without
importing torch; tests/test_models.py builds every registered family and checks these sets
against the modules it really contains."""

from __future__ import annotations

import re

MAX_POOL_FAMILIES = frozenset({
    "cnn_k", "lenet", "alexnet_cifar", "vgg8_maxpool", "vgg11", "vgg13", "vgg16", "vgg19",
    "tv_alexnet", "tv_resnet18", "tv_resnet50", "tv_vgg11", "tv_vgg13", "tv_vgg16", "tv_vgg19",
})  # fmt: skip
CONV_FREE_FAMILIES = frozenset({"mlp"})

# A family whose width lives in its name registers the stem: resnet18_k8 is resnet18_k, width 8
# (the model registry reads names with this same pattern).
WIDTH_SUFFIX = re.compile(r"^(?P<stem>.+_k)(?P<width>\d+)$")


def family(arch: str) -> str:
    match = WIDTH_SUFFIX.match(arch)
    return match["stem"] if match else arch
