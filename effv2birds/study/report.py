"""The results report: every number read back from the run directories, none typed in.

``write_report(output_dir, runs)`` writes ``report.md``, ``results.csv``, ``results.json`` and the
plots (PNG) into ``output_dir``.

>>> from effv2birds.study import write_report  # doctest: +SKIP
>>> write_report("outputs/reproduce", runs)      # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterable

from effv2birds.atomic import atomic_path, atomic_write_text
from effv2birds.config import TrainConfig
from effv2birds.run_files import CONFIG_JSON, METRICS_LOG, SUMMARY
from effv2birds.study.experiments import PlannedRun, study_figure
from effv2birds.training.records import MetricsLog

__all__ = ["COLUMNS", "collect_rows", "discover_runs", "write_report", "read_epochs", "wilson_interval"]

COLUMNS = [
    "experiment", "run", "status", "recipe", "seed", "variant", "photo_size", "image_size", "data", "params", "gflops",
    "epochs", "epochs_run", "best_epoch", "best_val_top1", "best_val_top5", "final_val_top1", "final_val_top5",
    "final_train_top1", "test_top1", "test_top1_ci95", "test_top5", "test_macro_f1", "test_samples", "train_time_s", "images_per_s",
    "device", "world_size", "study_top1", "note",
]
RUN_INFO = "study_run.json"  # written by the runner into each run directory: experiment, run, recipe, note


def wilson_interval(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of an accuracy measured on ``n`` samples (fractions in [0, 1]).

    >>> [round(x, 3) for x in wilson_interval(0.4, 500)]
    [0.358, 0.444]
    """
    if n <= 0:
        return (0.0, 1.0)
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def discover_runs(output_dir: str | Path) -> list[PlannedRun]:
    """The runs found in ``output_dir/<experiment>/<run>/`` (each with the runner's ``study_run.json``
    or a ``config.json``), so one report covers every run a folder holds, also those planned by
    earlier commands with other budgets.

    >>> discover_runs("/nonexistent")
    []
    """
    found = []
    run_dirs = {p.parent for name in (RUN_INFO, CONFIG_JSON) for p in Path(output_dir).glob(f"*/*/{name}")}
    for run_dir in sorted(run_dirs):
        info_path, cfg_path = run_dir / RUN_INFO, run_dir / CONFIG_JSON
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        values = json.loads(cfg_path.read_text()) if cfg_path.is_file() else info.get("config")
        if values is None:
            continue
        values = {**values, "output_dir": str(run_dir)}  # the folder may have moved since
        found.append(PlannedRun(run_dir.parent.name, run_dir.name, TrainConfig.from_saved(values),
                                note=info.get("note", ""), recipe=info.get("recipe", "")))
    return found


def read_epochs(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run (``metrics.jsonl`` lines with ``"kind": "epoch"``)."""
    records = MetricsLog(Path(run_dir) / METRICS_LOG).read()
    # A resumed run may have re-logged an epoch: the last record of each epoch wins.
    by_epoch = {r["epoch"]: r for r in records if r.get("kind") == "epoch"}
    return [by_epoch[e] for e in sorted(by_epoch)]


def _pct(value: Any) -> float | None:
    return None if value is None else round(100.0 * float(value), 2)


def _row(run: PlannedRun, skipped: dict[str, str]) -> dict[str, Any]:
    cfg = run.config
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(experiment=run.experiment, run=run.run, recipe=run.recipe, seed=cfg.seed, variant=cfg.variant,
               photo_size=cfg.photo_size or cfg.image_size, image_size=cfg.image_size, data=cfg.data, epochs=cfg.epochs,
               study_top1=study_figure(run.experiment, run.run), note=run.note)
    if run.name in skipped:
        row.update(status="skipped", note=skipped[run.name])
        return row
    metrics_path = run.run_dir / SUMMARY
    if not metrics_path.is_file():
        row["status"] = "missing"
        return row
    m = json.loads(metrics_path.read_text())
    epochs = read_epochs(run.run_dir)
    best = next((e for e in epochs if e.get("epoch") == m.get("best_epoch")), None)
    last = epochs[-1] if epochs else None
    test = m.get("test") or {}
    if test.get("top1") is not None and test.get("num_samples"):
        low, high = wilson_interval(float(test["top1"]), int(test["num_samples"]))
        row.update(test_top1_ci95=f"{100 * low:.1f}-{100 * high:.1f}", test_samples=int(test["num_samples"]))
    row.update(
        status=m.get("status"), params=m.get("params"), gflops=m.get("gflops"), epochs_run=m.get("epochs_run"),
        best_epoch=m.get("best_epoch"), best_val_top1=_pct(m.get("best_val_top1")),
        best_val_top5=_pct(best.get("val_top5")) if best else None,
        final_val_top1=_pct(last.get("val_top1")) if last else None,
        final_val_top5=_pct(last.get("val_top5")) if last else None,
        final_train_top1=_pct(last.get("train_top1")) if last else None,
        test_top1=_pct(test.get("top1")), test_top5=_pct(test.get("top5")), test_macro_f1=_pct(test.get("macro_f1")),
        train_time_s=round(m["train_time_s"], 1) if m.get("train_time_s") is not None else None,
        images_per_s=round(m["images_per_s"], 1) if m.get("images_per_s") is not None else None,
        device=m.get("device"), world_size=m.get("world_size"),
    )
    return row


def collect_rows(runs: Iterable[PlannedRun], skipped: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per planned run, read from its ``metrics.json``/``metrics.jsonl`` (skipped runs say why)."""
    return [_row(run, skipped or {}) for run in runs]


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:.0f}"
        return f"{value:.2f}" if abs(value) >= 0.1 or value == 0 else f"{value:.2g}"
    if isinstance(value, int) and value >= 100_000:
        return f"{value / 1e6:.2f}M"
    return str(value)


_TABLE = ["run", "recipe", "seed", "variant", "photo_size", "image_size", "params", "gflops", "epochs_run", "best_val_top1",
          "final_val_top1", "final_train_top1", "test_top1", "test_top1_ci95", "test_top5", "test_macro_f1", "study_top1", "train_time_s",
          "images_per_s", "device"]


def _markdown_table(rows: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(_TABLE) + " |\n|" + "---|" * len(_TABLE) + "\n"
    return head + "".join("| " + " | ".join(_fmt(r[c]) for c in _TABLE) + " |\n" for r in rows)


def _seed_summary(rows: list[dict[str, Any]]) -> list[str]:
    """Mean and spread over seeds of each (photo size, input size, recipe, epochs) of new-data run with several seeds."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        if r["status"] == "finished" and r["test_top1"] is not None:
            groups.setdefault((r["photo_size"], r["image_size"], r["recipe"], r["epochs"]), []).append(r)
    lines = []
    for (photo, size, recipe, epochs), group in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        if len({r["seed"] for r in group}) < 2:
            continue
        tops = [r["test_top1"] for r in group]
        vals = [r["best_val_top1"] for r in group if r["best_val_top1"] is not None]
        mean = sum(tops) / len(tops)
        std = math.sqrt(sum((t - mean) ** 2 for t in tops) / (len(tops) - 1))
        lines.append(f"| {photo} | {size} | {recipe} | {epochs} | {len(group)} | {mean:.2f} ± {std:.2f} | {min(tops):.2f}–{max(tops):.2f} | "
                     f"{sum(vals) / max(len(vals), 1):.2f} |")
    if not lines:
        return []
    head = ["Over seeds (test top-1 mean ± sample standard deviation, range; mean best validation top-1):", "",
            "| photo_size | image_size | recipe | epochs | seeds | test_top1 | range | best_val_top1 |",
            "|---|---|---|---|---|---|---|---|"]
    return head + lines + [""]


def _plots(out: Path, runs: list[PlannedRun], rows: list[dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[str] = []
    by_exp: dict[str, list[PlannedRun]] = {}
    for run, row in zip(runs, rows):
        if row["status"] == "finished":
            by_exp.setdefault(run.experiment, []).append(run)

    from effv2birds.study.compare import plot_curves  # compare reads this module's helpers at import

    for exp, exp_runs in by_exp.items():
        plot_curves(out / f"curves_{exp}.png", [run.run_dir for run in exp_runs], title=exp)
        made.append(f"curves_{exp}.png")

    res = [r for r in rows if r["experiment"] == "new-data" and r["status"] == "finished"]
    if res:
        fig, ax = plt.subplots(figsize=(5, 4))
        res.sort(key=lambda r: r["photo_size"])  # the photos' size: what the study's resolutions are
        ax.plot([r["photo_size"] for r in res], [r["test_top1"] or 0 for r in res], "o-", label="effv2birds (test)")
        study = [(r["photo_size"], r["study_top1"]) for r in res if r["study_top1"] is not None]
        if study:
            ax.plot(*zip(*study), "s--", label="reproduction study")
        ax.set(xlabel="photo size (px)", ylabel="test top-1 (%)", title="accuracy by resolution")
        ax.legend()
        fig.tight_layout(), fig.savefig(out / "accuracy_by_resolution.png", dpi=100), plt.close(fig)
        made.append("accuracy_by_resolution.png")

    abl = [r for r in rows if r["experiment"] == "ablation" and r["status"] == "finished" and r["params"]]
    if abl:
        fig, axes = plt.subplots(1, 2, figsize=(9, 4))
        for ax, key, label in ((axes[0], "params", "parameters (M)"), (axes[1], "gflops", "GFLOPs (MACs) at train size")):
            for r in abl:
                x = r[key] / 1e6 if key == "params" else (r[key] or 0)
                ax.scatter(x, r["test_top1"] or 0)
                ax.annotate(r["run"], (x, r["test_top1"] or 0), fontsize=7)
            ax.set(xlabel=label, ylabel="test top-1 (%)")
        fig.suptitle("ablation: accuracy vs size")
        fig.tight_layout(), fig.savefig(out / "ablation_accuracy_vs_size.png", dpi=100), plt.close(fig)
        made.append("ablation_accuracy_vs_size.png")

    name = _schedule_plot(out, plt, [run for run in by_exp.get("progressive", []) if run.config.progressive.enabled])
    if name:
        made.append(name)

    scored = [(r["test_top1"], run) for r, run in zip(rows, runs) if r["status"] == "finished" and r["test_top1"] is not None]
    if scored:
        _, best = max(scored, key=lambda t: t[0])
        test = json.loads((best.run_dir / SUMMARY).read_text()).get("test") or {}
        matrix, names = test.get("confusion_matrix"), test.get("class_names")
        if matrix:
            names = names or [str(i) for i in range(len(matrix))]
            fig, ax = plt.subplots(figsize=(9, 8))
            ax.imshow(matrix, cmap="Blues")
            ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
            ax.set_yticks(range(len(names)), names, fontsize=6)
            ax.set(xlabel="predicted", ylabel="true", title=f"confusion matrix (test): {best.name}")
            fig.tight_layout(), fig.savefig(out / "confusion_matrix_best.png", dpi=100), plt.close(fig)
            made.append("confusion_matrix_best.png")
    return made


def _schedule_plot(out: Path, plt: Any, runs: list[PlannedRun]) -> str | None:
    """``progressive_schedule.png``: image size and regularization per epoch of the progressive runs:
    the planned schedule (lines, from the run's config) and what each epoch recorded (dots)."""
    from effv2birds.progressive import schedule_table

    series = [(run, schedule_table(run.config), read_epochs(run.run_dir)) for run in runs
              if run.config.progressive.enabled]
    if not series:
        return None
    fig, (ax_size, ax_reg) = plt.subplots(1, 2, figsize=(10, 4))
    twin = ax_reg.twinx()  # rates in [0, 1] on their own axis
    for run, planned, recorded in series:
        xs = [e["epoch"] for e in planned]
        line, = ax_size.step(xs, [e["image_size"] for e in planned], ".-", where="post", label=f"{run.run} (planned)")
        ax_size.plot([e["epoch"] for e in recorded], [e["image_size"] for e in recorded], "o",
                     color=line.get_color(), label=f"{run.run} (recorded)")
        for key, style in (("randaug_magnitude", "-"), ("mixup_alpha", ":")):
            ax_reg.step(xs, [e[key] or 0 for e in planned], "." + style, where="post", label=key)
        for key, style in (("dropout", "--"), ("stochastic_depth", "-.")):
            if any(e.get(key) is not None for e in planned):
                twin.step(xs, [e.get(key) or 0 for e in planned], "." + style, where="post", color="grey",
                          label=key)
    ax_size.set(xlabel="epoch", ylabel="train image size (px)", title="progressive learning: image size")
    ax_reg.set(xlabel="epoch", ylabel="RandAugment magnitude / mixup alpha", title="regularization")
    twin.set_ylabel("dropout / stochastic depth rate")
    ax_size.legend(fontsize=7)
    handles = ax_reg.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax_reg.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7, loc="upper left")
    fig.tight_layout(), fig.savefig(out / "progressive_schedule.png", dpi=100), plt.close(fig)
    return "progressive_schedule.png"


def _progressive_summary(rows: list[dict[str, Any]]) -> list[str]:
    """One sentence comparing the progressive run with the fixed-size one (same epochs)."""
    by_run = {r["run"]: r for r in rows if r["status"] == "finished"}
    fixed, prog = by_run.get("fixed"), by_run.get("progressive")
    if not fixed or not prog or fixed["test_top1"] is None or prog["test_top1"] is None:
        return []
    line = (f"Progressive vs fixed-size ({prog['epochs_run']} vs {fixed['epochs_run']} epochs): test top-1 "
            f"{_fmt(prog['test_top1'])} vs {_fmt(fixed['test_top1'])} "
            f"({prog['test_top1'] - fixed['test_top1']:+.2f} points)")
    if fixed["train_time_s"] is not None and prog["train_time_s"] is not None:
        line += f", train time {_fmt(prog['train_time_s'])} s vs {_fmt(fixed['train_time_s'])} s"
        if fixed["train_time_s"] > 0:
            line += f" ({prog['train_time_s'] / fixed['train_time_s']:.2f}x)"
    return [line + ".", ""]


def data_statement(rows: list[dict[str, Any]]) -> str:
    """Plain words on what the runs trained on; synthetic runs point to the real-photo report."""
    data = sorted({str(r["data"]) for r in rows})
    if data == ["synthetic"]:
        return ("**Data: the built-in synthetic birds** (25 classes of cartoon birds drawn by effv2birds, no "
                "download), not real photos: this report shows that every experiment runs and learns. "
                "For every experiment on real photos (birds25-mini, 100 photos per class) see "
                "`docs/study/report.md` in the effv2birds repository.")
    return "**Data:** " + ", ".join(f"`{d}`" + (" (built-in synthetic birds)" if d == "synthetic" else "")
                                    for d in data) + "."


def budget_table(rows: list[dict[str, Any]]) -> str:
    """One line per (experiment, recipe, image size, epochs): how many runs trained on that budget."""
    counts: dict[tuple[Any, ...], int] = {}
    for r in rows:
        if r["status"] == "finished":
            key = (r["experiment"], r["recipe"], r["photo_size"], r["image_size"], r["epochs"], r["data"])
            counts[key] = counts.get(key, 0) + 1
    lines = ["| experiment | recipe | photo_size | image_size | epochs | data | runs |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {e} | {rec} | {photo} | {size} | {ep} | `{data}` | {n} |"
              for (e, rec, photo, size, ep, data), n in counts.items()]
    return "\n".join(lines)


def write_report(output_dir: str | Path, runs: list[PlannedRun], skipped: dict[str, str] | None = None,
                 title: str = "Reproduction report", note: str | None = None) -> list[dict[str, Any]]:
    """Write report.md, results.csv, results.json and plots for ``runs`` into ``output_dir``; ``note`` is a
    paragraph placed under the title (e.g. the command that regenerates the report)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    planned = {run.name for run in runs}
    runs = list(runs) + [run for run in discover_runs(out) if run.name not in planned]
    order = {exp: i for i, exp in enumerate(dict.fromkeys(r.experiment for r in runs))}
    runs.sort(key=lambda r: order[r.experiment])  # stable: planned order within an experiment
    rows = collect_rows(runs, skipped)
    with atomic_path(out / "results.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(out / "results.json", json.dumps(rows, indent=2) + "\n")
    plots = _plots(out, runs, rows)

    lines = [f"# {title}", "", *([note, ""] if note else []), data_statement(rows), "",
             "Every number below is read from the run directories (`metrics.json`, `metrics.jsonl`); "
             "accuracies are in %. `study_top1` is the reproduction study's published best test accuracy "
             "where it reported one; `test_top1_ci95` is the 95 % Wilson interval of the test top-1 over "
             "`test_samples` photos; `recipe` is the preset the run's training recipe comes from "
             "(`study`: the study's own recipe at this run's budget); `photo_size` is the size the photos were "
             "resized to and `image_size` the network input they were fed at (larger where the recipe "
             "upsamples them). Budgets: `epochs` per run below.", "",
             budget_table(rows), ""]
    for exp in dict.fromkeys(r["experiment"] for r in rows):
        exp_rows = [r for r in rows if r["experiment"] == exp]
        data = ", ".join(sorted({str(r["data"]) for r in exp_rows}))
        lines += [f"## {exp}", "", f"Data: `{data}`.", "", _markdown_table(exp_rows)]
        if exp == "progressive":
            lines += _progressive_summary(exp_rows)
        if exp == "new-data":
            lines += _seed_summary(exp_rows)
        for r in exp_rows:
            if r["status"] != "finished":
                lines.append(f"- `{exp}/{r['run']}`: {r['status']}" + (f" — {r['note']}" if r["note"] else ""))
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    return rows
