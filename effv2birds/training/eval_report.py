"""The files of an evaluation: per-class report (scikit-learn), confusion matrix and top-losses figures,
one CSV row per photo. Figures are drawn on ``matplotlib.figure.Figure`` (no pyplot state, no display).

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> report = write_class_report(d, [0, 1, 1], [0, 1, 0], ["cat", "dog"])
>>> report["cat"]["recall"], sorted(p.name for p in d.iterdir())
(1.0, ['classification_report.json', 'classification_report.txt'])
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from effv2birds.training.records import atomic_write_text, write_json

__all__ = ["report_labels", "write_class_report", "plot_confusion_matrix", "plot_top_losses", "write_predictions_csv"]


def report_labels(y_true: Sequence[int], y_pred: Sequence[int]) -> list[int]:
    """The classes a report covers: those in the photos or in the predictions (as the macro-F1 of
    ``classification_metrics``), so evaluating on a few classes does not list all the others.

    >>> report_labels([3, 1], [1, 7])
    [1, 3, 7]
    """
    return sorted(set(map(int, y_true)) | set(map(int, y_pred)))


def write_class_report(out_dir: Path, y_true: Sequence[int], y_pred: Sequence[int],
                       class_names: Sequence[str]) -> dict[str, Any]:
    """Per-class precision/recall/F1/support as ``classification_report.json`` and ``.txt``; returns the dict.

    >>> import tempfile, pathlib
    >>> write_class_report(pathlib.Path(tempfile.mkdtemp()), [0, 2], [0, 0], ["a", "b", "c"])["c"]["support"]
    1.0
    """
    from sklearn.metrics import classification_report

    labels = report_labels(y_true, y_pred)
    names = [class_names[i] for i in labels]
    kwargs = dict(labels=labels, target_names=names, zero_division=0, digits=4)
    report = classification_report(y_true, y_pred, output_dict=True, **kwargs)
    write_json(out_dir / "classification_report.json", report)
    atomic_write_text(out_dir / "classification_report.txt", classification_report(y_true, y_pred, **kwargs))
    return report


def plot_confusion_matrix(path: Path, y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str],
                          title: str = "") -> None:
    """A confusion-matrix PNG (rows: true class, columns: predicted) over :func:`report_labels`.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "cm.png"
    >>> plot_confusion_matrix(path, [0, 1, 1], [0, 1, 0], ["cat", "dog"]); path.stat().st_size > 1000
    True
    """
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    labels = report_labels(y_true, y_pred)
    n = len(labels)
    side = min(4 + 0.45 * n, 24)
    fig = Figure(figsize=(side, side), layout="constrained")
    ax = fig.subplots()
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=labels, display_labels=[class_names[i] for i in labels], ax=ax, colorbar=False,
        xticks_rotation="vertical", include_values=n <= 40, cmap="Blues",
    )
    ax.set_title(title or f"confusion matrix ({len(y_true)} photos)")
    fig.savefig(path, dpi=100)


def _thumbnail(source: Any, size: int) -> np.ndarray:
    from effv2birds.data.decode import open_rgb

    try:
        img = open_rgb(source, draft_size=size)
    except Exception:  # noqa: BLE001 - a figure never fails for one photo: show a grey square
        return np.full((size, size, 3), 128, np.uint8)
    img.thumbnail((size, size))
    return np.asarray(img)


def plot_top_losses(path: Path, items: Sequence[dict[str, Any]], columns: int = 4, size: int = 160) -> None:
    """A gallery PNG of photos, each titled ``true / predicted / probability`` (fastai's
    ``plot_top_losses``); ``items``: ``{"image": path or image, "true", "predicted", "probability"}``.

    >>> import tempfile, pathlib, PIL.Image
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "top.png"
    >>> item = {"image": PIL.Image.new("RGB", (50, 40), "red"), "true": "cat", "predicted": "dog", "probability": 0.9}
    >>> plot_top_losses(path, [item] * 3); path.is_file()
    True
    """
    from matplotlib.figure import Figure

    rows = max(1, -(-len(items) // columns))
    fig = Figure(figsize=(columns * 2.6, rows * 2.9 + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, item in zip(axes, items):
        ax.imshow(_thumbnail(item["image"], size))
        ax.set_title(f"{item['true']}\n→ {item['predicted']} / {item['probability']:.2f}", fontsize=8)
    if not items:
        axes[0].text(0.5, 0.5, "no misclassified photos", ha="center", va="center")
    fig.suptitle("most confident mistakes: true → predicted / probability")
    fig.savefig(path, dpi=100)


def write_predictions_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """One CSV row per photo (the keys of the first row are the columns).

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "p.csv"
    >>> write_predictions_csv(path, [{"path": "a.jpg", "correct": True}]); path.read_text().splitlines()
    ['path,correct', 'a.jpg,True']
    """
    import io

    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
