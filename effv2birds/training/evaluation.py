"""Evaluation on a prepared loader: predictions gathered from every process, metrics via ``evaluate``.

>>> from effv2birds.training.evaluation import evaluate_model
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from effv2birds.training.metrics import classification_metrics

if TYPE_CHECKING:
    from effv2birds.preprocessing import Preprocessing

__all__ = ["evaluate_model"]


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, loader: Any, accelerator: Any, *,
                   preprocessing: "Preprocessing | None" = None, mean=None, std=None, normalize: bool = True,
                   channels_last: bool, num_classes: int, class_names: list[str] | None = None) -> dict[str, Any]:
    """Top-1/top-5/macro-F1/per-class accuracy/confusion matrix/loss of ``model`` on a prepared loader.

    The loader's uint8 batches become model inputs as ``preprocessing`` (the run's
    :class:`~effv2birds.preprocessing.Preprocessing`) says; ``mean``/``std``/``normalize`` instead of it
    are the older form of the same. Predictions are gathered from all processes with
    ``gather_for_metrics`` (padding duplicates dropped, so ``num_samples`` is exactly the split size);
    every process returns the same numbers. The loss is plain cross-entropy (no label smoothing).

    >>> import torch
    >>> from accelerate import Accelerator
    >>> from effv2birds.data import CachedSplit, make_loader
    >>> acc = Accelerator(cpu=True)
    >>> split = CachedSplit(torch.zeros(6, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1] * 3), ["a", "b"], 4)
    >>> model, loader = acc.prepare(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 2)),
    ...                             make_loader(split, 4, shuffle=False))
    >>> from effv2birds.preprocessing import Preprocessing
    >>> pre = Preprocessing(input_size=4, mean=(0.5,) * 3, std=(0.5,) * 3)
    >>> m = evaluate_model(model, loader, acc, preprocessing=pre, channels_last=False, num_classes=2)
    >>> m["num_samples"], m["top1"]
    (6, 0.5)
    """
    if preprocessing is not None:
        if mean is not None or std is not None:
            raise TypeError("evaluate_model(): pass preprocessing= or mean=/std=/normalize=, not both")
        scale = functools.partial(preprocessing.to_model_input, channels_last=channels_last)
    elif mean is None or std is None:
        raise TypeError("evaluate_model() needs preprocessing= (the run's Preprocessing), or mean= and std=")
    else:
        from effv2birds.data import to_model_input

        scale = functools.partial(to_model_input, mean=mean, std=std, normalize=normalize, channels_last=channels_last)
    was_training = model.training
    model.eval()
    logits_all, labels_all, losses_all = [], [], []
    for images, labels in loader:
        inputs = scale(images)
        with accelerator.autocast():
            logits = model(inputs).float()
        losses = F.cross_entropy(logits, labels, reduction="none")
        logits, labels, losses = accelerator.gather_for_metrics((logits, labels, losses))
        logits_all.append(logits)
        labels_all.append(labels)
        losses_all.append(losses)
    model.train(was_training)
    return classification_metrics(torch.cat(logits_all), torch.cat(labels_all), losses=torch.cat(losses_all),
                                  num_classes=num_classes, class_names=class_names)
