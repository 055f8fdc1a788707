"""Prediction files: one row per image, written as the predictions come (CSV or JSON Lines).

CSV columns: ``path, label_1, probability_1, ..., label_k, probability_k, error``; a JSON Lines row:
``{"path": ..., "top_k": [{"label": ..., "probability": ...}, ...], "error": null}``. An image that
could not be read has empty labels (``top_k: null``) and the reason in ``error``.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "preds.csv"
>>> with PredictionWriter(path, top_k=2) as out:
...     out.write("a.jpg", [("Hoopoe", 0.75), ("Indian-Roller", 0.25)])
...     out.write("b.jpg", None, "cannot read image b.jpg")
>>> print(path.read_text().strip())
path,label_1,probability_1,label_2,probability_2,error
a.jpg,Hoopoe,0.75,Indian-Roller,0.25,
b.jpg,,,,,cannot read image b.jpg
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Sequence

from effv2birds.errors import ConfigError

__all__ = ["PREDICTION_FORMATS", "PredictionWriter", "prediction_format"]

PREDICTION_FORMATS = {".csv": "csv", ".jsonl": "jsonl"}


def prediction_format(path: str | os.PathLike) -> str:
    """``"csv"`` or ``"jsonl"`` from the file name; another extension is a clear error.

    >>> prediction_format("out/preds.JSONL")
    'jsonl'
    """
    kind = PREDICTION_FORMATS.get(Path(path).suffix.lower())
    if kind is None:
        raise ConfigError(f"--output {path}: name the file .csv or .jsonl (one row per image in that format)")
    return kind


class PredictionWriter:
    """Write prediction rows to a ``.csv`` or ``.jsonl`` file, flushed row by row (a long run can be watched)."""

    def __init__(self, path: str | os.PathLike, top_k: int) -> None:
        self.path, self.top_k, self.kind = Path(path), int(top_k), prediction_format(path)
        self.rows = self.errors = 0

    def __enter__(self) -> "PredictionWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", newline="")
        if self.kind == "csv":
            self._csv = csv.writer(self._file)
            ranks = range(1, self.top_k + 1)
            self._csv.writerow(["path"] + [f"{x}_{i}" for i in ranks for x in ("label", "probability")] + ["error"])
        return self

    def write(self, path: Any, top_k: Sequence[tuple[str, float]] | None, error: str | None = None) -> None:
        """One image's row: its top-k ``(label, probability)``, or ``None`` and the error."""
        self.rows += 1
        self.errors += error is not None
        if self.kind == "jsonl":
            top = None if top_k is None else [{"label": l, "probability": p} for l, p in top_k]
            self._file.write(json.dumps({"path": str(path), "top_k": top, "error": error}) + "\n")
        else:
            cells = [v for l, p in (top_k or []) for v in (l, f"{p:.6g}")]
            self._csv.writerow([str(path)] + cells + [""] * (2 * self.top_k - len(cells)) + [error or ""])
        self._file.flush()

    def __exit__(self, *exc: Any) -> None:
        self._file.close()
