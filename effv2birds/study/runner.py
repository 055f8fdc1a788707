"""Run planned experiments idempotently: finished runs are reused, interrupted ones resumed."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from effv2birds.study.experiments import PlannedRun, run_status
from effv2birds.training.records import write_json

__all__ = ["run_planned"]


def run_planned(runs: list[PlannedRun], *, log: Callable[[str], None] = print) -> dict[str, str]:
    """Train every run that has not finished; return ``{run name: reason}`` for skipped runs.

    A run whose ``metrics.json`` says ``finished`` is not trained again; one with checkpoints is
    resumed from its latest. Runs that need pretrained weights are skipped (with the loader's
    message, which says where to put the file) when none can be found offline.

    >>> run_planned(plan_runs("new-data", image_sizes=(32,)))  # doctest: +SKIP
    {}
    """
    from effv2birds.models import WeightsNotFoundError
    from effv2birds.training import train

    skipped: dict[str, str] = {}
    for i, run in enumerate(runs, 1):
        status = run_status(run.run_dir)
        if status == "finished":
            log(f"[{i}/{len(runs)}] {run.name}: finished earlier, reusing {run.run_dir / 'metrics.json'}")
            continue
        config = run.config
        if status == "interrupted" and config.resume is None:
            config = config.replace(resume="latest")
        log(f"[{i}/{len(runs)}] {run.name}: {'resuming' if status == 'interrupted' else 'training'} -> {run.run_dir}")
        try:
            train(config)
        except WeightsNotFoundError as exc:
            if not run.needs_weights:
                raise
            skipped[run.name] = str(exc)
            log(f"[{i}/{len(runs)}] {run.name}: skipped, no pretrained weights offline:\n{exc}")
    return skipped


def save_skipped(output_dir: str | Path, skipped: dict[str, str]) -> None:
    write_json(Path(output_dir) / "skipped.json", skipped)  # atomic: a crash never leaves half a file
