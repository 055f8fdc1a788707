"""What an export reads (the trained model of a run or hub folder, with its records) and what it returns.

>>> from effv2birds.export.source import ExportResult
>>> ExportResult("onnx", Path("m.onnx"), [Path("m.onnx")], {"onnxruntime": 2e-6}, 1e-4, (1, 3)).summary()[-1]
'onnxruntime vs PyTorch: max abs difference 2e-06 at batch sizes 1, 3 (tolerance 1e-04)'
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from effv2birds.preprocessing import Preprocessing
from effv2birds.run_files import CONFIG_JSON, SUMMARY

__all__ = ["ExportSource", "ExportResult", "load_source", "scalar_results"]

_SCALARS = ("top1", "top5", "macro_f1", "loss", "num_samples")


@dataclass
class ExportSource:
    """A trained model ready to export: eval mode, fp32, CPU, contiguous (NCHW) memory.

    ``preprocessing`` is the run's (its ``to_dict()`` goes into every export; a saved dict is read
    with ``Preprocessing.from_dict``); ``results`` holds the scalar metrics per split
    (``{"test": {"top1": ...}, "validation": ...}``), ``data`` the training data source as the run's
    config names it.
    """

    model: torch.nn.Module
    class_names: list[str]
    preprocessing: Preprocessing
    meta: dict[str, Any]
    path: Path
    which: str
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: str | None = None

    def __post_init__(self) -> None:
        self.preprocessing = Preprocessing.from_dict(self.preprocessing)

    @property
    def image_size(self) -> int:
        """The side of the model's square input (``preprocessing.input_size``)."""
        return self.preprocessing.input_size


@dataclass
class ExportResult:
    """What ``export_run`` made: the main file or folder, every file written, and each check's max abs
    difference to the PyTorch model (``checks``), over ``batch_sizes``; ``url`` once pushed to the Hub."""

    format: str
    output: Path
    files: list[Path]
    checks: dict[str, float]
    tolerance: float
    batch_sizes: tuple[int, ...]
    url: str | None = None

    def summary(self) -> list[str]:
        """Lines for the command line: what was written, then one line per check."""
        lines = [f"wrote {self.output} ({', '.join(p.name for p in self.files)})"]
        sizes = ", ".join(map(str, self.batch_sizes))
        lines += [f"{name} vs PyTorch: max abs difference {diff:.3g} at batch sizes {sizes} "
                  f"(tolerance {self.tolerance:.0e})" for name, diff in self.checks.items()]
        if self.url:
            lines.append(f"pushed to {self.url}")
        return lines


def scalar_results(metrics: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``{"validation": {...}, "test": {...}}`` with only the scalar figures of a metrics.json (``val``/``test``).

    >>> scalar_results({"val": {"top1": 0.5, "confusion_matrix": [[1]]}, "test": None})
    {'validation': {'top1': 0.5}}
    """
    out = {}
    for key, split in (("val", "validation"), ("test", "test")):
        values = (metrics or {}).get(key) or {}
        picked = {k: values[k] for k in _SCALARS if isinstance(values.get(k), (int, float))}
        if picked:
            out[split] = picked
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def load_source(run_dir: str | Path, which: str = "best") -> ExportSource:
    """The model of a finished run (``run_dir/model/{which}.safetensors``) or of a hub folder written by
    ``effv2birds export --format hub``, with label names, preprocessing and test/validation figures.

    >>> load_source("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: no trained weights at /nonexistent/model/best.safetensors; ...
    """
    from effv2birds.training import load_trained

    run_dir = Path(run_dir).expanduser()
    predictor = load_trained(run_dir, which=which, device="cpu")
    # the Predictor runs channels_last on CPU; exported graphs take plain NCHW tensors
    model = predictor.model.to(memory_format=torch.contiguous_format).float().eval()
    meta = dict(predictor.meta)
    if "results" in meta:  # a hub folder carries its figures in config.json
        results, data = meta["results"], meta.get("data")
    else:
        results = scalar_results(_read_json(run_dir / SUMMARY))
        data = (_read_json(run_dir / CONFIG_JSON) or {}).get("data")
    return ExportSource(model=model, class_names=list(predictor.class_names),
                        preprocessing=predictor.preprocessing, meta=meta, path=run_dir, which=which,
                        results=results, data=data)
