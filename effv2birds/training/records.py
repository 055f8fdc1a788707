"""What a run leaves behind: environment, metrics log, weights with metadata, model card, data report.

Only the main process writes (callers check ``accelerator.is_main_process``); every writer goes
through a temporary file and ``os.replace`` so a crash never leaves a half-written record.

>>> import tempfile, json
>>> from pathlib import Path
>>> from effv2birds.training.records import MetricsLog
>>> d = Path(tempfile.mkdtemp())
>>> log = MetricsLog(d / "metrics.jsonl")
>>> log.write({"kind": "step", "step": 1, "loss": 2.5})
>>> log.truncate_after(0)
>>> (d / "metrics.jsonl").read_text()
''
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from effv2birds.atomic import atomic_path, atomic_write_text  # atomic_write_text: also exported from here

__all__ = [
    "cpu_name",
    "machine_name",
    "MetricsLog",
    "atomic_write_text",
    "environment_info",
    "source_version",
    "read_weights",
    "save_weights",
    "write_json",
    "write_model_card",
]

_PACKAGES = ("effv2birds", "torch", "torchvision", "timm", "accelerate", "datasets", "evaluate",
             "safetensors", "numpy", "pillow", "tensorboard")


def _json_safe(value: Any) -> Any:
    """NaN/inf become None (strict JSON), tensors/numpy scalars become numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, data: Any) -> None:
    """Pretty, strict JSON (NaN → null), written atomically.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.json"
    >>> write_json(p, {"a": float("nan")}); p.read_text()
    '{\\n  "a": null\\n}\\n'
    """
    atomic_write_text(path, json.dumps(_json_safe(data), indent=2) + "\n")


class MetricsLog:
    """Append-only ``metrics.jsonl``: one JSON object per line, flushed at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(_json_safe(record)) + "\n")
            f.flush()

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after optimizer step ``step`` (a resumed run logs them again)."""
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def cpu_name() -> str:
    """The CPU model as the OS names it (``/proc/cpuinfo`` on Linux), for records and benchmarks.

    >>> isinstance(cpu_name(), str) and len(cpu_name()) > 0
    True
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_name() -> str:
    """``"<CPU model>, <N> cores"``, plus the GPUs torch sees: how benchmarks name the machine.

    >>> "cores" in machine_name()
    True
    """
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return f"{cpu_name()}, {os.cpu_count()} cores" + (f"; GPU: {', '.join(gpus)}" if gpus else "")


def source_version() -> dict[str, Any]:
    """The effv2birds version, and the git commit (with a ``dirty`` flag) when it runs from a checkout.

    >>> sorted(source_version())[:2]
    ['effv2birds', 'git_commit']
    """
    import subprocess

    import effv2birds

    root = Path(effv2birds.__file__).resolve().parents[1]
    info: dict[str, Any] = {"effv2birds": effv2birds.__version__, "git_commit": None, "git_dirty": None}
    if (root / ".git").exists():
        try:
            run = lambda *a: subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True,  # noqa: E731
                                            timeout=10, check=True).stdout.strip()
            info["git_commit"] = run("rev-parse", "HEAD")
            info["git_dirty"] = bool(run("status", "--porcelain", "--untracked-files=no"))
        except (OSError, subprocess.SubprocessError):  # no git binary, not a repository
            pass
    return info


def environment_info(accelerator: Any) -> dict[str, Any]:
    """Package versions (effv2birds with its git commit), devices, precision and process layout.

    >>> from accelerate import Accelerator
    >>> info = environment_info(Accelerator(cpu=True))
    >>> info["world_size"], "torch" in info["packages"], info["effv2birds"]["effv2birds"]
    (1, True, '0.1.0')
    """
    import torch

    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pass
    devices = []
    if torch.cuda.is_available():
        devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "effv2birds": source_version(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": platform.node(),
        "packages": packages,
        "device": str(accelerator.device),
        "cuda_devices": devices,
        "cuda_version": torch.version.cuda,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "mixed_precision": accelerator.mixed_precision,
        "distributed_type": str(accelerator.distributed_type),
        "world_size": accelerator.num_processes,
        # torchrun and accelerate launch set LOCAL_WORLD_SIZE (processes on this machine)
        "num_machines": max(1, accelerator.num_processes
                            // int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes) or 1)),
        "command": sys.argv,
    }


def save_weights(state_dict: dict[str, Any], path: str | Path, meta: dict[str, Any]) -> None:
    """Save weights as safetensors with ``meta`` (label names, model kwargs, preprocessing) in the
    file header, and the same metadata beside it as ``<name>.json``. Both written atomically.

    >>> import tempfile, pathlib, torch
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.safetensors"
    >>> save_weights({"w": torch.ones(2)}, p, {"class_names": ["a", "b"]})
    >>> read_weights(p)[1]["class_names"]
    ['a', 'b']
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # channels_last or shared tensors cannot be stored as they are: safetensors wants contiguous
    # tensors that own their storage.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"effv2birds": json.dumps(_json_safe(meta))})
    write_json(path.with_suffix(".json"), meta)


def read_weights(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state_dict, meta)`` from a file written by ``save_weights``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:  # one open for the header and the tensors
        header = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    meta = json.loads(header["effv2birds"]) if "effv2birds" in header else {}
    return state, meta


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "n/a" if value is None else str(value)


def _card_preprocessing(meta: dict[str, Any]) -> str:
    """The model card's preprocessing section, from the saved metadata ("" when it has none)."""
    from effv2birds.preprocessing import Preprocessing

    if "preprocessing" not in meta:
        return ""
    pre = Preprocessing.from_meta(meta)
    source = f" (mean and std of `{pre.mean_std_source}`)" if pre.normalize and pre.mean_std_source else ""
    return (f"\n## Preprocessing\n{pre.describe()}{source}. Evaluation and `predict` prepare every photo so; "
            "training decoded its photos the same way at its training size, then augmented them.\n")


def write_model_card(run_dir: str | Path, *, config: Any, result: dict[str, Any], meta: dict[str, Any],
                     data_summary: dict[str, Any]) -> None:
    """``README.md`` in the Hugging Face model-card format (YAML front matter + sections)."""
    run_dir = Path(run_dir)
    test = result.get("test") or {}
    val = result.get("val") or {}
    names = meta.get("class_names", [])
    front = [
        "---",
        "library_name: effv2birds",
        "pipeline_tag: image-classification",
        "tags: [image-classification, efficientnet_v2, " + str(config.backend) + "]",
        "license: apache-2.0",
        "metrics: [accuracy, f1]",
        "model-index:",
        f"- name: {run_dir.name}",
        "  results:",
        "  - task: {type: image-classification, name: Image Classification}",
        f"    dataset: {{name: {json.dumps(str(config.data))}, type: imagefolder}}",
        "    metrics:",
    ]
    for split, values in (("validation", val), ("test", test)):
        for key, name in (("top1", "accuracy"), ("macro_f1", "f1")):
            if isinstance(values.get(key), float):
                front.append(f"    - {{type: {name}, value: {values[key]:.4f}, name: {split} {key}}}")
    front.append("---")
    preprocessing = _card_preprocessing(meta)
    rows = "\n".join(
        f"| {split} | {_fmt(v.get('top1'))} | {_fmt(v.get('top5'))} | {_fmt(v.get('macro_f1'))} | "
        f"{_fmt(v.get('loss'))} | {v.get('num_samples', 'n/a')} |"
        for split, v in (("validation (best epoch)", val), ("test", test)) if v
    )
    body = f"""
# {run_dir.name}: {config.model} ({config.backend}) image classifier

Trained with effv2birds on `{config.data}`:
{len(names)} classes, {config.image_size} px training images ({config.eval_size} px for evaluation).

## Intended use
Classifying photos into the {len(names)} classes below (e.g. bird species). It was trained on a small,
specific data set: expect errors on other kinds of photos, other regions, unusual viewpoints and
classes it was never shown (it always answers with one of its classes). Not for any safety-relevant use.

## Training data
- source: `{config.data}`
- images per split: {json.dumps(data_summary.get("cached_splits", data_summary.get("splits", {})))}
- files skipped because they could not be read: {len(data_summary.get("skipped", []))} (see `data_report.json`)
- classes: {", ".join(names)}

## Training procedure
optimizer `{config.optimizer}`, lr {config.lr} ({config.lr_scaling} scaling), schedule `{config.schedule}`,
batch size {config.batch_size} per process x {result.get("world_size", 1)} process(es) x
{config.grad_accum_steps} accumulation steps, weight decay {config.weight_decay},
label smoothing {config.label_smoothing}, mixed precision `{result.get("mixed_precision", config.mixed_precision)}`,
epochs run {result.get("epochs_run")} (best epoch {result.get("best_epoch")}),
pretrained: {config.pretrained or bool(config.weights)}. The full configuration is in `config.toml`.
{preprocessing}
## Results
| split | top-1 | top-5 | macro-F1 | loss | images |
|---|---|---|---|---|---|
{rows}

Parameters: {result.get("params")}, GFLOPs (multiply-adds at {config.eval_size} px): {_fmt(result.get("gflops"), 3)},
training throughput: {_fmt(result.get("images_per_s"), 1)} images/s on {result.get("device")}.

## How to use
```python
from effv2birds.training import load_trained
predictor = load_trained("{run_dir.name}")          # the path of this folder
print(predictor.predict(["photo.jpg"], top_k=3))
```
or `effv2birds predict {run_dir.name} photo.jpg`. The weights are `model/best.safetensors` (metadata with the
label names and preprocessing in its header and in `model/best.json`).
"""
    atomic_write_text(run_dir / "README.md", "\n".join(front) + "\n" + body)
