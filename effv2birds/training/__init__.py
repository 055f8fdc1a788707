"""Training, evaluation and inference on top of ``accelerate``.

>>> from effv2birds.training import TrainResult, train, load_trained
>>> "best_val_top1" in TrainResult.__dataclass_fields__
True
"""

from .batchnorm import recompute_bn_statistics
from .checkpoint import CheckpointError, list_checkpoints, resolve_resume
from .inference import TTA_MODES, Prediction, Predictor, UnreadableImageError, load_trained
from .metrics import ClassReport, MeanLoss, TopKAccuracy, build_metrics, classification_metrics
from .optim import LRSchedule, build_optimizer, build_schedule, scaled_lr
from .evaluation import evaluate_model
from .run_eval import evaluate_run
from .nonfinite import NonFiniteGuard, NonFiniteLossError
from .trainer import TrainResult, should_stop_early, train

__all__ = [
    "CheckpointError",
    "ClassReport",
    "LRSchedule",
    "MeanLoss",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "Prediction",
    "Predictor",
    "TTA_MODES",
    "TopKAccuracy",
    "TrainResult",
    "UnreadableImageError",
    "build_metrics",
    "build_optimizer",
    "build_schedule",
    "classification_metrics",
    "evaluate_model",
    "evaluate_run",
    "list_checkpoints",
    "load_trained",
    "recompute_bn_statistics",
    "resolve_resume",
    "scaled_lr",
    "should_stop_early",
    "train",
]
