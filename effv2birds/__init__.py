"""effv2birds: train, reproduce and study EfficientNetV2-S image classifiers.

Importing the package is cheap and has no side effects: the public names below are loaded on
first use (so ``effv2birds --help`` does not import torch).

>>> from effv2birds import TrainConfig
>>> TrainConfig().image_size
32
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # configuration
    "TrainConfig": "effv2birds.config",
    "ProgressiveConfig": "effv2birds.config",
    "ConfigError": "effv2birds.errors",
    "Effv2birdsError": "effv2birds.errors",  # the base of every error about bad input
    "resolve_config": "effv2birds.config",
    "PRESETS": "effv2birds.presets",
    # models
    "build_model": "effv2birds.models",
    "list_variants": "effv2birds.models",
    "list_models": "effv2birds.models",
    "get_transforms": "effv2birds.models",
    "model_facts": "effv2birds.models",
    "ModelTransforms": "effv2birds.models",
    "WeightsError": "effv2birds.models",
    "WeightsNotFoundError": "effv2birds.models",
    "ModelConfigError": "effv2birds.models",
    "ModelFacts": "effv2birds.models",
    "get_classifier": "effv2birds.models",
    "set_regularization": "effv2birds.models",
    # data
    "load_image_dataset": "effv2birds.data",
    "cache_split": "effv2birds.data",
    "CachedSplit": "effv2birds.data",
    "make_loader": "effv2birds.data",
    "BatchAugment": "effv2birds.data",
    "DataError": "effv2birds.data",
    "to_model_input": "effv2birds.data",
    "skipped_files": "effv2birds.data",
    "data_report": "effv2birds.data",
    # preprocessing: one object per run, shared by training, evaluation, predict and export
    "Preprocessing": "effv2birds.preprocessing",
    # training and inference
    "train": "effv2birds.training",
    "TrainResult": "effv2birds.training",
    "load_trained": "effv2birds.training",
    "Predictor": "effv2birds.training",
    "evaluate_run": "effv2birds.training",
    # export and sharing
    "export_run": "effv2birds.export",
    "ExportError": "effv2birds.export",
    # the reproduction study
    "plan_runs": "effv2birds.study",
    "run_planned": "effv2birds.study",
    "write_report": "effv2birds.study",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'effv2birds' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # for type checkers and IDEs
    from effv2birds.config import ProgressiveConfig, TrainConfig, resolve_config
    from effv2birds.errors import ConfigError, Effv2birdsError
    from effv2birds.presets import PRESETS
    from effv2birds.export import ExportError, export_run
    from effv2birds.data import (BatchAugment, CachedSplit, DataError, cache_split, load_image_dataset, make_loader,
                                 data_report, skipped_files, to_model_input)
    from effv2birds.models import (ModelConfigError, ModelFacts, ModelTransforms, WeightsError, WeightsNotFoundError,
                                   build_model, get_classifier, get_transforms, list_models, list_variants,
                                   model_facts, set_regularization)
    from effv2birds.preprocessing import Preprocessing
    from effv2birds.study import plan_runs, run_planned, write_report
    from effv2birds.training import Predictor, TrainResult, evaluate_run, load_trained, train
