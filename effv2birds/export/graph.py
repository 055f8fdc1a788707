"""ONNX and TorchScript files of a trained model, each checked against PyTorch right after export.

Both take the tensor the PyTorch model takes: float32 NCHW, resized, scaled to [0, 1] and (when the
run normalised) normalised with the run's mean and std; the batch size is free. The preprocessing
and label names are written beside the file as JSON (``model.onnx`` -> ``model.onnx.json``). A file whose
outputs differ from PyTorch's by more than ``tolerance`` (max abs difference of the logits over
random inputs at batch sizes 1 and 3) is not kept: ``ExportError`` says by how much.

>>> from effv2birds.export.graph import parity_inputs
>>> [tuple(x.shape) for x in parity_inputs(32)]
[(1, 3, 32, 32), (3, 3, 32, 32)]
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import ExportError, require_packages
from .source import ExportResult, ExportSource

__all__ = ["PARITY_BATCH_SIZES", "TOLERANCE", "INPUT_NAME", "OUTPUT_NAME", "export_onnx", "export_torchscript",
           "max_abs_difference", "parity_inputs", "preprocessing_record", "sidecar_path"]

TOLERANCE = 1e-4  # fp32 logits; measured differences are ~1e-6
PARITY_BATCH_SIZES = (1, 3)  # neither is the traced example's 2, so a batch size frozen into the graph shows
INPUT_NAME, OUTPUT_NAME = "pixel_values", "logits"


def parity_inputs(image_size: int, batch_sizes: tuple[int, ...] = PARITY_BATCH_SIZES) -> list[torch.Tensor]:
    """Random normalised-image-like inputs, the same on every call (own generator: global RNG untouched)."""
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(b, 3, image_size, image_size, generator=gen) for b in batch_sizes]


@torch.no_grad()
def max_abs_difference(run: Callable[[torch.Tensor], torch.Tensor], model: torch.nn.Module,
                       inputs: list[torch.Tensor]) -> float:
    """Largest ``|run(x) - model(x)|`` over ``inputs`` (NaN/inf count as infinitely different).

    >>> m = torch.nn.Linear(3, 2)
    >>> max_abs_difference(m, m, [torch.ones(1, 3)])
    0.0
    """
    worst = 0.0
    for x in inputs:
        got, want = run(x).float(), model(x).float()
        if got.shape != want.shape:
            raise ExportError(f"the export returns shape {tuple(got.shape)} for input {tuple(x.shape)}, "
                              f"PyTorch {tuple(want.shape)}: the batch size was frozen into the graph")
        diff = (got - want).abs().max().item()
        worst = max(worst, diff if math.isfinite(diff) else math.inf)
    return worst


def preprocessing_record(source: ExportSource, fmt: str, checks: dict[str, float], tolerance: float) -> dict[str, Any]:
    """The JSON written beside an exported file: input/output, preprocessing, label names, the check."""
    import effv2birds

    size = source.image_size
    return {
        "format": fmt, "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
        "input_shape": ["batch", 3, size, size], "input_dtype": "float32", "layout": "NCHW",
        **source.preprocessing.to_dict(),  # image_size, resize, mean, std, normalize, mean_std_source
        "interpolation": source.preprocessing.INTERPOLATION,
        "steps": "decode to RGB; resize to image_size x image_size ('resize': the whole photo squashed, "
                 "'resize_crop': short side to image_size, centre square), bilinear with antialiasing; "
                 "x / 255; then (x - mean) / std when normalize is true. Outputs are logits: apply softmax",
        "class_names": source.class_names,
        "check": {"against": "PyTorch, eager, fp32, CPU", "max_abs_difference": checks, "tolerance": tolerance,
                  "batch_sizes": list(PARITY_BATCH_SIZES)},
        "source": {"path": str(source.path), "weights": source.which, "epoch": source.meta.get("epoch"),
                   "model_kwargs": source.meta.get("model_kwargs")},
        "effv2birds_version": effv2birds.__version__,
    }


def sidecar_path(output: str | Path) -> Path:
    """Where the preprocessing JSON of an exported file goes: beside it, its name + ``.json``.

    >>> sidecar_path("out/model.onnx").name
    'model.onnx.json'
    """
    output = Path(output)
    return output.with_name(output.name + ".json")


def _temporary(output: Path) -> Path:
    from effv2birds.atomic import temporary_path

    return temporary_path(output)


def _finish(tmp: Path, output: Path, source: ExportSource, fmt: str, name: str, diff: float,
            tolerance: float) -> ExportResult:
    """Keep the file only when it computes what PyTorch computes; write the JSON beside it."""
    from effv2birds.training.records import write_json

    if not diff <= tolerance:
        tmp.unlink(missing_ok=True)
        raise ExportError(
            f"the {fmt} export of {source.path} differs from PyTorch: max abs difference of the logits {diff:.3g} > "
            f"tolerance {tolerance:g} ({name}, batch sizes {', '.join(map(str, PARITY_BATCH_SIZES))}); nothing was "
            "written. Report it with the versions of torch and the runtime; a looser tolerance= hides a real error"
        )
    os.replace(tmp, output)
    side = sidecar_path(output)
    write_json(side, preprocessing_record(source, fmt, {name: diff}, tolerance))
    return ExportResult(fmt, output, [output, side], {name: diff}, tolerance, PARITY_BATCH_SIZES)


def export_onnx(source: ExportSource, output: str | Path, *, tolerance: float = TOLERANCE,
                opset: int | None = None) -> ExportResult:
    """Export with ``torch.onnx.export`` (the torch.export-based exporter, dynamic batch axis), validate
    with ``onnx.checker`` and compare ONNX Runtime (CPU) with PyTorch.

    >>> export_onnx(load_source("runs/demo"), "runs/demo.onnx").checks  # doctest: +SKIP
    {'onnxruntime': 1.9e-06}
    """
    require_packages("the ONNX export", ["onnx", "onnxscript", "onnxruntime"])
    import onnx
    import onnxruntime as ort

    output = Path(output)
    tmp = _temporary(output)
    example = torch.randn(2, 3, source.image_size, source.image_size, generator=torch.Generator().manual_seed(1))
    batch = torch.export.Dim("batch", min=1)
    try:
        with torch.no_grad():
            program = torch.onnx.export(source.model, (example,), dynamo=True, input_names=[INPUT_NAME],
                                        output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},),
                                        opset_version=opset, verbose=False)
        program.save(str(tmp), external_data=False)
        onnx.checker.check_model(str(tmp))
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # as many threads as torch: shared machines
        session = ort.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"])
        diff = max_abs_difference(
            lambda x: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]),
            source.model, parity_inputs(source.image_size))
    except ExportError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as exc:  # noqa: BLE001 - torch.export, onnxscript and onnxruntime each raise their own type
        tmp.unlink(missing_ok=True)
        raise ExportError(f"the ONNX export of {source.path} failed ({type(exc).__name__}: {str(exc)[:300]}); "
                          "try --format torchscript, or another opset") from exc
    return _finish(tmp, output, source, "onnx", "onnxruntime", diff, tolerance)


def export_torchscript(source: ExportSource, output: str | Path, *, tolerance: float = TOLERANCE) -> ExportResult:
    """Trace with ``torch.jit.trace`` (the preprocessing JSON also goes into the file as the extra file
    ``effv2birds.json``), load it back with ``torch.jit.load`` and compare with eager PyTorch.

    >>> export_torchscript(load_source("runs/demo"), "runs/demo.pt").checks  # doctest: +SKIP
    {'torch.jit.load': 0.0}
    """
    output = Path(output)
    tmp = _temporary(output)
    example = torch.randn(2, 3, source.image_size, source.image_size, generator=torch.Generator().manual_seed(1))
    extra = {"effv2birds.json": json.dumps(preprocessing_record(source, "torchscript", {}, tolerance))}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # torch marks TorchScript deprecated (ONNX is the portable format); it still works and is asked for
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated")
            traced = torch.jit.trace(source.model, example)
            torch.jit.save(traced, str(tmp), _extra_files=extra)
            loaded = torch.jit.load(str(tmp), map_location="cpu")
            diff = max_abs_difference(loaded, source.model, parity_inputs(source.image_size))
    except ExportError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as exc:  # noqa: BLE001 - the tracer raises many types
        tmp.unlink(missing_ok=True)
        raise ExportError(f"the TorchScript export of {source.path} failed ({type(exc).__name__}: "
                          f"{str(exc)[:300]}); try --format onnx") from exc
    return _finish(tmp, output, source, "torchscript", "torch.jit.load", diff, tolerance)
