"""Run planned experiments idempotently: finished runs are reused, interrupted ones resumed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from effv2birds.atomic import atomic_write_bytes
from effv2birds.run_files import CONFIG_JSON, RECORDS, SUMMARY
from effv2birds.study.experiments import PlannedRun, run_status
from effv2birds.study.report import RUN_INFO
from effv2birds.training.records import write_json

__all__ = ["auto_jobs", "check_finished_runs_match", "load_skipped", "run_planned", "save_skipped", "saved_values"]


def run_planned(runs: list[PlannedRun], *, log: Callable[[str], None] = print, jobs: int = 1) -> dict[str, str]:
    """Train every run that has not finished; return ``{run name: reason}`` for skipped runs.

    A run whose ``metrics.json`` says ``finished`` is not trained again (if its ``config.json`` trains
    something else than planned, nothing starts: :func:`check_finished_runs_match`); one with checkpoints
    is resumed from its latest. A run whose config equals a finished run's in the same output folder
    (``hparams/baseline`` and ``ablation/default`` are the same training) gets that run's records
    instead of training again, with a note naming it. Runs that need pretrained weights are skipped (with the loader's
    message, which says where to put the file) when none can be found offline, and so is their
    from-scratch baseline (``baseline_of_weights``).

    ``jobs > 1`` first trains the runs that need no pretrained weights in that many worker processes
    (each with an equal share of the CPU cores), then goes through the list as above: on a small CPU
    two one-thread runs at a time train ~1.8x faster than one two-thread run (see :func:`auto_jobs`).

    >>> run_planned(plan_runs("new-data", image_sizes=(32,)), jobs=2)  # doctest: +SKIP
    {}
    """
    from effv2birds.models import WeightsNotFoundError
    from effv2birds.training import train

    check_finished_runs_match(runs)  # before any training: a stale run is found in seconds, not hours
    if jobs > 1:
        _train_in_parallel(runs, jobs, log)
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


def auto_jobs() -> int:
    """How many runs to train at once by default: 2 on a machine without a GPU that has at least 2
    CPU cores and runs one process, else 1. Small CPU models (32-64 px, batch 12) use two threads
    poorly: measured on a 2-core VM, one two-thread run trained 27 images/s, two one-thread runs at
    once 26 + 24.

    >>> auto_jobs() in (1, 2)
    True
    """
    import torch

    if torch.cuda.is_available() or int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        return 1
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def _parallel_share(runs: list[PlannedRun]) -> list[PlannedRun]:
    """The runs the workers train: unfinished, no pretrained weights involved (those go through the
    skip logic in order), one per distinct training config; the most expensive first."""
    chosen: dict[str, PlannedRun] = {}
    for run in runs:
        if run.needs_weights or run.baseline_of_weights or run_status(run.run_dir) == "finished":
            continue
        key = json.dumps(_trained_values(run.config), sort_keys=True)
        if key not in chosen and finished_twin(run) is None:
            chosen[key] = run

    def cost(run: PlannedRun) -> float:  # longest first keeps the workers busy until the end
        c = run.config
        return c.image_size ** 2 * c.epochs * (3.0 if c.variant == "all_fused" else 1.0) * c.depth_multiplier
    return sorted(chosen.values(), key=cost, reverse=True)


def _init_worker(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _train_worker(config) -> str:
    from effv2birds.training import train

    train(config)
    return config.output_dir


def _train_in_parallel(runs: list[PlannedRun], jobs: int, log: Callable[[str], None]) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    share = _parallel_share(runs)
    if len(share) < 2:
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    log(f"training {len(share)} runs, {jobs} at a time ({threads} thread(s) each)")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {}
        for run in share:
            config = run.config
            if run_status(run.run_dir) == "interrupted" and config.resume is None:
                config = config.replace(resume="latest")
            write_run_info(run)
            futures[pool.submit(_train_worker, config)] = run
        try:
            for future in as_completed(futures):
                future.result()  # a failed run stops the command here, as it would without jobs
                log(f"{futures[future].name}: finished")
        except BaseException:
            for future in futures:
                future.cancel()  # the queued ones; the ones running finish or fail on their own
            raise


_NOT_TRAINING = ("output_dir", "resume")  # where a run is written and how it was started, not what it trains


def _trained_values(config: Any) -> dict:
    """The values of a ``TrainConfig`` that decide what is trained, as JSON would hold them."""
    return {k: v for k, v in json.loads(json.dumps(config.to_dict())).items() if k not in _NOT_TRAINING}


def saved_values(config_file: Path) -> dict:
    """The values a saved ``config.json`` trains with (fields added since take their defaults; not where the
    run is written or how it was started): what the stale-run check and ``effv2birds compare`` compare.

    >>> import tempfile, pathlib
    >>> from effv2birds import TrainConfig
    >>> folder = tempfile.mkdtemp(); TrainConfig(epochs=3, output_dir=folder).save(folder)
    >>> values = saved_values(pathlib.Path(folder) / "config.json")
    >>> values["epochs"], "output_dir" in values
    (3, False)
    """
    from effv2birds.config import TrainConfig

    return _trained_values(TrainConfig.from_saved(config_file))


def check_finished_runs_match(runs: list[PlannedRun]) -> None:
    """Refuse to reuse a finished run whose ``config.json`` trains something else than the plan says.

    The study reuses finished runs, so without this a changed recipe (a new preset, other ``--set``
    values) would silently report the old runs' results. Nothing is moved or deleted: the message names
    each such folder and what differs.
    """
    from effv2birds.config import ConfigError

    stale = []
    for run in runs:
        if run_status(run.run_dir) != "finished" or not (run.run_dir / CONFIG_JSON).is_file():
            continue
        old, new = saved_values(run.run_dir / CONFIG_JSON), _trained_values(run.config)
        diff = [f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in sorted(set(old) | set(new))
                if old.get(k) != new.get(k)]
        if diff:
            stale.append(f"{run.run_dir} ({'; '.join(diff)})")
    if stale:
        raise ConfigError(
            f"{len(stale)} finished run(s) in the output folder were trained with another config, and the study "
            "would report their old results: " + " | ".join(stale) + ". Move those folders away (or delete them) "
            "to train them again with the new config, or write the study to another --output folder")


def write_run_info(run: PlannedRun, note: str | None = None) -> None:
    """``RUN_DIR/study_run.json``: what the report needs to list the run (also one never trained)."""
    write_json(run.run_dir / RUN_INFO, {"experiment": run.experiment, "run": run.run, "recipe": run.recipe,
                                        "note": run.note if note is None else note, "config": run.config.to_dict()})


def finished_twin(run: PlannedRun) -> Path | None:
    """A finished run in the same output folder (``OUTPUT/<experiment>/<run>``) whose config trains
    exactly what ``run`` would (everything but ``output_dir`` equal), or ``None``."""
    planned = _trained_values(run.config)
    for cfg_path in sorted(run.run_dir.parent.parent.glob(f"*/*/{CONFIG_JSON}")):
        other = cfg_path.parent
        if other.resolve() != run.run_dir.resolve() and run_status(other) == "finished" \
                and saved_values(cfg_path) == planned:
            return other
    return None


def copy_records(source: Path, run: PlannedRun) -> None:
    """Give ``run`` the records of its finished twin ``source`` (not the weights: they stay there)."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    for name in RECORDS:
        if (source / name).is_file() and name != SUMMARY:
            atomic_write_bytes(run.run_dir / name, (source / name).read_bytes())
    write_run_info(run, note=f"same config as {source.parent.name}/{source.name}: its results (trained once; weights there)")
    atomic_write_bytes(run.run_dir / SUMMARY, (source / SUMMARY).read_bytes())  # last: marks it finished


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
