"""Training images/second of EfficientNetV2-S: a bare PyTorch loop vs the effv2birds trainer.

(a) reference: plain PyTorch on random tensors already on the device: forward, label-smoothed
    cross-entropy, backward, AdamW step (fused, as the trainer uses), no data loading; what
    timm's ``benchmark.py --bench train`` measures;
(b) trainer: ``effv2birds.train`` on the real cached data path (a photo folder, default
    ../shared/data/birds25-mini, or ``synthetic``): pre-resized uint8 cache, batch-wise pad crop +
    flip on the training device, the same model, batch size, precision, channels_last and compile.

Each (path, size) runs in a fresh subprocess. Rates are the median of timed windows after warm-up:
(a) times ``--steps`` optimizer steps per window (ending with a device sync); (b) reads the trainer's
own log records (``metrics.jsonl``: a device read ends every ``--log-every-steps`` window) and
skips the first (warm-up) windows; evaluation runs only after the last window. Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA and the subprocess's peak RSS on CPU. On CUDA the JSON
rows also count the operations that made the host wait for the GPU during the whole run
(``torch.cuda.set_sync_debug_mode("warn")``; start-up and the final evaluation included).

    python benchmarks/train_throughput.py                                   # small CPU defaults
    python benchmarks/train_throughput.py --sizes 128 --batch-size 256 --compile      # one GPU
    python benchmarks/train_throughput.py --backend timm --precision fp32 --channels-last off

Measured figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from effv2birds.training.records import MetricsLog, machine_name

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "birds25-mini"
GPU_BATCH = {32: 256, 128: 256, 300: 64, 384: 48}  # per size, on a GPU (CPU: --batch-size, default 8)


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return machine_name()


def peak_memory_mib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

# EfficientNetV2-S on each backend, by its model id
MODEL_ID = {"torchvision": "torchvision/efficientnet_v2_s", "timm": "timm/efficientnetv2_s"}


# --- (a) the reference loop ------------------------------------------------------------------------
def reference(job: dict) -> list[float]:
    """Images/s of each timed window of a bare training loop on random on-device tensors."""
    device, size, batch = job["device"], job["size"], job["batch_size"]
    if job["backend"] == "timm":
        import timm

        model = timm.create_model("efficientnetv2_s", num_classes=25)
    else:
        import torchvision

        model = torchvision.models.efficientnet_v2_s(num_classes=25)
    model = model.to(device).train()
    if job["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    step_model = torch.compile(model) if job["compile"] else model
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    images = torch.randn(batch, 3, size, size, device=device)
    if job["channels_last"]:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 25, (batch,), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(job["precision"])
    scaler = torch.amp.GradScaler(device, enabled=job["precision"] == "fp16")

    def step() -> None:
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = criterion(step_model(images).float(), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    rates = []
    for window in range(job["warmup"] + job["windows"]):
        sync()
        start = time.perf_counter()
        for _ in range(job["steps"]):
            step()
        sync()
        if window >= job["warmup"]:
            rates.append(job["steps"] * batch / (time.perf_counter() - start))
    return rates


# --- (b) the trainer --------------------------------------------------------------------------------
def trainer(job: dict) -> list[float]:
    """Images/s of each log window of a real ``train()`` run (warm-up windows dropped)."""
    from effv2birds import TrainConfig
    from effv2birds.training import train

    windows = job["warmup"] + job["windows"]
    with tempfile.TemporaryDirectory(prefix="effv2birds-bench-") as tmp:
        config = TrainConfig(
            data=job["data"], image_size=job["size"], batch_size=job["batch_size"], model=MODEL_ID[job["backend"]],
            max_samples=job["max_samples"], synthetic_size=max(100, job["batch_size"] * 8, job["max_samples"] or 0),
            mixed_precision=job["precision"] if job["precision"] != "fp32" else "no",
            channels_last=job["channels_last"], compile=job["compile"], cpu=job["device"] == "cpu",
            epochs=10**6, max_steps=windows * job["steps"], log_every_steps=job["steps"],
            eval_every_epochs=10**6, checkpoint_every_epochs=None, progress_bar=False, log_with="none",
            warmup_epochs=0, cache_dir=job["cache_dir"], output_dir=f"{tmp}/run",
        )
        train(config)
        records = MetricsLog(f"{tmp}/run/metrics.jsonl").read()
    steps = [r for r in records if r["kind"] == "step"]
    # rates between consecutive log points (elapsed_s is read after the device sync of each log)
    rates, last = [], (0, 0.0)
    for r in steps:
        rates.append((r["step"] - last[0]) * job["batch_size"] / (r["elapsed_s"] - last[1]))
        last = (r["step"], r["elapsed_s"])
    return rates[job["warmup"]:]


def run_job(job: dict) -> dict:
    """One (path, size) measurement in this process; returns its result row."""
    import warnings

    torch.set_num_threads(job["threads"])
    measure = reference if job["path"] == "reference" else trainer
    syncs = None
    if job["device"] == "cuda":
        torch.cuda.reset_peak_memory_stats()
        # CUDA's sync debug mode warns at every operation that makes the host wait for the GPU
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rates = measure(job)
        torch.cuda.set_sync_debug_mode("default")
        syncs = sum("synchroniz" in str(w.message) for w in caught)
    else:
        rates = measure(job)
    return {**{k: job[k] for k in ("path", "size", "batch_size", "precision", "channels_last", "compile",
                                   "backend")},
            "images_per_s": statistics.median(rates), "windows": [round(r, 2) for r in rates],
            "peak_mib": peak_memory_mib(job["device"]), "host_syncs": syncs}


def spawn(job: dict) -> dict:
    """Run one job in a fresh interpreter: clean peak memory, no compile cache or threads carried over."""
    cmd = [sys.executable, __file__, "--job", json.dumps(job)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"the {job['path']} run at {job['size']} px failed:\n{tail}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="photo folder or 'synthetic' (default: %(default)s)")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 128, 300, 384])
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"per step (default: 8 on CPU; on a GPU per size {GPU_BATCH})")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16"],
                   help="default: bf16 on a GPU that has it (the trainer's auto), else fp32")
    p.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"],
                   help="auto: on, as the trainer does on CUDA and CPU")
    p.add_argument("--compile", action="store_true", help="torch.compile the model in both paths")
    p.add_argument("--backend", default="torchvision", choices=["torchvision", "timm"])
    p.add_argument("--paths", nargs="+", default=["reference", "trainer"], choices=["reference", "trainer"])
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per window (CPU 10, GPU 20)")
    p.add_argument("--windows", type=int, default=3, help="timed windows; the median is reported")
    p.add_argument("--warmup", type=int, default=None, help="untimed windows first (2; compile: +1)")
    p.add_argument("--max-samples", type=int, default=None,
                   help="cap the trainer's splits (default on CPU: 64, so its final evaluation is short)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    p.add_argument("--cache-dir", default=None, help="pre-resized cache folder (default: the datasets cache)")
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--job", help=argparse.SUPPRESS)  # internal: one measurement in a subprocess
    args = p.parse_args(argv)

    if args.job:
        print("RESULT " + json.dumps(run_job(json.loads(args.job))), flush=True)
        return 0
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no GPU; use --device cpu", file=sys.stderr)
        return 2
    if args.data != "synthetic" and not Path(args.data).expanduser().is_dir():
        print(f"error: data folder {args.data} not found; pass --data FOLDER or --data synthetic", file=sys.stderr)
        return 2
    gpu = device == "cuda"
    precision = args.precision or ("bf16" if gpu and torch.cuda.is_bf16_supported(including_emulation=False)
                                   else "fp32")
    channels_last = {"on": True, "off": False}.get(args.channels_last, True)  # auto: the trainer's default
    # CPU windows of 2 steps read 10.9 img/s where 10 steps read 17.5 (128 px, fp32, docs/performance.md)
    steps = args.steps or (20 if gpu else 10)
    warmup = args.warmup if args.warmup is not None else 2 + int(args.compile)
    max_samples = args.max_samples if args.max_samples is not None else (None if gpu else 64)

    print(f"command: {' '.join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])}")
    print(f"device: {device_name(device)}; torch {torch.__version__}; {args.threads} torch thread(s); "
          f"python {platform.python_version()}")
    print(f"model: efficientnet_v2_s ({args.backend}), 25 classes; {precision}, channels_last={channels_last}, "
          f"compile={args.compile}; median of {args.windows} windows of {steps} steps after {warmup} warm-up")
    print(f"trainer data: {args.data} (max_samples={max_samples}); peak memory: "
          f"{'torch.cuda.max_memory_allocated' if gpu else 'peak RSS of the subprocess (data cache included)'}")
    header = f"{'size':>5} {'batch':>5} {'reference img/s':>16} {'trainer img/s':>14} {'ratio b/a':>9} " \
             f"{'ref peak MiB':>12} {'trainer peak MiB':>16}"
    print(header, flush=True)
    rows = []
    for size in args.sizes:
        batch = args.batch_size or (GPU_BATCH.get(size, 64) if gpu else 8)
        result = {}
        for path in args.paths:
            job = dict(path=path, device=device, size=size, batch_size=batch, precision=precision,
                       channels_last=channels_last, compile=args.compile, backend=args.backend, steps=steps,
                       windows=args.windows, warmup=warmup, threads=args.threads, data=args.data,
                       max_samples=max_samples, cache_dir=args.cache_dir)
            try:
                result[path] = spawn(job)
            except RuntimeError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            rows.append(result[path])
        ref, tr = result.get("reference"), result.get("trainer")
        ratio = tr["images_per_s"] / ref["images_per_s"] if ref and tr else float("nan")

        def cell(r, key, width, fmt):
            return f"{format(r[key], fmt):>{width}}" if r else f"{'-':>{width}}"

        print(f"{size:>5} {batch:>5} {cell(ref, 'images_per_s', 16, '.1f')} {cell(tr, 'images_per_s', 14, '.1f')} "
              f"{ratio:>9.2f} {cell(ref, 'peak_mib', 12, '.0f')} {cell(tr, 'peak_mib', 16, '.0f')}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device_name(device), "torch": torch.__version__,
                                               "threads": args.threads, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
