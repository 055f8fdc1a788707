"""``load_image_dataset``: any supported source -> a ``DatasetDict`` with train/validation/test.

Sources: a folder (the Kaggle "25 Indian bird species" layouts or any class-per-folder tree), a
directory written by ``DatasetDict.save_to_disk``, a Hugging Face hub id, an existing
``Dataset``/``DatasetDict``, or ``"synthetic"``. The result always has an ``image`` column
(``datasets.Image``) and a ``label`` column (``ClassLabel`` named as the class folders, or as the data
set's own ``ClassLabel``; see :mod:`effv2birds.data.names`).

Loading is a row of small steps, each a function below: check the arguments, resolve the source
(what kind it is), load its splits (naming the classes), check every image (dropping undecodable
files), make the splits disjoint by file content, carve missing splits from train, drop near-duplicates
(optional), subsample, and finish the report. The steps share only the splits and the report they
are handed; nothing is kept between calls.

>>> ds = load_image_dataset("synthetic", synthetic_size=100)
>>> list(ds), ds["train"].column_names
(['train', 'validation', 'test'], ['image', 'label'])
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import numpy as np

from ..atomic import atomic_write_json
from .decode import IMAGE_EXTENSIONS, check_image, raw_images
from .dedup import NEAR_DUPLICATE_DISTANCE, drop_cross_split_duplicates
from .names import DataError, class_names_from
from .splits import per_class_indices, stratified_split, stratified_subsample

__all__ = ["load_image_dataset", "skipped_files", "data_report", "SPLIT_ALIASES"]

logger = logging.getLogger("effv2birds.data")

SPLIT_ALIASES: dict[str, str] = {
    **dict.fromkeys(["train", "training", "training_set", "train_set", "trainset"], "train"),
    **dict.fromkeys(["validation", "valid", "val", "validation_set", "val_set", "dev"], "validation"),
    **dict.fromkeys(["test", "testing", "test_set", "testset"], "test"),
}
SPLITS = ("train", "validation", "test")
# A given validation split that is mostly byte-identical to train (the Birds_25 "valid" folder is
# ~93 % copies of train) measures nothing: it is dropped and validation is carved from train.
_MAX_DUPLICATE_SHARE = 0.5


# --------------------------------------------------------------------------------------------
# the report
def _report_of(ds: Any) -> dict[str, Any] | None:
    """The report of a ``load_image_dataset`` result: its own (``with_report=True``) or the one a
    returned ``ReportedDatasetDict`` holds; None for anything else."""
    if type(ds) is dict:
        return ds if "kind" in ds and "skipped" in ds else None
    if not hasattr(ds, "report"):  # cheap test first: importing ReportedDatasetDict imports datasets
        return None
    from .reported import ReportedDatasetDict

    return ds.report if isinstance(ds, ReportedDatasetDict) else None


def skipped_files(ds: Any) -> list[tuple[str, str]]:
    """``(path, reason)`` for every file left out because it could not be decoded.

    ``ds``: what :func:`load_image_dataset` returned, or the report of ``with_report=True``.

    >>> skipped_files(load_image_dataset("synthetic", synthetic_size=50))
    []
    """
    report = _report_of(ds)
    return [(s["path"], s["reason"]) for s in report["skipped"]] if report else []


def data_report(ds: Any) -> dict[str, Any]:
    """What :func:`load_image_dataset` did: source, layout, rows per split, classes, skipped and
    duplicate files, notes. JSON-serialisable, for a run directory's ``data_report.json``.

    ``ds``: what :func:`load_image_dataset` returned (``with_report=True`` hands the report over
    directly, and it survives ``.map`` and the like, which drop it from the returned object).

    >>> data_report(load_image_dataset("synthetic", synthetic_size=50))["kind"]
    'synthetic'
    """
    report = _report_of(ds)
    if report is None:
        raise DataError("this object did not come from load_image_dataset, so it has no data report; "
                        "load_image_dataset(..., with_report=True) returns the report beside the data")
    return report


def _new_report(source: Any) -> dict[str, Any]:
    return {"source": str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__,
            "skipped": [], "duplicates": [], "near_duplicates": [], "notes": []}


def _finish_report(report: dict[str, Any], result: Any, class_names: list[str]) -> None:
    """Classes and rows into the report; warn about skipped files; refuse an empty training split."""
    report["class_names"] = list(class_names)
    report["rows"] = {name: result[name].num_rows for name in SPLITS}
    if report["skipped"]:
        logger.warning(
            "effv2birds: %d undecodable image file(s) left out (see skipped_files()/data_report()); first: %s (%s)",
            len(report["skipped"]), report["skipped"][0]["path"], report["skipped"][0]["reason"],
        )
    if result["train"].num_rows == 0:
        raise DataError(f"no usable training images in {report['source']}")


# --------------------------------------------------------------------------------------------
# folders
def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _image_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith("."))


def _has_images(directory: Path) -> bool:
    return any(p.is_file() and _is_image(p) for p in directory.iterdir())


def _subdirs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def _class_root(directory: Path) -> Path | None:
    """The folder whose sub-folders are classes, descending through single wrappers
    (``training_set/training_set/``)."""
    seen = 0
    while seen < 5:
        subs = _subdirs(directory)
        if any(_has_images(s) or _subdirs(s) for s in subs) and len(subs) >= 2:
            return directory
        if len(subs) == 1 and not _has_images(directory):
            directory, seen = subs[0], seen + 1
            continue
        return directory if subs else None
    return None


def _find_layout(root: Path) -> tuple[dict[str, Path], str]:
    """Map split name -> class-root folder, and a description of the layout."""
    directory = root
    for _ in range(5):
        subs = _subdirs(directory)
        split_dirs = {}
        for s in subs:
            name = SPLIT_ALIASES.get(s.name.lower().replace("-", "_").replace(" ", "_"))
            if name and name not in split_dirs:
                split_dirs[name] = s
        if split_dirs:
            roots = {k: r for k, v in split_dirs.items() if (r := _class_root(v)) is not None}
            if "train" not in roots:
                raise DataError(
                    f"{directory} has split folders ({', '.join(p.name for p in split_dirs.values())}) "
                    "but no training split with class folders; expected e.g. train/<Class>/*.jpg"
                )
            rel = {k: str(v.relative_to(root)) for k, v in roots.items()}
            return roots, "split folders: " + ", ".join(f"{k}={v}" for k, v in rel.items())
        if len(subs) == 1 and not _has_images(directory):
            directory = subs[0]  # a wrapper such as Birds_25/
            continue
        break
    croot = _class_root(directory)
    if croot is None or len(_subdirs(croot)) < 2:
        raise DataError(
            f"no class folders found under {root}: expected <folder>/<Class Name>/*.jpg (at least two "
            "classes), the Kaggle layout training_set/<Class Name>/*.jpg, or Birds_25/{train,valid,test}/<Class>/"
        )
    return {"train": croot}, f"class folders: {croot.relative_to(root) if croot != root else '.'}"


def _scan_folder(root: Path):
    """Files and raw class names per split, plus non-image files (reported, not used)."""
    roots, layout = _find_layout(root)
    files: dict[str, list[tuple[str, str]]] = {}
    ignored = []
    for split, croot in roots.items():
        rows = []
        for cdir in _subdirs(croot):
            for f in _image_files(cdir):
                if _is_image(f):
                    rows.append((str(f), cdir.name))
                else:
                    ignored.append({"path": str(f), "split": split, "reason": "not an image file extension"})
        loose = [p for p in croot.iterdir() if p.is_file() and _is_image(p)]
        if loose:
            ignored.extend({"path": str(p), "split": split, "reason": "image outside any class folder"} for p in loose)
        files[split] = rows
    return files, layout, ignored


# --------------------------------------------------------------------------------------------
# hub and datasets objects
def looks_like_path(text: str) -> bool:
    """Whether ``data`` text names a folder rather than a hub id (``owner/name`` has one slash).

    >>> looks_like_path("../shared/data/birds25-mini"), looks_like_path("owner/birds")
    (True, False)
    """
    return text.startswith((".", "/", "~")) or "\\" in text or text.count("/") >= 2 or os.path.isabs(text)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the hub, so that an offline machine fails in seconds, not after
    minutes of retries."""
    try:
        from huggingface_hub import constants

        endpoint = urlparse(constants.ENDPOINT)
        host, port = endpoint.hostname, endpoint.port or (443 if endpoint.scheme == "https" else 80)
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# The offline constants are process-wide: one block at a time, or a block that ends first would switch
# another thread's look-ups back online. Re-entrant, so a block may hold another inside it.
_OFFLINE_LOCK = threading.RLock()


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Offline mode for the ``datasets``/``huggingface_hub`` calls made inside the block, and only there.

    ``load_dataset`` takes no offline argument (``DownloadConfig(local_files_only=True)`` does not stop
    its hub look-ups); both libraries read their offline constant (``datasets.config.HF_HUB_OFFLINE``,
    ``huggingface_hub.constants.HF_HUB_OFFLINE``, set from the environment at import) when they are
    called. So the constants are set for the block and their previous values restored after it, even
    on an error; the ``HF_HUB_OFFLINE`` environment variable is never touched. Threads take turns.

    >>> import datasets
    >>> before = datasets.config.HF_HUB_OFFLINE
    >>> with _hub_offline():
    ...     datasets.config.HF_HUB_OFFLINE
    True
    >>> datasets.config.HF_HUB_OFFLINE == before
    True
    """
    import datasets
    import huggingface_hub.constants as hub_constants

    with _OFFLINE_LOCK:
        saved = (datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE)
        datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def _load_hub(name: str):
    import datasets

    if not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", name):
        raise DataError(f"{name!r} is neither an existing folder nor a hub data set id like 'owner/name'")
    if not _hub_reachable():
        try:  # offline: only a copy already in the datasets cache can work; ask for it without network
            with _hub_offline():
                return datasets.load_dataset(name)
        except Exception as exc:  # noqa: BLE001 - every failure here means "not available offline"
            raise DataError(
                f"hub data set {name!r} cannot be loaded: the Hugging Face hub is not reachable from this "
                f"machine and no cached copy was found ({type(exc).__name__}). Connect to the internet once, "
                "or pass a local folder / a directory saved with DatasetDict.save_to_disk."
            ) from None
    try:
        return datasets.load_dataset(name)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"hub data set {name!r} could not be loaded: {type(exc).__name__}: {exc}") from exc


def _features(class_names: list[str]):
    """What every split ends up as: RGB pictures and a ClassLabel (so ``ds["train"][0]["image"]`` is RGB)."""
    import datasets

    return datasets.Features({"image": datasets.Image(mode="RGB"), "label": datasets.ClassLabel(names=class_names)})


def _pick_column(ds, wanted: str | None, kind: str, candidates: tuple[str, ...], feature_type) -> str:
    cols = ds.column_names
    if wanted is not None:
        if wanted not in cols:
            raise DataError(
                f"{kind}_column={wanted!r} is not a column of this data set; its columns are {', '.join(cols)}"
            )
        return wanted
    for c in cols:
        if isinstance(ds.features[c], feature_type):
            return c
    for c in candidates:
        if c in cols:
            return c
    raise DataError(
        f"cannot tell which column holds the {kind}s (columns: {', '.join(cols)}); "
        f"pass {kind}_column='<name>'"
    )


def _canonical_splits(dd) -> tuple[dict[str, Any], list[str]]:
    """The splits under their canonical names (``valid`` -> ``validation``); notes on those left out."""
    splits, notes = {}, []
    for name, split in dd.items():
        canonical = SPLIT_ALIASES.get(name.lower())
        if canonical is None or canonical in splits:
            notes.append(f"split {name!r} ignored (not train/validation/test)")
            continue
        splits[canonical] = split
    if "train" not in splits:
        raise DataError(f"the data set has no training split (splits: {', '.join(dd)}); name one 'train'")
    return splits, notes


def _label_vocabulary(splits: dict[str, Any], lab: str) -> tuple[list[str], list[str] | None, dict[str, int]]:
    """``(class names, the ClassLabel's names or None, raw label -> id)``, one vocabulary over all splits.

    A ClassLabel keeps its names and order as the data set defines them; other labels are named as
    spelt, matched across splits by ``name_key``.
    """
    import datasets

    feature = splits["train"].features[lab]
    if isinstance(feature, datasets.ClassLabel):
        raw_names = list(feature.names)
        return raw_names, raw_names, {n: i for i, n in enumerate(raw_names)}
    names, raw_to_id = class_names_from(*([str(v) for v in splits[s].unique(lab)] for s in SPLITS if s in splits))
    return names, None, raw_to_id


def _normalise_split(name: str, split, img: str, lab: str, raw_names: list[str] | None,
                     raw_to_id: dict[str, int], features):
    """One split as ``image`` (Image) + ``label`` (the shared ClassLabel)."""
    import datasets

    if img not in split.column_names or lab not in split.column_names:
        raise DataError(f"split {name!r} lacks column {img!r} or {lab!r}; its columns are {split.column_names}")
    split = split.select_columns([img, lab])
    if raw_names is not None:
        lut = np.array([raw_to_id[n] for n in raw_names])
        labels = lut[np.asarray(split[lab])]
    else:
        labels = np.array([raw_to_id[str(v)] for v in split[lab]])
    split = split.remove_columns([lab]).add_column("label", labels.tolist())
    if img != "image":
        split = split.rename_column(img, "image")
    if not isinstance(split.features["image"], datasets.Image):
        split = split.cast_column("image", datasets.Image())
    return split.cast(features)


def _normalise_dict(dd, image_column, label_column):
    """Rename/cast columns of a DatasetDict to image (Image) + label (ClassLabel)."""
    import datasets

    splits, notes = _canonical_splits(dd)
    first = splits["train"]
    img = _pick_column(first, image_column, "image", ("image", "img", "picture", "image_path", "path", "file"),
                       datasets.Image)
    lab = _pick_column(first, label_column, "label", ("label", "labels", "class", "category", "target", "species"),
                       datasets.ClassLabel)
    names, raw_names, raw_to_id = _label_vocabulary(splits, lab)
    features = _features(names)
    out = {name: _normalise_split(name, split, img, lab, raw_names, raw_to_id, features)
           for name, split in splits.items()}
    return out, notes


# --------------------------------------------------------------------------------------------
# resolving and loading a source
def _resolve_source(source: Any) -> tuple[str, Any]:
    """What ``source`` is: ``(kind, value)``, kind one of ``DatasetDict``, ``Dataset``, ``synthetic``,
    ``disk`` (a ``save_to_disk`` directory), ``folder`` (value: its path) or ``hub`` (value: the id)."""
    import datasets

    if isinstance(source, datasets.DatasetDict):
        return "DatasetDict", source
    if isinstance(source, datasets.Dataset):
        return "Dataset", source
    if isinstance(source, str) and source.strip().lower() == "synthetic":
        return "synthetic", source
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(
            f"cannot load images from a {type(source).__name__}; pass a folder path, a hub id, "
            "a datasets.Dataset/DatasetDict, or 'synthetic'"
        )
    path = Path(os.path.expanduser(str(source)))
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        return "disk", path
    if path.is_dir():
        return "folder", path
    if path.exists() or looks_like_path(str(source)):
        raise DataError(
            f"data folder {path} does not exist (or is not a folder); pass an existing folder of "
            "class sub-folders, a hub data set id, or 'synthetic'"
        )
    return "hub", str(source)


def _folder_splits(path: Path, report: dict[str, Any]) -> dict[str, Any]:
    """A folder's splits: one row per image file, labelled by its class folder's name."""
    import datasets

    report["source"] = str(path.resolve())
    file_rows, layout, ignored = _scan_folder(path.resolve())
    report.update(kind="folder", layout=layout)
    report["ignored"] = ignored
    names, raw_to_id = class_names_from(*([c for _, c in file_rows[s]] for s in SPLITS if s in file_rows))
    features = _features(names)
    return {
        s: datasets.Dataset.from_dict({"image": [p for p, _ in rows], "label": [raw_to_id[c] for _, c in rows]},
                                      features=features, split=s)
        for s, rows in file_rows.items()
    }


def _load_splits(source: Any, report: dict[str, Any], *, image_column: str | None, label_column: str | None,
                 seed: int, synthetic_size: int) -> dict[str, Any]:
    """The source's splits under canonical names, as ``image`` + ``label``; kind, layout and notes go
    into ``report``."""
    import datasets

    kind, value = _resolve_source(source)
    if kind == "synthetic":
        from .synthetic import synthetic_birds

        report.update(kind="synthetic", layout=f"built-in synthetic birds, seed {seed}")
        return dict(synthetic_birds(synthetic_size, seed=seed))
    if kind == "folder":
        return _folder_splits(value, report)
    if kind == "disk":
        report.update(kind="disk", layout="save_to_disk directory")
        loaded = datasets.load_from_disk(str(value))
    elif kind == "hub":
        report.update(kind="hub", layout=f"hub data set {value}")
        loaded = _load_hub(value)
    else:
        report.update(kind="datasets", layout=kind)
        loaded = value
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict(train=loaded)
    splits, notes = _normalise_dict(loaded, image_column, label_column)
    report["notes"].extend(notes)
    return splits


def _class_names(splits: dict[str, Any]) -> list[str]:
    class_names = splits["train"].features["label"].names
    if len(class_names) < 2:
        raise DataError(f"the data set has {len(class_names)} class(es); a classifier needs at least two")
    return class_names


# --------------------------------------------------------------------------------------------
# checking every image
def _file_key(value: Any) -> str | None:
    """``path, size, mtime`` of a file-backed image value (None for in-memory bytes)."""
    if isinstance(value, dict) and value.get("bytes") is None and value.get("path"):
        try:
            st = os.stat(value["path"])
        except OSError:
            return None
        return f"{value['path']}|{st.st_size}|{st.st_mtime_ns}"
    return None


def _memo_file(report: dict[str, Any], cache_dir: str | os.PathLike | None) -> Path | None:
    """Where the check results of a folder's files are remembered (None: other sources are not)."""
    if report["kind"] != "folder":
        return None
    from .cache import default_cache_dir

    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "checks" / (hashlib.sha1(report["source"].encode()).hexdigest()[:20] + ".json")


def _read_memo(memo_file: Path | None) -> dict[str, list]:
    if memo_file is not None and memo_file.is_file():
        try:
            return json.loads(memo_file.read_text())
        except (OSError, ValueError):
            pass
    return {}


def _check_all(values: list[Any], num_proc: int | None, memo_file: Path | None = None):
    """``check_image`` for every value, in threads (PIL releases the GIL while decoding).

    Results for unchanged files (same path, size, mtime) are remembered in ``memo_file``, so a
    later run over a large photo folder does not decode every photo again.
    """
    memo = _read_memo(memo_file)
    keys = [_file_key(v) for v in values]
    todo = [i for i, k in enumerate(keys) if k is None or k not in memo]
    workers = max(1, num_proc or min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        fresh = list(pool.map(check_image, [values[i] for i in todo], chunksize=32))
    results: list[Any] = [tuple(memo[k]) if k is not None and k in memo else None for k in keys]
    for i, r in zip(todo, fresh):
        results[i] = r
        if keys[i] is not None:
            memo[keys[i]] = list(r)
    if memo_file is not None and todo and any(k is not None for k in keys):
        try:  # atomic: a crash never leaves a half-written memo
            atomic_write_json(memo_file, memo)
        except OSError as exc:
            logger.debug("could not write %s: %s", memo_file, exc)
    return results


def _describe(value: Any, split: str, row: int) -> str:
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    return f"{split}[{row}]"


def _check_splits(splits: dict[str, Any], report: dict[str, Any], num_proc: int | None,
                  memo_file: Path | None) -> dict[str, list[str | None]]:
    """Decode every image once: drop the undecodable ones (listed in ``report["skipped"]``) and
    return each split's file hashes, row by row, for de-duplication."""
    hashes: dict[str, list[str | None]] = {}
    for name in [s for s in SPLITS if s in splits]:
        raw = raw_images(splits[name])
        results = _check_all(raw, num_proc, memo_file)
        keep = [i for i, (reason, _) in enumerate(results) if reason is None]
        report["skipped"].extend(
            {"path": _describe(raw[i], name, i), "split": name, "reason": reason}
            for i, (reason, _) in enumerate(results) if reason is not None
        )
        if len(keep) < len(results):
            splits[name] = splits[name].select(keep)
        hashes[name] = [results[i][1] for i in keep]
    return hashes


# --------------------------------------------------------------------------------------------
# de-duplication, splitting, subsampling
def _drop_copies(splits: dict[str, Any], hashes: dict[str, list[str | None]], report: dict[str, Any],
                 name: str, seen: dict[str, str]) -> list[Any]:
    """Drop the files of split ``name`` already ``seen`` in an earlier split or earlier in this one
    (listed in ``report["duplicates"]``); returns the raw image values of the rows kept."""
    why = f"byte-identical file already in an earlier split ({name} loses it)"
    paths = raw_images(splits[name])
    keep, own = [], {}
    for i, h in enumerate(hashes[name]):
        where = seen.get(h) if h is not None else None
        if where is None and h is not None and h in own:
            where = own[h]
        if where is not None:
            report["duplicates"].append({"path": _describe(paths[i], name, i), "split": name,
                                         "duplicate_of": where, "reason": why})
            continue
        keep.append(i)
        if h is not None:
            own[h] = _describe(paths[i], name, i)
    if len(keep) < splits[name].num_rows:
        splits[name] = splits[name].select(keep)
        hashes[name] = [hashes[name][i] for i in keep]
    return [paths[i] for i in keep]


def _validation_is_copies(hashes: dict[str, list[str | None]], report: dict[str, Any]) -> bool:
    """Whether the given validation split is mostly byte copies of train (then noted in the report)."""
    if "train" not in hashes or not hashes["validation"]:
        return False
    train_set = set(hashes["train"])
    share = np.mean([h in train_set for h in hashes["validation"]])
    if share <= _MAX_DUPLICATE_SHARE:
        return False
    report["notes"].append(
        f"given validation split ignored: {share:.0%} of its files are byte-identical to training "
        "files (as in the Birds_25 'valid' folder); validation is carved from train instead"
    )
    return True


def _deduplicate(splits: dict[str, Any], hashes: dict[str, list[str | None]], report: dict[str, Any]) -> None:
    """Make splits disjoint by file content: test wins over validation wins over train, and a
    given validation split that is mostly copies of train is replaced by one carved from train."""
    seen: dict[str, str] = {}
    for name in ("test", "validation", "train"):
        if name not in splits:
            continue
        if name == "validation" and _validation_is_copies(hashes, report):
            del splits["validation"], hashes["validation"]
            continue
        values = _drop_copies(splits, hashes, report, name, seen)
        for row, (h, value) in enumerate(zip(hashes[name], values)):
            if h is not None:
                seen.setdefault(h, _describe(value, name, row))


def _carve_missing(splits: dict[str, Any], report: dict[str, Any], val_fraction: float, test_fraction: float,
                   seed: int) -> None:
    """Carve the missing validation/test splits out of train, stratified and seeded."""
    train_labels = np.asarray(splits["train"]["label"])
    vf = val_fraction if "validation" not in splits else 0.0
    tf = test_fraction if "test" not in splits else 0.0
    if vf or tf or "validation" not in splits or "test" not in splits:
        tr, va, te = stratified_split(train_labels, vf, tf, seed=seed)
        full = splits["train"]
        splits["train"] = full.select(tr)
        for name, idx, frac in (("validation", va, val_fraction), ("test", te, test_fraction)):
            if name not in splits:
                splits[name] = full.select(idx)
                report["notes"].append(f"{name} split carved from train: {len(idx)} rows ({frac:.0%}, stratified, seed {seed})")


def _drop_near_duplicates(splits: dict[str, Any], report: dict[str, Any], num_proc: int | None) -> dict[str, Any]:
    splits, report["near_duplicates"] = drop_cross_split_duplicates(splits, threads=num_proc)
    report["notes"].append(f"{len(report['near_duplicates'])} near-duplicate(s) of photos in other splits dropped "
                           f"(dHash, Hamming distance <= {NEAR_DUPLICATE_DISTANCE} bits, flips/rotations included)")
    return splits


def _subsample(splits: dict[str, Any], per_class: int | None, max_samples: int | None, seed: int) -> None:
    """``per_class`` training images per class, then at most ``max_samples`` rows in every split (stratified)."""
    if per_class is not None:
        splits["train"] = splits["train"].select(per_class_indices(splits["train"]["label"], per_class, seed=seed))
    if max_samples is not None:
        for name in SPLITS:
            if splits[name].num_rows > max_samples:
                splits[name] = splits[name].select(stratified_subsample(splits[name]["label"], max_samples, seed=seed))


# --------------------------------------------------------------------------------------------
# the whole load
def _check_arguments(val_fraction: Any, test_fraction: Any, per_class: Any, max_samples: Any) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise DataError(f"{name}={value!r} must be a number in [0, 1)")
    if val_fraction + test_fraction >= 1:
        raise DataError(f"val_fraction + test_fraction = {val_fraction + test_fraction} must be < 1")
    for name, value in (("per_class", per_class), ("max_samples", max_samples)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise DataError(f"{name}={value!r} must be a positive integer or None")


def load_image_dataset(
    source: Any = "synthetic",
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    per_class: int | None = None,
    max_samples: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    synthetic_size: int = 2000,
    num_proc: int | None = None,
    verify: bool = True,
    cache_dir: str | os.PathLike | None = None,
    drop_near_duplicates: bool = False,
    with_report: bool = False,
):
    """Load images and labels from ``source`` as a ``DatasetDict`` with train/validation/test.

    ``source``: a folder, a ``save_to_disk`` directory, a hub id, a ``Dataset``/``DatasetDict`` or
    ``"synthetic"``. Missing validation/test splits are carved out of train (stratified, seeded).
    Every image is decoded once (``verify=True``): undecodable files are excluded and listed by
    :func:`skipped_files`; byte-identical files are kept in one split only (see :func:`data_report`),
    and with ``drop_near_duplicates=True`` also re-encoded, resized, flipped or rotated copies
    (:func:`~effv2birds.data.dedup.drop_cross_split_duplicates`; listed in the report's ``near_duplicates``).
    ``per_class`` keeps N training images per class; ``max_samples`` caps every split. Check
    results of unchanged files are remembered under ``cache_dir`` (default: the cache of
    :func:`~effv2birds.data.cache_split`), so big folders are decoded once, not every run.

    Returns a :class:`~effv2birds.data.reported.ReportedDatasetDict` (a ``DatasetDict`` that
    :func:`data_report` and :func:`skipped_files` read the report from); with ``with_report=True``,
    ``(DatasetDict, report)`` instead: the report as a plain dict that outlives any ``.map``.

    >>> ds = load_image_dataset("synthetic", synthetic_size=100, per_class=2)
    >>> ds["train"].num_rows, ds["train"].features["label"].names[0]
    (50, 'Asian Green Bee Eater')
    >>> ds, report = load_image_dataset("synthetic", synthetic_size=100, with_report=True)
    >>> report["rows"], report["skipped"]
    ({'train': 100, 'validation': 250, 'test': 250}, [])
    """
    import datasets

    _check_arguments(val_fraction, test_fraction, per_class, max_samples)
    report = _new_report(source)
    splits = _load_splits(source, report, image_column=image_column, label_column=label_column, seed=seed,
                          synthetic_size=synthetic_size)
    class_names = _class_names(splits)
    if verify and report["kind"] != "synthetic":  # synthetic images are generated here, known good
        hashes = _check_splits(splits, report, num_proc, _memo_file(report, cache_dir))
        _deduplicate(splits, hashes, report)
    _carve_missing(splits, report, val_fraction, test_fraction, seed)
    if drop_near_duplicates:  # after carving, so that carved splits are checked too
        splits = _drop_near_duplicates(splits, report, num_proc)
    _subsample(splits, per_class, max_samples, seed)
    result = datasets.DatasetDict({name: splits[name] for name in SPLITS})
    _finish_report(report, result, class_names)
    if with_report:
        return result, report
    from .reported import ReportedDatasetDict

    return ReportedDatasetDict(result, report)
