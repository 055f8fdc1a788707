"""The model layer: EfficientNetV2-S and the study's variants from torchvision or timm.

>>> from effv2birds.models import build_model, get_transforms, list_variants
>>> list_variants()
['default', 'all_mbconv', 'all_fused', 'half_layers', 'four_stage']
"""

from .errors import ModelConfigError, WeightsError, WeightsNotFoundError
from .facts import ModelFacts, model_facts
from .factory import (ModelSpec, build_model, get_classifier, list_models, resolve_model_name,
                      set_bn_momentum, set_regularization, unwrap_model, zero_init_residual_)
from .transforms import ModelTransforms, get_transforms, warn_if_too_small
from .variants import list_variants
from .weights import read_state_dict

__all__ = [
    "ModelConfigError",
    "ModelFacts",
    "ModelSpec",
    "ModelTransforms",
    "WeightsError",
    "WeightsNotFoundError",
    "build_model",
    "get_classifier",
    "get_transforms",
    "list_models",
    "list_variants",
    "model_facts",
    "read_state_dict",
    "resolve_model_name",
    "set_bn_momentum",
    "set_regularization",
    "unwrap_model",
    "warn_if_too_small",
    "zero_init_residual_",
]
