"""Metrics against a hand-computed example, through evaluate's Metric API (offline)."""

import math

import evaluate
import pytest
import torch

from effv2birds.training.metrics import (ClassReport, MeanLoss, TopKAccuracy, build_metrics,
                                         classification_metrics, rank_predictions)

NUM_CLASSES = 7
# (true label, classes ranked best first)
SAMPLES = [
    (0, [0, 1, 2, 3, 4, 5, 6]),  # top-1 hit
    (0, [1, 0, 2, 3, 4, 5, 6]),  # top-1 miss (says 1), top-5 hit
    (1, [1, 0, 2, 3, 4, 5, 6]),  # hit
    (2, [2, 0, 1, 3, 4, 5, 6]),  # hit
    (2, [0, 3, 4, 5, 6, 1, 2]),  # top-1 miss (says 0), top-5 miss (2 is ranked 7th)
    (3, [3, 0, 1, 2, 4, 5, 6]),  # hit
]
LOSSES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]


def _logits():
    logits = torch.zeros(len(SAMPLES), NUM_CLASSES)
    for i, (_, ranking) in enumerate(SAMPLES):
        for place, cls in enumerate(ranking):
            logits[i, cls] = float(NUM_CLASSES - place)
    return logits, torch.tensor([label for label, _ in SAMPLES])


def test_hand_computed_example():
    logits, labels = _logits()
    m = classification_metrics(logits, labels, losses=torch.tensor(LOSSES), num_classes=NUM_CLASSES,
                               class_names=[f"c{i}" for i in range(NUM_CLASSES)])
    assert m["top1"] == pytest.approx(4 / 6)
    assert m["top5"] == pytest.approx(5 / 6)
    # per class F1 (present classes 0-3): c0 P=1/2 R=1/2 -> 1/2; c1 P=1/2 R=1 -> 2/3;
    # c2 P=1 R=1/2 -> 2/3; c3 -> 1
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 2 / 3 + 1.0) / 4)
    assert m["loss"] == pytest.approx(0.35)
    assert m["per_class_accuracy"] == [0.5, 1.0, 0.5, 1.0, None, None, None]
    cm = m["confusion_matrix"]
    assert len(cm) == NUM_CLASSES and all(len(row) == NUM_CLASSES for row in cm)
    assert cm[0][:4] == [1, 1, 0, 0]
    assert cm[1][:4] == [0, 1, 0, 0]
    assert cm[2][:4] == [1, 0, 1, 0]
    assert cm[3][:4] == [0, 0, 0, 1]
    assert sum(map(sum, cm)) == len(SAMPLES)
    assert m["num_samples"] == len(SAMPLES)
    assert m["class_names"][3] == "c3"


def test_metric_classes_are_evaluate_metrics_and_batch_accumulate():
    for cls in (TopKAccuracy, ClassReport, MeanLoss):
        assert issubclass(cls, evaluate.Metric)
    logits, labels = _logits()
    ranked = rank_predictions(logits).tolist()
    metrics = build_metrics()
    # two add_batch calls must give the same answer as one
    metrics.add_batch(predictions=ranked[:4], references=labels[:4].tolist(), losses=LOSSES[:4])
    metrics.add_batch(predictions=ranked[4:], references=labels[4:].tolist(), losses=LOSSES[4:])
    result = metrics.compute(num_classes=NUM_CLASSES)
    assert result["top1"] == pytest.approx(4 / 6)
    assert result["loss"] == pytest.approx(0.35)


def test_fewer_than_five_classes_and_no_losses():
    logits = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    m = classification_metrics(logits, torch.tensor([1, 0, 1]))
    assert m["top1"] == pytest.approx(2 / 3)
    assert m["top5"] == 1.0
    assert m["loss"] is None
    assert m["per_class_accuracy"] == [1.0, 0.5]


def test_empty_input_gives_nan_not_crash():
    m = classification_metrics(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), num_classes=3)
    assert math.isnan(m["top1"]) and m["num_samples"] == 0
