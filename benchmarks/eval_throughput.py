"""Inference images/second at 384 px: the pretrained-preprocessing path vs the model alone.

(a) model only: random float batches already on the device, ``model.eval()`` under
    ``torch.inference_mode()``;
(b) decode + transform only (no model): a DataLoader with ``--workers`` processes that decodes the
    photos with PIL and applies the weights' eval transforms from ``effv2birds.get_transforms``
    (torchvision: resize 384 bilinear, center crop 384, ImageNet mean/std, bit-identical to
    ``EfficientNet_V2_S_Weights.DEFAULT.transforms()``), so you see which part is the bottleneck;
(c) pretrained-preprocessing path: the same loader, each batch moved to the device, then the model,
    as a user running a pretrained model over a folder of photos would do;
(d) ``Predictor.predict(paths, batch_size=B)``: effv2birds' own inference path (decodes in up to 4 threads of the main
    process, JPEG draft mode, resize without crop, the trainer's default preprocessing).

Each path is warmed up, then timed over several windows; the median window rate is reported, with
the peak memory (CUDA: ``torch.cuda.max_memory_allocated`` per row; CPU: peak RSS of the main
process so far, from ``resource.getrusage``). The model has random weights: the speed does not
depend on them, and pretrained weights need a download.

    python benchmarks/eval_throughput.py                  # ../shared/data/birds25-mini/test, auto device
    python benchmarks/eval_throughput.py ~/photos --device cuda --precision bf16 --channels-last --compile
    python benchmarks/eval_throughput.py --backend timm --batch-size 32 --windows 5 --json eval.json

Measured figures: docs/performance.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from effv2birds.training.records import machine_name
from torch.utils.data import DataLoader, Dataset

DEFAULT_FOLDER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "birds25-mini" / "test"
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# settings that differ by device: small on a CPU so a run takes a few minutes at most
DEVICE_DEFAULTS = {
    "cpu": dict(batch_size=8, batches=2, windows=3, warmup=1),
    "cuda": dict(batch_size=64, batches=10, windows=5, warmup=5),
}


class BenchError(Exception):
    """A problem with the arguments or the data; the message says what to change."""


@dataclass
class Row:
    path: str
    images_per_s: float
    window_rates: list[float]
    images_per_window: int
    peak_memory_mib: float
    note: str = ""
    vs_model_only: float | None = field(default=None)


# ---------------------------------------------------------------- machine and memory

# EfficientNetV2-S on each backend, by its model id
MODEL_ID = {"torchvision": "torchvision/efficientnet_v2_s", "timm": "timm/efficientnetv2_s"}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return machine_name()


def memory_kind(device: torch.device) -> str:
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated during the row"
    return ("peak RSS of the main process so far (resource.getrusage ru_maxrss; never goes down, so a row "
            "includes the rows above it; DataLoader workers are other processes and not counted)")


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- data


def find_images(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (recursively), sorted; a clear error when there is none."""
    from effv2birds.data.decode import IMAGE_EXTENSIONS

    if not folder.is_dir():
        raise BenchError(f"image folder {folder} does not exist; pass a folder of photos as the first argument "
                         f"(e.g. python benchmarks/eval_throughput.py ~/data/birds/test)")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise BenchError(f"no images found in {folder} (searched recursively for "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS))}); pass a folder that holds photos")
    return files


class ImageFiles(Dataset):
    """Decode a photo with PIL and apply the weights' eval transform, as a user's Dataset would."""

    def __init__(self, paths: list[Path], transform: Callable) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        import PIL.Image

        with PIL.Image.open(self.paths[i]) as img:
            return self.transform(img.convert("RGB"))


def cycled(paths: list[Path], n: int) -> list[Path]:
    """``n`` paths, repeating the folder as often as needed (so small folders still fill the windows)."""
    return [paths[i % len(paths)] for i in range(n)]


def make_loader(paths: list[Path], transform: Callable, batch_size: int, workers: int,
                device: torch.device) -> DataLoader:
    return DataLoader(ImageFiles(paths, transform), batch_size=batch_size, shuffle=False, drop_last=True,
                      num_workers=workers, pin_memory=device.type == "cuda")


# ---------------------------------------------------------------- timing


def time_windows(run_batches: Callable[[int], None], *, warmup: int, batches: int, windows: int,
                 device: torch.device) -> list[float]:
    """Run ``warmup`` batches, then ``windows`` windows of ``batches`` batches; seconds per window."""
    if warmup:
        run_batches(warmup)
    sync(device)
    seconds = []
    for _ in range(windows):
        start = time.perf_counter()
        run_batches(batches)
        sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def make_row(path: str, seconds: list[float], images_per_window: int, device: torch.device, note: str = "") -> Row:
    rates = [images_per_window / s for s in seconds]
    return Row(path, statistics.median(rates), rates, images_per_window, peak_memory_mib(device), note)


def autocast(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# ---------------------------------------------------------------- the measured paths


def model_only(model, args, device: torch.device) -> Row:
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step(n: int) -> None:
        with torch.inference_mode(), autocast(device, args.precision):
            for _ in range(n):
                model(x)

    reset_peak_memory(device)
    seconds = time_windows(step, warmup=args.warmup, batches=args.batches, windows=args.windows, device=device)
    return make_row("model only", seconds, args.batches * args.batch_size, device,
                    "random float batches already on the device")


def loader_path(model, paths: list[Path], transform: Callable, args, device: torch.device) -> Row:
    """Decode + transform in a DataLoader; with ``model``, also move each batch to the device and run it."""
    total = (args.warmup + args.batches * args.windows) * args.batch_size
    batches: Iterator[torch.Tensor] = iter(make_loader(cycled(paths, total), transform, args.batch_size,
                                                       args.workers, device))

    def step(n: int) -> None:
        with torch.inference_mode(), autocast(device, args.precision):
            for _ in range(n):
                x = next(batches)
                if model is not None:
                    x = x.to(device, non_blocking=True)
                    if args.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    model(x)

    reset_peak_memory(device)
    seconds = time_windows(step, warmup=args.warmup, batches=args.batches, windows=args.windows, device=device)
    del batches  # shuts the workers down
    name, note = ("pretrained path", "decode + transforms + to device + model") if model is not None else \
        ("decode+transform", "no model")
    return make_row(name, seconds, args.batches * args.batch_size, device,
                    f"{note}; {args.workers} DataLoader workers")


def predictor_path(model, paths: list[Path], transform, args, device: torch.device) -> Row:
    from effv2birds import TrainConfig
    from effv2birds.training.inference import Predictor

    preprocessing = {"image_size": args.image_size, "resize": TrainConfig().resize, "mean": list(transform.mean),
                     "std": list(transform.std), "normalize": True}
    predictor = Predictor(model, [f"class{i}" for i in range(1000)], preprocessing, device=device)
    per_call = args.batches * args.batch_size
    calls = [cycled(paths, per_call)] * args.windows
    todo = iter(([cycled(paths, args.batch_size * args.warmup)] if args.warmup else []) + calls)

    def step(_: int) -> None:
        with autocast(device, args.precision):  # Predictor has no precision setting; a caller can add this
            predictor.predict(next(todo), top_k=1, batch_size=args.batch_size)

    reset_peak_memory(device)
    seconds = time_windows(step, warmup=args.warmup, batches=args.batches, windows=args.windows, device=device)
    return make_row("Predictor.predict", seconds, per_call, device,
                    f"effv2birds.training.Predictor, resize={preprocessing['resize']!r}, main process only")


# ---------------------------------------------------------------- set-up and output


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BenchError(f"--device {name} is not a device; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda was asked for but torch sees no GPU; use --device cpu (or auto)")
    if device.type not in DEVICE_DEFAULTS:
        raise BenchError(f"--device {name} is not supported; use auto, cpu or cuda")
    return device


def build(args, device: torch.device):
    from effv2birds import build_model

    model = build_model(MODEL_ID[args.backend], num_classes=1000,
                        width_multiplier=args.width_multiplier, depth_multiplier=args.depth_multiplier)
    model = model.eval().to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.compile:
        model = torch.compile(model)
    return model


def header(args, device: torch.device, n_files: int, transform) -> list[str]:
    command = " ".join(shlex.quote(a) for a in ["python", "benchmarks/eval_throughput.py", *args.argv])
    return [
        f"command: {command}",
        f"device: {device} ({device_name(device)}); torch {torch.__version__}; torch threads "
        f"{torch.get_num_threads()}; python {platform.python_version()}",
        f"model: efficientnet_v2_s ({args.backend}), width x{args.width_multiplier}, depth x{args.depth_multiplier}, "
        f"random weights (pretrained weights cannot be downloaded here and do not change the speed)",
        f"settings: {args.image_size} px, batch {args.batch_size}, {args.precision}"
        f"{', channels_last' if args.channels_last else ''}{', torch.compile' if args.compile else ''}; "
        f"{args.warmup} warm-up batch(es), median of {args.windows} window(s) of {args.batches} batch(es); "
        f"{args.workers} DataLoader worker(s)",
        f"data: {n_files} images in {args.folder} (repeated as needed); transforms: {transform.source}, resize "
        f"{transform.resize_size} {transform.interpolation}, center crop {transform.crop_size}",
        f"memory: {memory_kind(device)}",
    ]


def table(rows: list[Row]) -> list[str]:
    lines = [f"{'path':<20} {'images/s':>10} {'min-max':>17} {'peak MiB':>9} {'vs model only':>14}  what"]
    for r in rows:
        spread = f"{min(r.window_rates):.1f}-{max(r.window_rates):.1f}"
        ratio = f"{r.vs_model_only:.2f}x" if r.vs_model_only is not None else "-"
        lines.append(f"{r.path:<20} {r.images_per_s:>10.1f} {spread:>17} {r.peak_memory_mib:>9.0f} {ratio:>14}  "
                     f"{r.note}")
    return lines


def summary(rows: dict[str, Row]) -> list[str]:
    model, full = rows["model only"], rows["pretrained path"]
    lines = [f"ratio pretrained path / model only: {full.images_per_s / model.images_per_s:.2f}"]
    decode = rows.get("decode+transform")
    if decode is not None:
        slower = "decode+transform" if decode.images_per_s < model.images_per_s else "the model"
        lines.append(f"bottleneck: {slower} (decode+transform {decode.images_per_s:.1f} images/s vs model "
                     f"{model.images_per_s:.1f} images/s)")
    return lines


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER,
                   help="a folder of images, searched recursively (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu or cuda[:N]")
    p.add_argument("--precision", default="fp32", choices=sorted(PRECISIONS), help="autocast dtype (fp32: none)")
    p.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"],
                   help="model and input batches in channels_last (auto: on, as effv2birds does on CPU and CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (compiled during warm-up)")
    p.add_argument("--backend", default="torchvision", choices=["torchvision", "timm"])
    p.add_argument("--image-size", type=int, default=384, help="model input size in px (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 8 on CPU, 64 on CUDA")
    p.add_argument("--batches", type=int, default=None, help="batches per timed window (default: 2 CPU, 10 CUDA)")
    p.add_argument("--windows", type=int, default=None, help="timed windows; the median is reported "
                                                             "(default: 3 CPU, 5 CUDA)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up batches per path (default: 1 CPU, 5 CUDA)")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count(), help="DataLoader workers for decode+transform (default: cores, %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in the main process (default: torch's)")
    p.add_argument("--no-predictor", action="store_true", help="skip the Predictor.predict row")
    p.add_argument("--width-multiplier", type=float, default=1.0, help="smaller model, for quick checks only")
    p.add_argument("--depth-multiplier", type=float, default=1.0, help="smaller model, for quick checks only")
    p.add_argument("--json", type=Path, default=None, help="also write the header and rows to this JSON file")
    args = p.parse_args(argv)
    args.argv = list(argv)
    args.channels_last = args.channels_last != "off"
    return args


def check_args(args, device: torch.device) -> None:
    for key, value in DEVICE_DEFAULTS[device.type].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("image_size", "batch_size", "batches", "windows"):
        if getattr(args, key) < 1:
            raise BenchError(f"--{key.replace('_', '-')} must be at least 1, got {getattr(args, key)}")
    if args.warmup < 0 or args.workers < 0:
        raise BenchError("--warmup and --workers must be 0 or more")
    if args.compile and args.warmup < 1:
        raise BenchError("--compile needs --warmup 1 or more (compiling would otherwise be timed)")
    if args.precision == "fp16" and device.type == "cpu":
        print("note: fp16 autocast on a CPU is usually slower than fp32; bf16 is the CPU choice", file=sys.stderr)


def run(args) -> list[Row]:
    from effv2birds import get_transforms

    device = resolve_device(args.device)
    check_args(args, device)
    paths = find_images(args.folder)
    if args.threads:
        torch.set_num_threads(args.threads)
    transform = get_transforms(MODEL_ID[args.backend], image_size=args.image_size)
    lines = header(args, device, len(paths), transform)
    print("\n".join(lines), flush=True)
    model = build(args, device)
    rows = [model_only(model, args, device)]
    rows.append(loader_path(None, paths, transform.eval, args, device))
    rows.append(loader_path(model, paths, transform.eval, args, device))
    if not args.no_predictor:
        rows.append(predictor_path(model, paths, transform, args, device))
    for r in rows:
        r.vs_model_only = r.images_per_s / rows[0].images_per_s
    by_name = {r.path: r for r in rows}
    out = table(rows) + summary(by_name)
    print("\n".join(out), flush=True)
    if args.json:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        settings.update(device=str(device), device_name=device_name(device), torch=torch.__version__,
                        torch_threads=torch.get_num_threads(), images_found=len(paths), memory=memory_kind(device))
        args.json.write_text(json.dumps({"header": lines, "settings": settings, "rows": [asdict(r) for r in rows]},
                                        indent=2) + "\n")
        print(f"rows written to {args.json}")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
