"""Training runs side by side: what each changed against the first, and its best validation top-1.

``compare_runs`` is how a lever is read off a set of runs (choose on validation, never on test):
the first run is the reference, every other row names the config values it changed, and the best
validation top-1 comes with its 95 % Wilson interval, since 250 validation photos move by ~3 points
between seeds. ``write_curves`` puts their epochs in one CSV, ``plot_curves`` draws them in one PNG.
A run still training is shown at the epochs it has. Such a CSV can stand in for run folders that are
gone (``read_curves``), so a new run is read beside the published curves of docs/recipes. Each of the
three takes paths or the runs ``read_runs`` already read, so a caller that wants all three reads each once.

>>> rows = compare_runs(["r13/up64-26ep-s0", "r14/wd05-s0", "r14/wd05-s1"])   # doctest: +SKIP
>>> print(format_comparison(rows))                                          # doctest: +SKIP
| run | seed | changes | epochs | best val top-1 % (95 % interval) | best epoch | train time (min) |
|---|---|---|---|---|---|---|
| up64-26ep-s0 | 0 | (reference) | 26 of 26 | 51.6 (45.4–57.7) | 20 | 87.7 |
| wd05-s0 | 0 | data='/work/shared/data/birds25-mini', photo_size=32, weight_decay=0.5 | 26 of 26 | 53.6 (47.4–59.7) | 24 | 67.9 |
| wd05-s1 | 1 | data='/work/shared/data/birds25-mini', photo_size=32, weight_decay=0.5 | 26 of 26 | 50.8 (44.6–56.9) | 24 | 76.6 |
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, NamedTuple

from effv2birds.errors import ConfigError
from effv2birds.run_files import CONFIG_JSON, METRICS_LOG, SUMMARY
from effv2birds.study.report import read_epochs, wilson_interval
from effv2birds.study.runner import saved_values

__all__ = ["compare_runs", "format_comparison", "write_curves", "plot_curves", "read_curves", "read_runs", "RunHistory",
           "CURVE_COLUMNS"]

CURVE_COLUMNS = ("run", "seed", "epoch", "train_loss", "train_top1", "val_top1", "val_loss", "lr")
# shown in their own column (seed) or not what a run trains (where its photos are cached)
_NOT_CHANGES = ("seed", "cache_dir")


class RunHistory(NamedTuple):
    """One run as ``read_runs`` read it: what compare_runs, write_curves and plot_curves need."""

    name: str
    path: str  # the run folder, or the curves CSV it was read from
    values: dict[str, Any] | None  # the trained config values; None for saved curves (a CSV has no config)
    seed: int | None
    epochs: list[dict[str, Any]]
    summary: dict[str, Any]  # metrics.json, or {} (running, or saved curves)


def _read_run(run_dir: Path) -> RunHistory:
    config_file = run_dir / CONFIG_JSON
    if not config_file.is_file() or not (run_dir / METRICS_LOG).is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run: it needs the config.json and metrics.jsonl that "
                                "`effv2birds train` writes in its output_dir (or pass a CSV written by --curves)")
    summary_file = run_dir / SUMMARY
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    values = saved_values(config_file)
    return RunHistory(run_dir.name, str(run_dir), values, values.get("seed"), read_epochs(run_dir), summary)


def read_curves(path: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """The epochs of every run in a CSV written by ``write_curves`` (``--curves``), by run name: how runs whose
    folders are gone (docs/recipes/*-curves.csv) are compared and drawn beside new ones.

    >>> read_curves("docs/recipes/birds128-mix80-curves.csv")["mix80-s0"][-1]["val_top1"]  # doctest: +SKIP
    0.74
    """
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CURVE_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ConfigError(f"{path} is not a curves CSV: it lacks the column(s) {', '.join(missing)}; pass a "
                              "file written by `effv2birds compare RUN... --curves FILE.csv`, or a run folder")
        runs: dict[str, list[dict[str, Any]]] = {}
        for row in reader:
            try:
                epoch = {k: _number(row[k]) for k in CURVE_COLUMNS if k != "run"}
            except (TypeError, ValueError):
                raise ConfigError(f"{path}, line {reader.line_num}: expected numbers in the columns "
                                  f"{', '.join(CURVE_COLUMNS[1:])}, found {row}; write it again with --curves"
                                  ) from None
            runs.setdefault(row["run"], []).append(epoch)
    return runs


def _number(text: str) -> int | float | None:
    if text == "":
        return None
    try:
        return int(text)  # seed, epoch
    except ValueError:
        return float(text)


RunsOrPaths = Iterable["str | os.PathLike | RunHistory"]


def read_runs(paths: RunsOrPaths) -> list[RunHistory]:
    """Each path's runs: a run folder is one run; a curves CSV gives one run per run name in it (runs already
    read are kept as they are). Pass the result to compare_runs, write_curves and plot_curves to read once.

    >>> runs = read_runs(["runs/recipe", "docs/recipes/birds128-mix80-s1-curves.csv"])  # doctest: +SKIP
    >>> [run.name for run in runs]                                                        # doctest: +SKIP
    ['recipe', 'mix80-s1']
    """
    runs = []
    for item in paths:
        if isinstance(item, RunHistory):
            runs.append(item)
            continue
        path = Path(item)
        if path.suffix.lower() == ".csv" and not path.is_dir():
            if not path.is_file():
                raise FileNotFoundError(f"no curves CSV at {path}; pass a file written by --curves, or a run folder")
            runs += [RunHistory(name, str(path), None, epochs[0]["seed"], epochs, {})
                     for name, epochs in read_curves(path).items()]
        else:
            runs.append(_read_run(path))
    return runs


def _changes(values: dict[str, Any], reference: dict[str, Any]) -> str:
    changed = [f"{k}={values.get(k)!r}" if isinstance(values.get(k), str) else f"{k}={values.get(k)}"
               for k in sorted(set(values) | set(reference))
               if k not in _NOT_CHANGES and values.get(k) != reference.get(k)]
    return ", ".join(changed) or "none"


def compare_runs(run_dirs: RunsOrPaths) -> list[dict[str, Any]]:
    """One row per run folder, and per run of a curves CSV (``write_curves``): ``run``, ``seed``, ``changes``
    (the config values that differ from the first run folder's, ``"(reference)"`` for it; a CSV has no
    config, so its rows say so), ``run_dir`` (the folder or the CSV), ``epochs_done``/``epochs``, ``best_val_top1`` and
    ``best_epoch`` (the first epoch with the highest validation top-1), ``val_interval`` (95 % Wilson,
    ``None`` until ``metrics.json`` gives the number of validation photos), ``train_time_s``.

    >>> import tempfile
    >>> from effv2birds import TrainConfig
    >>> from effv2birds.training import train
    >>> cfg = TrainConfig(synthetic_size=24, max_samples=24, image_size=32, batch_size=8, epochs=1,
    ...                   width_multiplier=0.25, depth_multiplier=0.1, progress_bar=False, log_with="none",
    ...                   cpu=True, output_dir=tempfile.mkdtemp(), cache_dir=tempfile.mkdtemp())
    >>> run = train(cfg).run_dir  # doctest: +ELLIPSIS
    epoch=1 ...
    >>> [row["changes"] for row in compare_runs([run, run])]
    ['(reference)', 'none']
    """
    runs = read_runs(run_dirs)
    reference = next((run.values for run in runs if run.values is not None), None)
    rows = []
    for run in runs:
        scored = [e for e in run.epochs if e.get("val_top1") is not None]
        best = max(scored, key=lambda e: e["val_top1"]) if scored else None  # max keeps the first of ties
        n = (run.summary.get("val") or {}).get("num_samples")
        if run.values is None:
            changes = f"(saved curves in {Path(run.path).name}: config not recorded)"
        else:
            changes = "(reference)" if run.values is reference else _changes(run.values, reference)
        rows.append({
            "run": run.name, "run_dir": run.path, "seed": run.seed, "changes": changes,
            "epochs_done": run.epochs[-1]["epoch"] if run.epochs else 0, "epochs": (run.values or {}).get("epochs"),
            "best_val_top1": None if best is None else best["val_top1"],
            "best_epoch": None if best is None else best["epoch"],
            "val_interval": wilson_interval(best["val_top1"], n) if best is not None and n else None,
            "train_time_s": run.summary.get("train_time_s", run.epochs[-1].get("time_s") if run.epochs else None),
        })
    return rows


def format_comparison(rows: list[dict[str, Any]]) -> str:
    """``compare_runs``' rows as a markdown table (percentages, one decimal)."""
    lines = ["| run | seed | changes | epochs | best val top-1 % (95 % interval) | best epoch | train time (min) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        best = "—" if r["best_val_top1"] is None else f"{100 * r['best_val_top1']:.1f}"
        if r["val_interval"] is not None:
            best += " ({:.1f}–{:.1f})".format(*(100 * x for x in r["val_interval"]))
        minutes = "—" if r["train_time_s"] is None else f"{r['train_time_s'] / 60:.1f}"
        lines.append(f"| {r['run']} | {r['seed']} | {r['changes']} | {r['epochs_done']} of {r['epochs'] or '—'} "
                     f"| {best} | {r['best_epoch'] if r['best_epoch'] is not None else '—'} | {minutes} |")
    return "\n".join(lines)


def write_curves(path: str | os.PathLike, run_dirs: RunsOrPaths) -> int:
    """Write the runs' epochs as one CSV (``CURVE_COLUMNS``, one row per run and epoch); returns the rows.

    >>> write_curves("curves.csv", ["runs/recipe", "runs/wd05"])   # doctest: +SKIP
    52
    """
    from effv2birds.atomic import atomic_write_text

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CURVE_COLUMNS)
    count = 0
    for run in read_runs(run_dirs):
        for e in run.epochs:
            writer.writerow([run.name, run.seed, e["epoch"]] + [_round(e.get(k)) for k in CURVE_COLUMNS[3:]])
            count += 1
    atomic_write_text(Path(path), out.getvalue())
    return count


def plot_curves(path: str | os.PathLike, run_dirs: RunsOrPaths, title: str | None = None) -> int:
    """Draw the runs' top-1 by epoch in one PNG (validation solid, train dashed) under ``title`` (default
    "runs"); returns the runs drawn.

    >>> plot_curves("levers.png", ["runs/recipe", "runs/wd05"], title="weight decay")   # doctest: +SKIP
    2
    """
    from matplotlib.figure import Figure

    from effv2birds.atomic import atomic_path

    runs = [(run.name, run.epochs) for run in read_runs(run_dirs)]
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    for name, epochs in runs:  # epochs without a figure (none yet, or not validated) are left out, not drawn at 0
        val = [e for e in epochs if e.get("val_top1") is not None]
        line, = ax.plot([e["epoch"] for e in val], [100 * e["val_top1"] for e in val], label=f"{name} (val)")
        train = [e for e in epochs if e.get("train_top1") is not None]
        ax.plot([e["epoch"] for e in train], [100 * e["train_top1"] for e in train], "--", color=line.get_color(),
                alpha=0.6)
    ax.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title=f"{title or 'runs'}: validation (solid), train (dashed)")
    ax.legend(fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return len(runs)


def _round(value: Any) -> Any:
    return float(f"{value:.6g}") if isinstance(value, float) else ("" if value is None else value)
