"""Training images per second, end to end: timm's own ``train.py`` vs ``effv2birds train``.

Both trainers run as subprocesses, one after the other for each image size, on the same photo folder
(class subfolders under ``train/`` and ``test/``), the same model (timm's ``efficientnetv2_s`` from
scratch; ``--backend torchvision`` or ``both`` also times torchvision's ``efficientnet_v2_s``), batch
size, fp32, torch threads and epochs. The figure for each trainer is read from its own output:

(a) timm: ``train.py --log-interval 1`` prints one ``Train: ... Time: 0.876s, 73.06/s ...`` line per
    optimizer step (the rate of that step: its wall time including the wait for data);
(b) effv2birds: ``--log-every-steps 1`` writes one ``{"kind": "step", ..., "images_per_s": ...}``
    record per step to ``RUN_DIR/metrics.jsonl`` (also the wall time since the previous step).

The first ``--warmup-steps`` steps of every epoch (worker start-up, first allocations) are left out;
the figure is the median of the remaining per-step rates. Evaluation, checkpoints, start-up and
effv2birds' one-time photo cache build are outside these step times. The ratio is effv2birds / timm.

timm's ``train.py`` is not in the timm wheel. Without ``--timm-train PATH`` the script uses
``~/.cache/effv2birds/timm-<installed version>/train.py`` (``$XDG_CACHE_HOME`` is honoured), and
fills that cache on first use: from timm's sdist on PyPI when it holds ``train.py`` (timm 1.0.31's
does not), else from the ``v<version>`` tag of huggingface/pytorch-image-models on GitHub. When
neither can be reached (or with ``--timm-train builtin``) it measures ``benchmarks/timm_train_loop.py``
instead: timm's own data pipeline, model, optimizer and loss in a plain loop, and says so.

    python benchmarks/vs_timm.py                                  # ../shared/data/birds25-mini, 32 and 128 px
    python benchmarks/vs_timm.py --sizes 128 --threads 2 --json vs_timm.json
    python benchmarks/vs_timm.py ~/data/birds --backend both --timm-train ~/src/pytorch-image-models/train.py
    python benchmarks/vs_timm.py --fetch-timm-train               # only fill the train.py cache

Measured figures: docs/performance.md
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from effv2birds.data.decode import IMAGE_EXTENSIONS
from effv2birds.training.records import MetricsLog, machine_name

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared" / "data" / "birds25-mini"
GITHUB_RAW = "https://raw.githubusercontent.com/huggingface/pytorch-image-models/v{version}/train.py"
# timm's log line for one optimizer step: "Train: 0 [  12/39 ( 32%)]  Loss: ...  Time: 0.876s,   73.06/s  (..."
TIMM_STEP = re.compile(r"Train:\s*(\d+)\s*\[\s*(\d+)\s*/\s*\d+.*?Time:\s*([0-9.]+)s,\s*([0-9.]+)/s")

# Shared training settings, passed to both trainers (timm flag, effv2birds flag, value).
SHARED = [
    ("--opt", "--optimizer", "adamw"),
    ("--lr", "--lr", "0.002"),
    ("--weight-decay", "--weight-decay", "0.05"),
    ("--smoothing", "--label-smoothing", "0.1"),
    ("--drop", "--dropout", "0.2"),
    ("--drop-path", "--stochastic-depth", "0.2"),
    ("--seed", "--seed", "0"),
]


class BenchError(RuntimeError):
    """A problem the user can fix; printed as one message, without a traceback."""


@dataclass
class Rate:
    images_per_s: float | None  # median per-step rate after warm-up; None if no step was left
    steps: int  # steps the median is taken over
    wall_s: float  # the whole subprocess, start-up and evaluation included


# --- the machine -----------------------------------------------------------------------------------

def load_average() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        raise BenchError(f"{name} is not installed in {sys.executable}; install it (pip install {name})") from None


# --- timm's train.py -------------------------------------------------------------------------------
def default_timm_train(version: str) -> Path:
    """Where the train.py of timm ``version`` is cached."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "effv2birds" / f"timm-{version}" / "train.py"


def looks_like_timm_train(text: str) -> bool:
    return "def train_one_epoch" in text and "from timm" in text and "--log-interval" in text


def _train_py_from_sdist(version: str, tmp: Path) -> tuple[str | None, str]:
    """(train.py text or None, what happened) from timm's sdist on PyPI."""
    cmd = [sys.executable, "-m", "pip", "download", f"timm=={version}", "--no-binary", ":all:",
           "--no-deps", "--quiet", "-d", str(tmp)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return None, "pip download timed out"
    archives = sorted(tmp.glob(f"timm-{version}.tar.gz"))
    if proc.returncode != 0 or not archives:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, f"pip download failed: {last[0]}"
    with tarfile.open(archives[0]) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if member.isfile() and len(parts) == 2 and parts[1] == "train.py":
                data = tar.extractfile(member)
                return (data.read().decode() if data else None), f"sdist {archives[0].name}"
    return None, f"the sdist {archives[0].name} on PyPI has no train.py"


def _train_py_from_github(version: str) -> tuple[str | None, str]:
    url = GITHUB_RAW.format(version=version)
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read().decode(), url
    except (urllib.error.URLError, OSError, UnicodeDecodeError) as exc:
        return None, f"{url}: {getattr(exc, 'reason', exc)}"


def fetch_timm_train(version: str, dest: Path) -> str:
    """Download timm ``version``'s train.py into ``dest``; returns where it came from."""
    tried = []
    with tempfile.TemporaryDirectory(prefix="effv2birds-timm-sdist-") as tmp:
        for fetch in (lambda: _train_py_from_sdist(version, Path(tmp)), lambda: _train_py_from_github(version)):
            text, where = fetch()
            if text is not None and looks_like_timm_train(text):
                dest.parent.mkdir(parents=True, exist_ok=True)
                part = dest.with_suffix(".part")
                part.write_text(text)
                part.replace(dest)
                (dest.parent / "SOURCE").write_text(where + "\n")
                return where
            tried.append(where if text is None else f"{where}: not timm's train.py")
    raise BenchError(
        f"could not get timm {version}'s train.py (it is not part of the timm wheel):\n  - "
        + "\n  - ".join(tried)
        + f"\nFix: pass --timm-train PATH with a train.py from timm {version}, e.g.\n"
        f"  git clone --depth 1 --branch v{version} https://github.com/huggingface/pytorch-image-models\n"
        f"  python benchmarks/vs_timm.py --timm-train pytorch-image-models/train.py\n"
        f"or copy it to {dest} once (used from then on)."
    )


STAND_IN = REPO / "benchmarks" / "timm_train_loop.py"
STAND_IN_NOTE = ("effv2birds' stand-in benchmarks/timm_train_loop.py: timm's data pipeline, model, optimizer and "
                 "loss through its API in a plain loop; NOT timm's train.py")


def resolve_timm_train(path: str | None, version: str) -> tuple[Path, str]:
    """(train.py, a description of where it came from); ``builtin`` or an unobtainable train.py: the stand-in."""
    if path == "builtin":
        return STAND_IN, STAND_IN_NOTE
    if path:
        p = Path(path).expanduser().resolve()
        if not p.is_file():
            raise BenchError(f"--timm-train {path}: no such file")
        return p, "given with --timm-train (its timm version is not checked)"
    cached = default_timm_train(version)
    if cached.is_file():
        source = cached.parent / "SOURCE"
        return cached, "cache" + (f", from {source.read_text().strip()}" if source.is_file() else "")
    print(f"timm {version}'s train.py is not cached yet; fetching it into {cached} ...", flush=True)
    try:
        return cached, "fetched now from " + fetch_timm_train(version, cached)
    except BenchError as exc:
        print(f"note: {exc}\nnote: measuring with {STAND_IN_NOTE}", flush=True)
        return STAND_IN, STAND_IN_NOTE + f" (timm {version}'s train.py could not be fetched)"


def timm_train_flags(train_py: Path, env: dict) -> str:
    """``train.py --help``: checks that it runs with the installed timm, and shows its flags."""
    try:
        proc = subprocess.run([sys.executable, str(train_py), "--help"], capture_output=True, text=True,
                              env=env, timeout=300)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{train_py} --help did not finish in 300 s") from None
    if proc.returncode != 0:
        raise BenchError(f"{train_py} --help failed (is it from the installed timm version?):\n"
                         + tail(proc.stdout + proc.stderr))
    return proc.stdout


def has_flag(help_text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


# --- the data --------------------------------------------------------------------------------------
def count_images(folder: Path) -> dict[str, int]:
    """Images per class subfolder of ``folder``."""
    return {d.name: sum(1 for f in d.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
            for d in sorted(folder.iterdir()) if d.is_dir()}


def check_data(folder: Path) -> tuple[int, int, int]:
    """(classes, train images, test images) of a ``train/<class>/``, ``test/<class>/`` folder."""
    if not folder.is_dir():
        raise BenchError(f"data folder {folder} not found; pass a folder with train/<class>/ and test/<class>/")
    splits = {}
    for split in ("train", "test"):
        if not (folder / split).is_dir():
            raise BenchError(f"{folder} has no {split}/ folder; both trainers need train/<class>/ and test/<class>/")
        splits[split] = count_images(folder / split)
    if set(splits["train"]) != set(splits["test"]):
        raise BenchError(f"{folder}: train/ and test/ have different class folders")
    if len(splits["train"]) < 2 or not all(splits["train"].values()):
        raise BenchError(f"{folder}/train needs at least 2 class folders, each with images")
    return len(splits["train"]), sum(splits["train"].values()), sum(splits["test"].values())


# --- the commands ----------------------------------------------------------------------------------
def timm_command(train_py: Path, flags: str, args, size: int, classes: int, out: Path) -> list[str]:
    data = ["--data-dir", str(args.folder)] if has_flag(flags, "--data-dir") else [str(args.folder)]
    cmd = [sys.executable, str(train_py), *data, "--train-split", "train", "--val-split", "test",
           "--model", "efficientnetv2_s", "--num-classes", str(classes), "--img-size", str(size),
           "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--epochs", str(args.epochs),
           "--log-interval", "1", "--output", str(out), "--experiment", f"timm-{size}", "--checkpoint-hist", "1"]
    if has_flag(flags, "--device"):
        cmd += ["--device", args.device]
    elif args.device != "cuda":
        raise BenchError(f"{train_py} has no --device flag (an old train.py?) and always trains on cuda; "
                         "use a train.py from the installed timm version")
    for timm_flag, _, value in SHARED:
        cmd += [timm_flag, value]
    return cmd + shlex.split(args.timm_args)


def effv2birds_command(args, size: int, backend: str, out: Path) -> list[str]:
    model = {"torchvision": "torchvision/efficientnet_v2_s", "timm": "timm/efficientnetv2_s"}[backend]
    cmd = [sys.executable, "-m", "effv2birds", "train", "--data", str(args.folder),
           "--model", model, "--image-size", str(size), "--batch-size", str(args.batch_size),
           "--epochs", str(args.epochs), "--mixed-precision", "no", "--random-crop", args.crop,
           "--log-every-steps", "1", "--output-dir", str(out / "run"), "--cache-dir", str(out / "cache"),
           "--no-progress-bar", "--log-with", "none", "--checkpoint-every-epochs", "none"]
    if args.crop == "resized":
        cmd += ["--crop-scale-min", "0.08"]  # timm's RandomResizedCrop scale (0.08, 1)
    if args.device == "cpu":
        cmd += ["--cpu"]
    for _, flag, value in SHARED:
        cmd += [flag, value]
    return cmd + shlex.split(args.effv2birds_args)


def child_env(threads: int) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def tail(text: str, lines: int = 30) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


def run_logged(cmd: list[str], log: Path, env: dict, cwd: Path) -> float:
    """Run ``cmd`` with its output in ``log``; returns the wall time in seconds."""
    print("  $ " + shlex.join(cmd), flush=True)
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd).returncode
    wall = time.perf_counter() - start
    if code != 0:
        raise BenchError(f"exit code {code} after {wall:.0f} s; the end of {log}:\n{tail(log.read_text())}")
    return wall


# --- the rates -------------------------------------------------------------------------------------
def timm_step_rates(log_text: str) -> list[tuple[int, float]]:
    """(epoch, images/s) of every step line in timm train.py's output."""
    return [(int(m.group(1)), float(m.group(4))) for m in TIMM_STEP.finditer(log_text)]


def effv2birds_step_rates(metrics: Path) -> list[tuple[int, float]]:
    """(epoch, images/s) of every per-step record in an effv2birds metrics.jsonl."""
    rows = MetricsLog(metrics).read()
    return [(int(r["epoch"]), float(r["images_per_s"])) for r in rows
            if r.get("kind") == "step" and r.get("images_per_s") is not None]


def steady_rate(rates: list[tuple[int, float]], warmup: int, wall_s: float) -> Rate:
    """Median rate without the first ``warmup`` steps of every epoch."""
    seen: dict[int, int] = {}
    kept = []
    for epoch, rate in rates:
        seen[epoch] = seen.get(epoch, 0) + 1
        if seen[epoch] > warmup:
            kept.append(rate)
    return Rate(round(statistics.median(kept), 2) if kept else None, len(kept), round(wall_s, 1))


def time_timm(train_py: Path, flags: str, args, size: int, classes: int, work: Path, env: dict) -> Rate:
    out = work / f"timm-{size}"
    out.mkdir(parents=True, exist_ok=True)
    log = work / f"timm-{size}.log"
    wall = run_logged(timm_command(train_py, flags, args, size, classes, out), log, env, out)
    rates = timm_step_rates(log.read_text())
    if not rates:
        raise BenchError(f"no 'Train: ... Time: ...s, .../s' lines in {log} (another train.py log format?):\n"
                         + tail(log.read_text()))
    return steady_rate(rates, args.warmup_steps, wall)


def time_effv2birds(args, size: int, backend: str, work: Path, env: dict) -> Rate:
    out = work / f"effv2birds-{backend}-{size}"
    out.mkdir(parents=True, exist_ok=True)
    log = work / f"effv2birds-{backend}-{size}.log"
    wall = run_logged(effv2birds_command(args, size, backend, out), log, env, out)
    metrics = out / "run" / "metrics.jsonl"
    if not metrics.is_file():
        raise BenchError(f"effv2birds wrote no {metrics}; the end of {log}:\n{tail(log.read_text())}")
    return steady_rate(effv2birds_step_rates(metrics), args.warmup_steps, wall)


# --- output ----------------------------------------------------------------------------------------
def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio(a: Rate, b: Rate) -> float | None:
    return round(a.images_per_s / b.images_per_s, 3) if a.images_per_s and b.images_per_s else None


def print_header(args, argv: list[str], train_py: Path, source: str, data: tuple[int, int, int]) -> dict:
    import torch  # only for its version (the trainers are subprocesses)

    classes, n_train, n_test = data
    meta = {
        "command": shlex.join(["python", "benchmarks/vs_timm.py", *argv]),
        "machine": machine_name(), "load_average": load_average(),
        "python": platform.python_version(), "torch": torch.__version__, "timm": package_version("timm"),
        "threads": args.threads, "device": args.device, "data": str(args.folder),
        "classes": classes, "train_images": n_train, "test_images": n_test,
        "batch_size": args.batch_size, "timm_workers": args.workers, "epochs": args.epochs,
        "warmup_steps": args.warmup_steps, "backends": backends(args.backend), "crop": args.crop,
        "timm_train": str(train_py), "timm_train_source": source, "timm_train_sha256": sha256_of(train_py),
    }
    print(f"command: {meta['command']}")
    print(f"machine: {meta['machine']}; load average {meta['load_average']}; python {meta['python']}; "
          f"torch {meta['torch']}; timm {meta['timm']}; {args.threads} torch thread(s) in each trainer; "
          f"device {args.device}")
    print(f"data: {args.folder}: {classes} classes, {n_train} train / {n_test} test photos; "
          f"batch {args.batch_size}, {args.epochs} epoch(s), fp32, model efficientnetv2_s from scratch")
    print(f"timm train.py: {train_py} ({source}; sha256 {meta['timm_train_sha256']})")
    print("settings shared: AdamW lr 2e-3 wd 0.05 (not on norm/bias), label smoothing 0.1, dropout 0.2, "
          "drop path 0.2, seed 0; evaluation and checkpoints outside the step times")
    print(f"timm data: its default train pipeline, {args.workers} DataLoader worker(s): decode every photo every "
          "epoch, RandomResizedCrop (scale 0.08-1, random interpolation), hflip, ColorJitter 0.4, "
          "normalise; trains on all of train/, evaluates on test/")
    print(f"effv2birds data: photos resized once into a uint8 cache (built before training, not timed), "
          f"then per batch in the training process: crop={args.crop}"
          + (" (scale 0.08-1)" if args.crop == "resized" else "")
          + ", hflip, normalise; no colour jitter; carves 10% of train/ for validation, tests on test/")
    print(f"rate: median of the per-step rates (each step's wall time, data wait included), "
          f"first {args.warmup_steps} step(s) of every epoch left out")
    return meta


def backends(choice: str) -> list[str]:
    return ["timm", "torchvision"] if choice == "both" else [choice]


def table_header(names: list[str]) -> str:
    cols = [f"{'size':>5}", f"{'timm img/s':>11}"]
    for name in names:
        cols += [f"{'effv2birds/' + name + ' img/s':>29}", f"{'ratio':>6}"]
    return "  ".join(cols)


def table_row(row: dict, names: list[str]) -> str:
    cols = [f"{row['size']:>5}", f"{fmt(row['timm_images_per_s']):>11}"]
    for name in names:
        cols += [f"{fmt(row[f'effv2birds_{name}_images_per_s']):>29}", f"{fmt(row[f'ratio_{name}'], 2):>6}"]
    return "  ".join(cols)


# --- main ------------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", nargs="?", type=Path, default=DEFAULT,
                   help="photo folder with train/<class>/ and test/<class>/ (default: %(default)s)")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 128], help="image sizes (default: 32 128)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="timm train.py DataLoader workers (its -j; default 2)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads in both trainers (OMP_NUM_THREADS; default: all cores, %(default)s)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--warmup-steps", type=int, default=3,
                   help="steps left out at the start of every epoch (default 3)")
    p.add_argument("--backend", choices=["timm", "torchvision", "both"], default="timm",
                   help="effv2birds model backend (default timm: the same efficientnetv2_s as timm's train.py)")
    p.add_argument("--crop", choices=["resized", "pad", "none"], default="resized",
                   help="effv2birds --random-crop (default resized: the crop timm's train.py uses)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda, for both trainers")
    p.add_argument("--timm-train", metavar="PATH", default=None,
                   help="timm's train.py (default: the cached copy for the installed timm, fetched on first use; "
                        "'builtin', or when it cannot be fetched: benchmarks/timm_train_loop.py, timm's pipeline "
                        "through its API)")
    p.add_argument("--fetch-timm-train", action="store_true",
                   help="only make sure the installed timm's train.py is cached, print its path and exit")
    p.add_argument("--timm-args", default="", help="extra flags for timm's train.py, one quoted string")
    p.add_argument("--effv2birds-args", default="", help="extra flags for effv2birds train, one quoted string")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the settings and rows to FILE")
    p.add_argument("--work-dir", metavar="DIR", default=None,
                   help="keep the logs and run folders here (default: a temporary folder, removed)")
    args = p.parse_args(argv)
    for name in ("batch_size", "workers", "threads", "epochs", "warmup_steps"):
        if getattr(args, name) < (0 if name in ("workers", "warmup_steps") else 1):
            p.error(f"--{name.replace('_', '-')} is too small: {getattr(args, name)}")
    args.folder = args.folder.expanduser().resolve()
    return args


def run(args, argv: list[str]) -> int:
    version = package_version("timm")
    if args.fetch_timm_train:
        dest = default_timm_train(version)
        print(f"{dest} (" + ("cached" if dest.is_file() else "fetched from " + fetch_timm_train(version, dest)) + ")")
        return 0
    data = check_data(args.folder)
    train_py, source = resolve_timm_train(args.timm_train, version)
    env = child_env(args.threads)
    flags = timm_train_flags(train_py, env)
    meta = print_header(args, argv, train_py, source, data)
    names = backends(args.backend)
    rows = []
    with tempfile.TemporaryDirectory(prefix="effv2birds-vs-timm-") as tmp:
        work = Path(args.work_dir).expanduser().resolve() if args.work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"logs: {work}" + ("" if args.work_dir else " (removed at the end; --work-dir keeps them)"))
        for size in args.sizes:
            print(f"{size} px:", flush=True)
            row = {"size": size, "load_average": load_average()}
            timm_rate = time_timm(train_py, flags, args, size, data[0], work, env)
            row.update(timm_images_per_s=timm_rate.images_per_s, timm_steps=timm_rate.steps,
                       timm_wall_s=timm_rate.wall_s)
            for name in names:
                ours = time_effv2birds(args, size, name, work, env)
                row.update({f"effv2birds_{name}_images_per_s": ours.images_per_s,
                            f"effv2birds_{name}_steps": ours.steps, f"effv2birds_{name}_wall_s": ours.wall_s,
                            f"ratio_{name}": ratio(ours, timm_rate)})
            rows.append(row)
    print()
    print(table_header(names) + "   (images/s: median per-step rate; ratio: effv2birds / timm)")
    for row in rows:
        print(table_row(row, names))
    if any(v is None for row in rows for k, v in row.items() if k.endswith("images_per_s")):
        print(f"(-: no step left after the {args.warmup_steps} warm-up step(s); use more data or --warmup-steps)")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        return run(args, argv)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
