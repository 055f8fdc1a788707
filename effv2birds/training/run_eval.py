"""``evaluate_run(run_dir, data)``: score a trained run on new photos, with a leak check against its training photos.

The photos are mapped to the run's classes by name (spelling variants such as ``Ruddy Shelduck`` /
``Ruddy-Shelduck`` match), preprocessed exactly as the run's weights file says (the same
``decode_resize`` and normalisation as :class:`~effv2birds.training.Predictor`, so both give the
same top-1), sharded over the processes of ``accelerate launch`` and gathered with
``gather_for_metrics`` (every photo counted once). Results go to ``RUN_DIR/eval/<name>/``.

>>> from effv2birds.training import evaluate_run
>>> result = evaluate_run("runs/birds32", "../shared/data/birds25-mini")  # doctest: +SKIP
>>> result["top1"], result["num_samples"], result["out_dir"]             # doctest: +SKIP
(0.406, 500, 'runs/birds32/eval/birds25-mini-test')
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from effv2birds.data.dedup import NEAR_DUPLICATE_DISTANCE, TRAIN_HASHES_FILE
from effv2birds.data.names import DataError
from effv2birds.errors import check_number
from effv2birds.run_files import CONFIG_JSON, DATA_REPORT, SUMMARY

if TYPE_CHECKING:
    from effv2birds.preprocessing import Preprocessing

__all__ = ["evaluate_run", "eval_name", "format_summary"]

_SPLITS = ("train", "validation", "test")


def eval_name(data: Any, split: str) -> str:
    """The default folder name under ``RUN_DIR/eval/``: the data folder's name (with its parent's when
    it is a split folder such as ``test/``) or the hub id, then the split unless it is ``all``.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()) / "birds" / "test"; d.mkdir(parents=True)
    >>> eval_name(d, "all"), eval_name(d.parent, "test"), eval_name("owner/hub-birds", "validation")
    ('birds-test', 'birds-test', 'owner-hub-birds-validation')
    """
    from effv2birds.data.sources import SPLIT_ALIASES

    if isinstance(data, (str, os.PathLike)):
        path = Path(os.path.expanduser(str(data)))
        if path.exists():
            path = path.resolve()
            parts = [path.parent.name, path.name] if path.name.lower() in SPLIT_ALIASES else [path.name]
        else:  # a hub id: owner/name
            parts = [p for p in re.split(r"[\\/]+", str(data)) if p]
        base = "-".join(parts)
    else:
        base = "dataset"
    base = re.sub(r"[^\w.-]+", "-", base).strip("-.") or "data"
    return base if split == "all" else f"{base}-{split}"


def _accelerator(cpu: bool):
    from accelerate import Accelerator

    from effv2birds.training.setup import check_launched_processes, reset_accelerator_state

    reset_accelerator_state()  # as train() does: an earlier run in this process must not leak its settings
    accelerator = Accelerator(cpu=cpu, mixed_precision="no")  # fp32, as Predictor: the same top-1
    check_launched_processes(accelerator)
    return accelerator


def _select_split(ds: Any, split: str | None) -> tuple[Any, str]:
    """The split to evaluate: the one asked for, else ``test`` when it has photos, else all of them."""
    import datasets

    if split is None:
        split = "test" if ds["test"].num_rows else "all"
    if split == "all":
        parts = [ds[s] for s in _SPLITS if ds[s].num_rows]
        return (datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]), split
    if split not in _SPLITS:
        raise DataError(f"split={split!r} is not a split; choose train, validation, test or all")
    if not ds[split].num_rows:
        rows = ", ".join(f"{s}: {ds[s].num_rows}" for s in _SPLITS)
        raise DataError(f"the data has no {split!r} photos ({rows}); choose another split or 'all'")
    return ds[split], split


def _map_labels(split: Any, run_names: list[str], ignore_unknown: bool) -> tuple[Any, np.ndarray, dict[str, int]]:
    """Rows whose class the run knows, their labels as run ids, and the left-out classes with photo counts."""
    from effv2birds.data.names import match_class_names

    names = split.features["label"].names
    labels = np.asarray(split["label"], dtype=np.int64)
    present = sorted(set(labels.tolist()))
    matched, unknown = match_class_names([names[i] for i in present], run_names)
    lut = np.full(len(names), -1, dtype=np.int64)
    lut[present] = [-1 if m is None else m for m in matched]
    counts = {names[i]: int((labels == i).sum()) for i, m in zip(present, matched) if m is None}
    if unknown and not ignore_unknown:
        listed = ", ".join(f"{n!r} ({c} photos)" for n, c in counts.items())
        raise DataError(
            f"the data has {len(unknown)} class(es) the model was not trained on: {listed}. The run knows "
            f"{len(run_names)}: {', '.join(run_names)} (case and -/_/space do not matter). Rename the folders, "
            "or leave these photos out with --ignore-unknown-classes (ignore_unknown_classes=True)"
        )
    keep = np.flatnonzero(lut[labels] >= 0)
    if not len(keep):
        raise DataError(f"none of the data's classes ({', '.join(map(repr, names))}) is one of the run's "
                        f"classes ({', '.join(run_names)}); is this the right run?")
    return split.select(keep), lut[labels[keep]], counts


def _photo_names(raw: list[Any]) -> list[str]:
    """A photo's path, or ``row i`` for one held in memory (as the cache names photos it skipped)."""
    return [str(v.get("path") or f"row {i}") if isinstance(v, dict) else f"row {i}" for i, v in enumerate(raw)]


def _run_config(run_dir: Path) -> Any:
    """The run's ``TrainConfig`` (its ``config.json``): where its own photos are and how it split them.

    A relative ``data`` path there is relative to the folder training ran in. When it does not exist from
    here, the absolute folder training loaded (``data_report.json``'s ``source``) is used instead, with a
    warning that says so; when that is gone too, a DataError says what to do (not only "does not exist")."""
    import json
    import warnings

    from effv2birds.config import TrainConfig
    from effv2birds.data.sources import looks_like_path

    config_file = run_dir / CONFIG_JSON
    if not config_file.is_file():
        raise DataError(f"{config_file} does not exist, so the run's own data is unknown; "
                        "name the photos to evaluate (effv2birds evaluate RUN_DIR DATA)")
    config = TrainConfig.from_saved(config_file)
    data = config.data
    if not (looks_like_path(data) and not os.path.isabs(os.path.expanduser(data)) and not Path(data).exists()):
        return config
    try:
        source = json.loads((run_dir / DATA_REPORT).read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        source = None
    if not (isinstance(source, str) and os.path.isabs(source) and Path(source).is_dir()):
        raise DataError(f"the run's config.json names its photos as the relative path {data!r}, which does not "
                        f"exist from this folder ({os.getcwd()}), and its data_report.json records no folder that "
                        "exists; run evaluate from the folder training ran in, or name the photos "
                        "(effv2birds evaluate RUN_DIR DATA [--split ...])")
    warnings.warn(f"the run's config.json names its photos as the relative path {data!r}, which does not "
                  f"exist from this folder; using {source}, the folder training loaded (its data_report.json)",
                  stacklevel=3)
    return config.replace(data=source)


def _load_photos(data: Any, split: str | None, predictor: Any, accelerator: Any, *, run_config: Any,
                 ignore_unknown: bool, image_column: str | None, label_column: str | None, cache_dir: Any):
    """``(skipped files, split, cached photos, their raw image values, their run labels, left-out classes)``.

    ``data=None``: the photos ``run_config`` names, split as the run split them (so its validation split too)."""
    from effv2birds.data import cache_split, load_image_dataset, skipped_files
    from effv2birds.data.decode import raw_images
    from effv2birds.training.setup import load_config_dataset

    pre = predictor.preprocessing
    with accelerator.main_process_first():  # the first process checks and caches the photos, the others reuse that
        if data is None:
            ds, data_report = load_config_dataset(run_config, cache_dir=cache_dir)
        else:
            ds, data_report = load_image_dataset(data, image_column=image_column, label_column=label_column,
                                                 val_fraction=0.0, test_fraction=0.0, cache_dir=cache_dir,
                                                 with_report=True)
        chosen, split = _select_split(ds, split)
        chosen, run_labels, ignored = _map_labels(chosen, predictor.class_names, ignore_unknown)
        cached = cache_split(chosen, pre.input_size, resize=pre.resize, cache_dir=cache_dir, photo_size=pre.photo_size,
                             name=split)
    raw = raw_images(chosen)
    bad = {path for path, _ in cached.skipped}  # the cache leaves out photos it could not decode
    kept = [i for i, path in enumerate(_photo_names(raw)) if path not in bad]
    skipped = [{"path": a, "reason": b} for a, b in skipped_files(data_report) + list(cached.skipped)]
    return skipped, split, cached, [raw[i] for i in kept], torch.from_numpy(run_labels[kept]), ignored


@torch.no_grad()
def _predict_all(predictor: Any, images: torch.Tensor, labels: torch.Tensor, accelerator: Any, batch_size: int,
                 tta: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities of every photo, each process taking its shard; gathered in the photos' order."""
    from torch.utils.data import DataLoader, TensorDataset

    index = torch.arange(len(labels))
    loader = accelerator.prepare(DataLoader(TensorDataset(images, labels, index), batch_size=batch_size))
    parts = []
    for x, y, i in loader:
        probs = predictor.probabilities(x, tta=tta)
        parts.append([t.cpu() for t in accelerator.gather_for_metrics((probs, y, i))])
    probs, ys, idx = (torch.cat(p) for p in zip(*parts))
    order = idx.argsort()
    if not torch.equal(idx[order], index):  # gather_for_metrics drops the padding; check it did
        raise RuntimeError(f"gathered {len(idx)} predictions for {len(index)} photos; please report this")
    return probs[order], ys[order]


def _scores(probs: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> dict[str, Any]:
    from effv2birds.training.metrics import classification_metrics

    losses = -probs.gather(1, labels[:, None]).squeeze(1).clamp_min(1e-12).log()
    return classification_metrics(probs, labels, losses=losses, num_classes=len(class_names),
                                  class_names=class_names)


def _train_hashes(run_dir: Path, pre: Preprocessing, cache_dir: Any) -> tuple[np.ndarray, dict[str, Any], str]:
    """The run's training-photo hashes: its ``train_hashes.npz``, else computed (and saved) from the
    training data that ``config.json`` names, at the evaluation size."""
    from effv2birds.data import cache_split
    from effv2birds.data.dedup import read_train_hashes, write_train_hashes
    from effv2birds.training.setup import load_config_dataset

    found = read_train_hashes(run_dir)
    if found is not None:
        return found[0], found[2], f"{TRAIN_HASHES_FILE} of the run"
    cfg = _run_config(run_dir)
    ds, _ = load_config_dataset(cfg, cache_dir=cache_dir)  # the photos the run trained on
    cached = cache_split(ds["train"], pre.input_size, resize=pre.resize, cache_dir=cache_dir or cfg.cache_dir,
                         photo_size=pre.photo_size)
    write_train_hashes(run_dir, cached)
    hashes, _, meta = read_train_hashes(run_dir)
    return hashes, meta, (f"computed from config.json's data {cfg.data!r} "
                          f"(the run had no {TRAIN_HASHES_FILE}; saved now)")


def _eval_hashes(meta: dict[str, Any], images: torch.Tensor, raw: list[Any], pre: Preprocessing) -> np.ndarray:
    """Hashes of the evaluation photos made the way the training hashes were (same pixels pipeline)."""
    from effv2birds.data.decode import decode_resize
    from effv2birds.data.dedup import hash_images

    if meta.get("pixels") != "cache":
        return hash_images(raw)
    size, resize, photo_size = meta.get("image_size"), meta.get("resize"), meta.get("photo_size")
    if (size, resize, photo_size) == (pre.input_size, pre.resize, pre.photo_size):
        return hash_images(images)
    return hash_images(decode_resize(v, int(size), resize, photo_size) for v in raw)


def _leak_check(run_dir: Path, probs: torch.Tensor, labels: torch.Tensor, images: torch.Tensor, raw: list[Any],
                class_names: list[str], preprocessing: Preprocessing, *, max_distance: int,
                cache_dir: Any) -> tuple[dict[str, Any], np.ndarray | None]:
    """How many photos are near-duplicates of training photos, and the scores without them."""
    from effv2birds.config import ConfigError
    from effv2birds.data.dedup import nearest_hashes

    try:
        train, meta, source = _train_hashes(run_dir, preprocessing, cache_dir)
    except (ConfigError, DataError, OSError, ValueError) as exc:
        reason = f"no training hashes and the training data cannot be loaded: {exc}"
        return {"status": "skipped", "reason": reason}, None
    distances, _ = nearest_hashes(_eval_hashes(meta, images, raw, preprocessing), train)
    near = distances <= max_distance
    rest = torch.from_numpy(~near)
    without = _scores(probs[rest], labels[rest], class_names) if rest.any() else None
    return {
        "status": "done", "train_hashes": source, "method": "dHash, 64 bits, 8 flips/rotations",
        "max_distance": max_distance, "near_duplicates": int(near.sum()), "share": float(near.mean()),
        "without_near_duplicates": None if without is None else
        {k: without[k] for k in ("num_samples", "top1", "top5", "macro_f1", "loss")},
    }, distances


def _photo_rows(where: list[str], probs: torch.Tensor, labels: torch.Tensor, class_names: list[str],
                distances: np.ndarray | None) -> list[dict[str, Any]]:
    conf, pred = probs.max(dim=1)
    true_p = probs.gather(1, labels[:, None]).squeeze(1)
    rows = []
    for i, path in enumerate(where):
        row = {"path": path, "true": class_names[labels[i]], "predicted": class_names[pred[i]],
               "probability": round(float(conf[i]), 6), "true_probability": round(float(true_p[i]), 6),
               "correct": bool(pred[i] == labels[i])}
        if distances is not None:
            row["train_hash_distance"] = int(distances[i])
        rows.append(row)
    return rows


def _write_outputs(out_dir: Path, result: dict[str, Any], rows: list[dict[str, Any]], raw: list[Any],
                   top_losses: int) -> None:
    from effv2birds.training.eval_report import (plot_confusion_matrix, plot_top_losses, write_class_report,
                                                 write_predictions_csv)
    from effv2birds.training.records import write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    names = result["class_names"]
    index = {n: i for i, n in enumerate(names)}
    y_true = [index[r["true"]] for r in rows]
    y_pred = [index[r["predicted"]] for r in rows]
    write_class_report(out_dir, y_true, y_pred, names)
    plot_confusion_matrix(out_dir / "confusion_matrix.png", y_true, y_pred, names,
                          title=f"{result['name']}: {len(rows)} photos, top-1 {result['top1']:.3f}")
    wrong = sorted((i for i, r in enumerate(rows) if not r["correct"]), key=lambda i: -rows[i]["probability"])
    plot_top_losses(out_dir / "top_losses.png", [{"image": raw[i], **rows[i]} for i in wrong[:top_losses]])
    write_predictions_csv(out_dir / "predictions.csv", rows)
    write_json(out_dir / SUMMARY, result)


def evaluate_run(run_dir: str | os.PathLike, data: Any = None, *, split: str | None = None, name: str | None = None,
                 which: str = "best", tta: str | None = None, ignore_unknown_classes: bool = False,
                 batch_size: int = 64, leak_check: bool = True, max_distance: int = NEAR_DUPLICATE_DISTANCE,
                 image_column: str | None = None, label_column: str | None = None, cache_dir: Any = None,
                 top_losses: int = 16, cpu: bool = False) -> dict[str, Any]:
    """Evaluate a finished run on ``data`` (a folder, a saved ``DatasetDict``, a hub id or a data set).

    ``data=None`` evaluates the run's own data (``config.json``'s), split exactly as training split it,
    so ``split="validation"`` scores the photos the run was chosen on (e.g. to choose ``tta`` there,
    never on the test split). ``split``: ``train``/``validation``/``test``/``all`` (default: ``test``
    if the data has one, else all photos). Classes are matched to the run's by name; a class the run does not know is an error unless
    ``ignore_unknown_classes``. ``tta="flip"`` averages each photo with its mirror image. With
    ``leak_check``, photos within ``max_distance`` bits (dHash, any flip/rotation) of a training
    photo are counted and the scores are also given without them. Writes ``RUN_DIR/eval/<name>/``
    (``metrics.json``, ``classification_report.json``/``.txt``, ``confusion_matrix.png``,
    ``top_losses.png``, ``predictions.csv``; ``name`` defaults to :func:`eval_name`) and returns what
    ``metrics.json`` holds plus ``out_dir``. Under ``accelerate launch`` every process returns it.

    >>> evaluate_run("runs/birds32", "~/new-photos", ignore_unknown_classes=True)["top1"]  # doctest: +SKIP
    0.52
    >>> evaluate_run("runs/birds32", split="validation", tta="flip")["top1"]             # doctest: +SKIP
    0.52
    """
    from effv2birds.training.inference import check_tta, load_trained

    tta = check_tta(tta)
    for key, value, low in (("batch_size", batch_size, 1), ("max_distance", max_distance, 0),
                            ("top_losses", top_losses, 0)):
        check_number(key, value, low=low, low_ok=True, integer=True)
    run_dir = Path(run_dir).expanduser()
    accelerator = _accelerator(cpu)
    predictor = load_trained(run_dir, which=which, device=accelerator.device)
    run_config = _run_config(run_dir) if data is None else None
    skipped, split, cached, raw, labels, ignored = _load_photos(
        data, split, predictor, accelerator, run_config=run_config, ignore_unknown=ignore_unknown_classes,
        image_column=image_column, label_column=label_column, cache_dir=cache_dir)
    probs, labels = _predict_all(predictor, cached.images, labels, accelerator, batch_size, tta)
    scores = _scores(probs, labels, predictor.class_names)
    leaks, distances = ({"status": "off"}, None)
    if leak_check:
        with accelerator.main_process_first():  # hashes computed without a hash file are saved once
            leaks, distances = _leak_check(run_dir, probs, labels, cached.images, raw, predictor.class_names,
                                           predictor.preprocessing, max_distance=max_distance, cache_dir=cache_dir)
    rows = _photo_rows(_photo_names(raw), probs, labels, predictor.class_names, distances)
    name = name or eval_name(data if run_config is None else run_config.data, split)
    out_dir = run_dir / "eval" / name
    result = {
        "name": name, "run_dir": str(run_dir), "weights": which, "split": split, "tta": tta,
        "data": _data_label(data, run_config),
        "image_size": cached.image_size, **{k: scores[k] for k in ("num_samples", "top1", "top5", "macro_f1", "loss")},
        "classes_evaluated": sorted({r["true"] for r in rows}), "ignored_classes": ignored, "skipped_files": skipped,
        "leak_check": leaks, "per_class_accuracy": scores["per_class_accuracy"],
        "confusion_matrix": scores["confusion_matrix"], "class_names": predictor.class_names,
        "world_size": accelerator.num_processes,
    }
    if accelerator.is_main_process:
        _write_outputs(out_dir, result, rows, raw, top_losses)
    accelerator.wait_for_everyone()
    return {**result, "out_dir": str(out_dir)}


def _data_label(data: Any, run_config: Any) -> str:
    if run_config is not None:
        return f"the run's own data ({run_config.data or 'synthetic'}), split as in training"
    return str(data) if isinstance(data, (str, os.PathLike)) else type(data).__name__


def format_summary(result: dict[str, Any]) -> str:
    """What ``effv2birds evaluate`` prints: the scores, the leak check, where the files are.

    >>> print(format_summary({"name": "x-test", "num_samples": 4, "classes_evaluated": ["a", "b"],
    ...                       "class_names": ["a", "b"], "top1": 0.5, "top5": 1.0, "macro_f1": 0.4, "tta": "none",
    ...                       "ignored_classes": {}, "skipped_files": [], "leak_check": {"status": "off"},
    ...                       "out_dir": "run/eval/x-test"}))
    x-test: 4 photos of 2 classes (the run has 2)
    top-1 0.5000  top-5 1.0000  macro-F1 0.4000  (tta: none)
    leak check: off
    files in run/eval/x-test/: metrics.json, classification_report.*, confusion_matrix.png, top_losses.png, predictions.csv
    """
    lines = [f"{result['name']}: {result['num_samples']} photos of {len(result['classes_evaluated'])} classes "
             f"(the run has {len(result['class_names'])})",
             f"top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}  macro-F1 {result['macro_f1']:.4f}  "
             f"(tta: {result['tta']})"]
    if result["ignored_classes"]:
        lines.append("left out (classes the run does not know): "
                     + ", ".join(f"{n} ({c})" for n, c in result["ignored_classes"].items()))
    if result["skipped_files"]:
        skipped = result["skipped_files"]
        lines.append(f"{len(skipped)} unreadable file(s) left out, e.g. {skipped[0]['path']}")
    leaks = result["leak_check"]
    if leaks["status"] == "done":
        line = (f"near-duplicates of training photos (dHash <= {leaks['max_distance']} of 64 bits, flips/rotations): "
                f"{leaks['near_duplicates']} of {result['num_samples']}")
        rest = leaks["without_near_duplicates"]
        if leaks["near_duplicates"] and rest:
            line += (f"; without them: top-1 {rest['top1']:.4f}  top-5 {rest['top5']:.4f}  "
                     f"macro-F1 {rest['macro_f1']:.4f}")
        lines.append(line)
    else:
        lines.append(f"leak check: {leaks['status']}" + (f" ({leaks['reason']})" if "reason" in leaks else ""))
    lines.append(f"files in {result['out_dir']}/: metrics.json, classification_report.*, confusion_matrix.png, "
                 "top_losses.png, predictions.csv")
    return "\n".join(lines)
