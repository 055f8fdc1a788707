"""Run planned experiments idempotently: finished runs are reused, interrupted ones resumed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from effv2birds.atomic import atomic_write_bytes
from effv2birds.study.experiments import PlannedRun, run_status
from effv2birds.study.report import RUN_INFO
from effv2birds.training.records import write_json

__all__ = ["load_skipped", "run_planned", "save_skipped"]


def run_planned(runs: list[PlannedRun], *, log: Callable[[str], None] = print) -> dict[str, str]:
    """Train every run that has not finished; return ``{run name: reason}`` for skipped runs.

    A run whose ``metrics.json`` says ``finished`` is not trained again; one with checkpoints is
    resumed from its latest. A run whose config equals a finished run's in the same output folder
    (``hparams/baseline`` and ``ablation/default`` are the same training) gets that run's records
    instead of training again, with a note naming it. Runs that need pretrained weights are skipped (with the loader's
    message, which says where to put the file) when none can be found offline, and so is their
    from-scratch baseline (``baseline_of_weights``).

    >>> run_planned(plan_runs("new-data", image_sizes=(32,)))  # doctest: +SKIP
    {}
    """
    from effv2birds.models import WeightsNotFoundError
    from effv2birds.training import train

    skipped: dict[str, str] = {}
    for i, run in enumerate(runs, 1):
        status = run_status(run.run_dir)
        missing = [name for name in skipped if name.startswith(f"{run.experiment}/")]
        if run.baseline_of_weights and missing and status != "finished":
            # a from-scratch twin of runs that could not start compares with nothing: save its CPU time
            skipped[run.name] = f"not trained: it is the baseline of {', '.join(missing)}, skipped: {skipped[missing[0]]}"
            write_run_info(run)  # so that a later report of the folder lists it too
            log(f"[{i}/{len(runs)}] {run.name}: skipped, the pretrained runs it is the baseline of were skipped")
            continue
        if status == "finished":
            log(f"[{i}/{len(runs)}] {run.name}: finished earlier, reusing {run.run_dir / 'metrics.json'}")
            continue
        twin = finished_twin(run) if status == "new" else None
        if twin is not None:
            copy_records(twin, run)
            log(f"[{i}/{len(runs)}] {run.name}: same config as {twin.parent.name}/{twin.name}, reusing its results")
            continue
        config = run.config
        if status == "interrupted" and config.resume is None:
            config = config.replace(resume="latest")
        log(f"[{i}/{len(runs)}] {run.name}: {'resuming' if status == 'interrupted' else 'training'} -> {run.run_dir}")
        write_run_info(run)
        try:
            train(config)
        except WeightsNotFoundError as exc:
            if not run.needs_weights:
                raise
            skipped[run.name] = str(exc)
            log(f"[{i}/{len(runs)}] {run.name}: skipped, no pretrained weights offline:\n{exc}")
    return skipped


_RECORDS = ("config.json", "config.toml", "metrics.json", "metrics.jsonl", "environment.json", "data_report.json")


def _training_key(config: dict) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in ("output_dir", "resume")}, sort_keys=True)


def write_run_info(run: PlannedRun, note: str | None = None) -> None:
    """``RUN_DIR/study_run.json``: what the report needs to list the run (also one never trained)."""
    write_json(run.run_dir / RUN_INFO, {"experiment": run.experiment, "run": run.run, "recipe": run.recipe,
                                        "note": run.note if note is None else note, "config": run.config.to_dict()})


def finished_twin(run: PlannedRun) -> Path | None:
    """A finished run in the same output folder (``OUTPUT/<experiment>/<run>``) whose config trains
    exactly what ``run`` would (everything but ``output_dir`` equal), or ``None``."""
    key = _training_key(json.loads(json.dumps(run.config.to_dict())))
    for cfg_path in sorted(run.run_dir.parent.parent.glob("*/*/config.json")):
        other = cfg_path.parent
        if other.resolve() != run.run_dir.resolve() and run_status(other) == "finished" \
                and _training_key(json.loads(cfg_path.read_text())) == key:
            return other
    return None


def copy_records(source: Path, run: PlannedRun) -> None:
    """Give ``run`` the records of its finished twin ``source`` (not the weights: they stay there)."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    for name in _RECORDS:
        if (source / name).is_file() and name != "metrics.json":
            atomic_write_bytes(run.run_dir / name, (source / name).read_bytes())
    write_run_info(run, note=f"same config as {source.parent.name}/{source.name}: its results (trained once; weights there)")
    atomic_write_bytes(run.run_dir / "metrics.json", (source / "metrics.json").read_bytes())  # last: marks it finished


def load_skipped(output_dir: str | Path) -> dict[str, str]:
    """``{run name: reason}`` of the runs skipped by earlier commands into ``output_dir``."""
    path = Path(output_dir) / "skipped.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def save_skipped(output_dir: str | Path, skipped: dict[str, str]) -> dict[str, str]:
    """Add ``skipped`` to the folder's ``skipped.json`` (earlier commands' entries are kept, unless
    the run has finished since) and return the merged record."""
    merged = {**load_skipped(output_dir), **skipped}
    merged = {name: why for name, why in merged.items()
              if run_status(Path(output_dir) / name) != "finished"}
    write_json(Path(output_dir) / "skipped.json", merged)  # atomic: a crash never leaves half a file
    return merged
