"""Classification metrics built on ``evaluate``'s own Metric API, so they work offline.

``evaluate.load("accuracy")`` fetches a script from the Hugging Face hub; these metric classes
ship with the package instead and are used exactly like loaded ones (``add_batch``/``compute``,
``evaluate.combine``). Predictions are *ranked class indices* (best first, one row per image),
so one input serves top-1, top-5, F1 and the confusion matrix.

>>> import torch
>>> from effv2birds.training.metrics import classification_metrics
>>> logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 1.0, 2.0]])
>>> m = classification_metrics(logits, torch.tensor([0, 2, 2]), losses=torch.tensor([0.1, 0.2, 0.3]))
>>> round(m["top1"], 4), m["top5"], m["num_samples"]
(0.6667, 1.0, 3)
"""

from __future__ import annotations

from typing import Any, Sequence

import datasets
import evaluate
import numpy as np

__all__ = [
    "TopKAccuracy",
    "ClassReport",
    "MeanLoss",
    "build_metrics",
    "classification_metrics",
    "rank_predictions",
]

_RANKED = datasets.Sequence(datasets.Value("int64"))


def _ranked_info(description: str, inputs: str) -> evaluate.MetricInfo:
    """MetricInfo of a metric fed ranked class indices and true classes."""
    return evaluate.MetricInfo(
        description=description, citation="", inputs_description=inputs,
        features=datasets.Features({"predictions": _RANKED, "references": datasets.Value("int64")}),
    )


def rank_predictions(logits: Any, k: int = 5) -> Any:
    """Top-``k`` class indices of each row of ``logits`` (torch tensor), best first.

    >>> import torch
    >>> rank_predictions(torch.tensor([[0.1, 0.7, 0.2]]), k=2).tolist()
    [[1, 2]]
    """
    k = min(k, logits.shape[-1])
    return logits.topk(k, dim=-1).indices


class TopKAccuracy(evaluate.Metric):
    """Top-1 and top-5 accuracy from ranked predictions (a row may hold fewer than 5 classes).

    >>> TopKAccuracy().compute(predictions=[[1, 0], [0, 1]], references=[1, 1])
    {'top1': 0.5, 'top5': 1.0}
    """

    def _info(self) -> evaluate.MetricInfo:
        return _ranked_info("Top-1 and top-5 accuracy of ranked class predictions.",
                            "predictions: ranked class indices per sample; references: true class.")

    def _compute(self, predictions, references, **_: Any) -> dict[str, float]:
        refs = np.asarray(references, dtype=np.int64)
        if len(refs) == 0:
            return {"top1": float("nan"), "top5": float("nan")}
        ranked = np.asarray(predictions, dtype=np.int64).reshape(len(refs), -1)
        hits = ranked == refs[:, None]
        return {"top1": float(hits[:, :1].any(axis=1).mean()), "top5": float(hits[:, :5].any(axis=1).mean())}


class ClassReport(evaluate.Metric):
    """Macro-F1, per-class accuracy (recall) and the confusion matrix, via scikit-learn.

    ``num_classes`` (a compute argument) fixes the class axis, so classes that never occur still get a
    row; per-class accuracy of a class with no sample is ``None``.

    >>> r = ClassReport().compute(predictions=[[0], [1], [1]], references=[0, 1, 0], num_classes=3)
    >>> r["confusion_matrix"], r["per_class_accuracy"]
    ([[1, 1, 0], [0, 1, 0], [0, 0, 0]], [0.5, 1.0, None])
    """

    def _info(self) -> evaluate.MetricInfo:
        return _ranked_info("Macro-F1, per-class accuracy and confusion matrix (rows: true class).",
                            "predictions: ranked class indices per sample (first is used); references.")

    def _compute(self, predictions, references, num_classes: int | None = None, **_: Any) -> dict[str, Any]:
        from sklearn.metrics import confusion_matrix, f1_score

        refs = np.asarray(references, dtype=np.int64)
        top1 = np.asarray(predictions, dtype=np.int64).reshape(len(refs), -1)[:, 0] if len(refs) else refs
        if num_classes is None:
            num_classes = int(max(refs.max(initial=-1), top1.max(initial=-1)) + 1)
        labels = list(range(num_classes))
        cm = confusion_matrix(refs, top1, labels=labels) if len(refs) else np.zeros((num_classes,) * 2, int)
        support = cm.sum(axis=1)
        per_class = [float(cm[i, i] / support[i]) if support[i] else None for i in labels]
        # Macro-F1 over the classes present in the references or predictions: a class absent from
        # both says nothing about the model and must not count as F1=0.
        present = sorted(set(refs.tolist()) | set(top1.tolist()))
        macro_f1 = (float(f1_score(refs, top1, labels=present, average="macro", zero_division=0)) if present
                    else float("nan"))
        return {"macro_f1": macro_f1, "per_class_accuracy": per_class, "confusion_matrix": cm.tolist()}


class MeanLoss(evaluate.Metric):
    """Mean of per-sample losses.

    >>> MeanLoss().compute(losses=[0.5, 1.5])
    {'loss': 1.0}
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Mean per-sample loss.",
            citation="",
            inputs_description="losses: one float per sample.",
            features=datasets.Features({"losses": datasets.Value("float64")}),
        )

    def _compute(self, losses, **_: Any) -> dict[str, float]:
        values = np.asarray(losses, dtype=np.float64)
        return {"loss": float(values.mean()) if len(values) else float("nan")}


def build_metrics() -> evaluate.CombinedEvaluations:
    """All metrics the trainer reports, as one ``evaluate.combine`` object (kept in memory: no files).

    >>> metrics = build_metrics()
    >>> metrics.add_batch(predictions=[[0, 1]], references=[0], losses=[0.25])
    >>> metrics.compute(num_classes=2)["top1"]
    1.0
    """
    return evaluate.combine(
        [TopKAccuracy(keep_in_memory=True), ClassReport(keep_in_memory=True), MeanLoss(keep_in_memory=True)]
    )


def classification_metrics(
    logits: Any,
    labels: Any,
    *,
    losses: Any | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every evaluation number from (already gathered) logits, labels and per-sample losses.

    Returns ``top1, top5, macro_f1, loss, per_class_accuracy, confusion_matrix, num_samples`` and,
    when ``class_names`` is given, ``class_names``. Tensors are moved to the host once, here.

    >>> import torch
    >>> m = classification_metrics(torch.eye(3), torch.tensor([0, 1, 1]), num_classes=3)
    >>> m["top1"], m["per_class_accuracy"]
    (0.6666666666666666, [1.0, 0.5, None])
    """
    num_classes = num_classes or int(logits.shape[-1])
    ranked = rank_predictions(logits.float(), k=5).cpu().numpy()
    refs = labels.cpu().numpy() if hasattr(labels, "cpu") else np.asarray(labels)
    metrics = build_metrics()
    batch: dict[str, Any] = {"predictions": ranked.tolist(), "references": refs.tolist()}
    batch["losses"] = (losses.float().cpu().numpy() if losses is not None else np.full(len(refs), np.nan)).tolist()
    metrics.add_batch(**batch)
    result = metrics.compute(num_classes=num_classes)
    if losses is None:
        result["loss"] = None
    result["num_samples"] = int(len(refs))
    if class_names is not None:
        result["class_names"] = list(class_names)
    return result
