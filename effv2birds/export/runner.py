"""``export_run``: one trained run (or hub folder) to ONNX, TorchScript or a Hub folder, optionally pushed.

>>> export_run("runs/demo", "onnx", "runs/demo.onnx")            # doctest: +SKIP
>>> export_run("/nonexistent", "tflite", "x")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
effv2birds.export.errors.ExportError: format='tflite' is not an export format; choose one of onnx, torchscript, hub
"""

from __future__ import annotations

from pathlib import Path

from .errors import ExportError, require_packages
from .source import ExportResult

__all__ = ["FORMATS", "export_run"]

FORMATS = ("onnx", "torchscript", "hub")
_SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}


def _check_output(output: Path, fmt: str, overwrite: bool) -> None:
    """The output must be of the right kind, and is never replaced without ``overwrite``."""
    if fmt == "hub":
        if output.exists() and not output.is_dir():
            raise ExportError(f"output {output} is a file; --format hub writes a folder: pass a folder path")
        if output.is_dir() and any(output.iterdir()) and not overwrite:
            raise ExportError(f"output {output} is a folder that is not empty; pass overwrite=True (--overwrite) "
                              "to replace it, or another folder. Nothing was written.")
        return
    if output.is_dir():
        raise ExportError(f"output {output} is a folder; --format {fmt} writes one file: pass e.g. "
                          f"{output / ('model' + _SUFFIXES[fmt])}")
    if output.exists() and not overwrite:
        raise ExportError(f"output {output} exists; pass overwrite=True (--overwrite) to replace it, or another path. "
                          "Nothing was written.")


def export_run(run_dir: str | Path, format: str, output: str | Path, *, which: str = "best",
               overwrite: bool = False, push_to_hub: str | None = None, private: bool | None = None,
               tolerance: float = 1e-4) -> ExportResult:
    """Export the ``which`` ("best" or "last") weights of ``run_dir`` as ``format`` to ``output``.

    ``onnx`` and ``torchscript`` write one file (plus ``<file>.json`` with the preprocessing and label
    names) and fail unless it matches PyTorch within ``tolerance`` (max abs difference of the logits);
    ``hub`` writes a folder (``model.safetensors``, timm-style ``config.json``, ``README.md``) and,
    with ``push_to_hub="user/name"``, uploads it. Everything that can fail without loading the model
    (format, output path, packages, Hub reachability) is checked first.
    """
    if format not in FORMATS:
        raise ExportError(f"format={format!r} is not an export format; choose one of {', '.join(FORMATS)}")
    if push_to_hub and format != "hub":
        raise ExportError(f"push_to_hub (--push-to-hub) uploads a hub folder; use format='hub', not {format!r}")
    output = Path(output).expanduser()
    _check_output(output, format, overwrite)
    if format == "onnx":
        require_packages("the ONNX export", ["onnx", "onnxscript", "onnxruntime"])
    from . import graph, hub

    if push_to_hub:
        hub.check_hub_reachable()  # offline: fail now, in seconds, before any work
    from .source import load_source

    source = load_source(run_dir, which)
    output.parent.mkdir(parents=True, exist_ok=True)
    if format == "onnx":
        result = graph.export_onnx(source, output, tolerance=tolerance)
    elif format == "torchscript":
        result = graph.export_torchscript(source, output, tolerance=tolerance)
    else:
        result = hub.write_hub_folder(source, output, tolerance=tolerance, repo_id=push_to_hub)
    if push_to_hub:
        result.url = hub.push_to_hub(output, push_to_hub, private=private)
    return result
