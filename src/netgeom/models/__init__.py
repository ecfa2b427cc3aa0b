"""The model zoo: `create_model(arch, input_shape, num_classes, **options)`, `list_models`.

Adding a family is one module that registers its builders plus one import line here.
"""

from netgeom.models.registry import accepted_options, count_parameters, create_model, list_models, register_model

# Family modules register their builders on import.
from netgeom.models import mlp  # noqa: E402,F401
from netgeom.models import cnn  # noqa: E402,F401
from netgeom.models import resnet  # noqa: E402,F401
from netgeom.models import vgg  # noqa: E402,F401
from netgeom.models import lenet  # noqa: E402,F401
from netgeom.models import alexnet  # noqa: E402,F401
from netgeom.models import densenet  # noqa: E402,F401
from netgeom.models import torchvision_models  # noqa: E402,F401
from netgeom.models import autoencoder  # noqa: E402,F401  (the MLI autoencoder: registers no classifier)

__all__ = ["accepted_options", "count_parameters", "create_model", "list_models", "register_model"]
