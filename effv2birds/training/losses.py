"""Training losses: cross-entropy with label smoothing, and the cosine loss for small data sets.

The cosine loss (Barz & Denzler, "Deep Learning on Small Datasets without Pre-Training using
Cosine Loss", WACV 2020) is ``1 - cos(logits, target)``: it ignores the length of the logit
vector, so the network cannot lower the loss by growing its outputs, which the authors found to
overfit less than cross-entropy when there are few images per class (CUB-200 from scratch:
51.9 % -> 67.6 %). Predictions are unchanged in form: the class is still the largest logit.

>>> import torch
>>> loss = build_criterion("cosine", label_smoothing=0.0)
>>> float(loss(torch.tensor([[5.0, 0.0]]), torch.tensor([0])))  # already pointing at class 0
0.0
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from effv2birds.errors import ConfigError

__all__ = ["LOSSES", "build_criterion", "cosine_loss"]

LOSSES = ("cross_entropy", "cosine")

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cosine_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean of ``1 - cos(logits, target)``; ``targets`` are class indices or per-class weights
    (mixup/cutmix), smoothed like cross-entropy's ``label_smoothing`` (``(1 - e) * y + e / K``).

    >>> import torch
    >>> round(float(cosine_loss(torch.tensor([[0.0, 1.0]]), torch.tensor([0]))), 3)  # orthogonal
    1.0
    """
    num_classes = logits.shape[-1]
    if targets.ndim == 1:
        targets = F.one_hot(targets, num_classes).to(logits.dtype)
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    return (1.0 - F.cosine_similarity(logits, targets.to(logits.dtype), dim=-1)).mean()


def build_criterion(loss: str = "cross_entropy", *, label_smoothing: float = 0.0) -> Criterion:
    """The training loss ``(logits, targets) -> scalar`` that ``TrainConfig.loss`` names.

    >>> import torch
    >>> ce = build_criterion("cross_entropy", label_smoothing=0.1)
    >>> round(float(ce(torch.zeros(1, 4), torch.tensor([2]))), 4)  # ln 4: uniform logits
    1.3863
    """
    if loss == "cross_entropy":
        return torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if loss == "cosine":
        return lambda logits, targets: cosine_loss(logits, targets, label_smoothing)
    raise ConfigError(f"loss={loss!r} is not known; choose one of {', '.join(LOSSES)}")
