"""A pre-resized uint8 cache: decode and resize every image once, then train from memory.

Decoding a JPEG costs far more than a small model's step on it; :func:`cache_split` decodes and
resizes each image once per (source, split, size, resize policy) with ``Dataset.map`` (several
processes, JPEG draft mode), stores the ``(3, S, S)`` uint8 pixels as a ``datasets`` Arrow data set
(``save_to_disk``) under the cache directory, and loads them on later runs without decoding.

Builds are atomic: the data set is written to a private temporary folder that is renamed to its
final name only when complete, so an interrupted build (Ctrl-C, SIGKILL, full disk) leaves nothing
that a later run takes for a finished cache.

>>> from effv2birds.data import load_image_dataset
>>> import tempfile
>>> ds = load_image_dataset("synthetic", synthetic_size=50)
>>> c = cache_split(ds["train"], 32, cache_dir=tempfile.mkdtemp())
>>> tuple(c.images.shape), c.images.dtype, len(c)
((50, 3, 32, 32), torch.uint8, 50)
"""

from __future__ import annotations

import contextlib

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effv2birds.errors import check_number

from . import decode as _decode
from .names import DataError

__all__ = ["CachedSplit", "cache_split", "cache_key", "default_cache_dir"]

logger = logging.getLogger("effv2birds.data")

CACHE_VERSION = 1  # bump when the stored format or the decoding changes
_META = "effv2birds_cache.json"
_STALE_TMP_S = 6 * 3600


@dataclass
class CachedSplit:
    """One split decoded and resized: ``images`` uint8 ``(N, 3, S, S)`` and ``labels`` int64 ``(N,)``.

    >>> c = CachedSplit(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]), ["a", "b"], 8)
    >>> len(c), c.num_classes
    (2, 2)
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    image_size: int
    resize: str = "resize"
    path: Path | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    photo_size: int | None = None  # photos made this size first, then resized to image_size

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to(self, device: Any) -> "CachedSplit":
        """The same split with its tensors on ``device`` (e.g. to keep a training set on the GPU).

        >>> CachedSplit(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), torch.zeros(1), ["a"], 2).to("cpu").images.device.type
        'cpu'
        """
        return CachedSplit(self.images.to(device), self.labels.to(device), self.class_names,
                           self.image_size, self.resize, self.path, self.skipped, self.photo_size)


@contextlib.contextmanager
def _no_progress_bars():
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def default_cache_dir() -> Path:
    """``<datasets cache>/effv2birds`` (``HF_DATASETS_CACHE``, usually ~/.cache/huggingface/datasets).

    >>> default_cache_dir().name
    'effv2birds'
    """
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE) / "effv2birds"


def _source_fingerprint(split) -> str:
    """The split's ``datasets`` fingerprint plus size/mtime of every image file it points to, so an
    edited or replaced photo invalidates the cache even though its path is unchanged."""
    h = hashlib.sha256(str(split._fingerprint).encode())
    raw = _decode.undecoded(split.select_columns(["image"]))
    for batch in raw.iter(batch_size=1024):
        for value in batch["image"]:
            if value.get("bytes") is None and value.get("path"):
                try:
                    st = os.stat(value["path"])
                    h.update(f"{value['path']}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                except OSError:
                    h.update(f"{value['path']}\0missing\n".encode())
    return h.hexdigest()


def cache_key(split, image_size: int, resize: str = "resize", photo_size: int | None = None) -> str:
    """The cache entry name of ``split`` at ``image_size`` with a resize policy (and ``photo_size``).

    >>> from effv2birds.data import load_image_dataset
    >>> tr = load_image_dataset("synthetic", synthetic_size=50)["train"]
    >>> cache_key(tr, 32) != cache_key(tr, 64)
    True
    """
    key = {"v": CACHE_VERSION, "source": _source_fingerprint(split), "split": str(split.split),
           "rows": split.num_rows, "size": int(image_size), "resize": resize, "interpolation": "bilinear-antialias"}
    if photo_size is not None:  # only then: the entries built before photo_size existed keep their names
        key["photo_size"] = int(photo_size)
    text = json.dumps(key, sort_keys=True)
    name = f"{resize}-{int(image_size)}px" + (f"-from{int(photo_size)}px" if photo_size is not None else "")
    return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:24]}"


def _decode_batch(batch: dict[str, list], size: int, resize: str, photo_size: int | None = None) -> dict[str, list]:
    pixels, errors = [], []
    blank = np.zeros((3, size, size), np.uint8)
    for value in batch["image"]:
        try:
            pixels.append(_decode.decode_resize(value, size, resize, photo_size))  # via module: tests count calls
            errors.append("")
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the build
            pixels.append(blank)
            errors.append(f"{type(exc).__name__}: {exc}")
    return {"pixels": pixels, "label": batch["label"], "error": errors}


def _remove_stale(root: Path) -> None:
    now = time.time()
    for tmp in root.glob(".tmp-*"):
        try:
            if now - tmp.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def _load(entry: Path, meta: dict[str, Any]) -> CachedSplit:
    import datasets

    ds = datasets.load_from_disk(str(entry / "data"))
    size = meta["image_size"]
    table = ds.with_format("numpy", columns=["pixels", "label"])[:]
    images = torch.from_numpy(np.ascontiguousarray(table["pixels"], dtype=np.uint8))
    labels = torch.from_numpy(np.asarray(table["label"], dtype=np.int64))
    bad = meta.get("bad_rows", [])
    if bad:
        keep = torch.ones(len(labels), dtype=torch.bool)
        keep[torch.tensor(bad)] = False
        images, labels = images[keep], labels[keep]
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
        raise DataError(f"cache entry {entry} holds images of shape {tuple(images.shape)}; delete it and rerun")
    skipped = [tuple(s) for s in meta.get("skipped", [])]
    return CachedSplit(images, labels, list(meta["class_names"]), size, meta["resize"], entry, skipped,
                       meta.get("photo_size"))


def cache_split(
    split,
    image_size: int,
    *,
    resize: str = "resize",
    cache_dir: str | os.PathLike | None = None,
    num_proc: int | None = None,
    photo_size: int | None = None,
    name: str | None = None,
) -> CachedSplit:
    """Decode and resize every image of a ``datasets.Dataset`` split once; reuse it later.

    The entry is keyed by the split's fingerprint (and its files' size/mtime), split name, size and
    resize policy (``"resize"``: squash to a square; ``"resize_crop"``: short side then centre
    crop), and ``photo_size`` (photos made that size first, then resized to ``image_size``; see
    ``decode_resize``; one equal to ``image_size`` is no step and uses the plain entry). ``num_proc`` processes decode in parallel (default: all cores for big splits). Images
    that fail to decode are left out and listed in ``CachedSplit.skipped``. ``name`` is what the progress bar
    calls the split (default: its ``datasets`` split name, which stays ``train`` for a validation split carved
    out of it; the name is not part of the key).

    >>> from effv2birds.data import load_image_dataset
    >>> import tempfile
    >>> d = tempfile.mkdtemp(); tr = load_image_dataset("synthetic", synthetic_size=50)["train"]
    >>> cache_split(tr, 16, cache_dir=d).path == cache_split(tr, 16, cache_dir=d).path
    True
    """
    import datasets

    if not isinstance(split, datasets.Dataset):
        raise DataError(f"cache_split needs a datasets.Dataset split (e.g. ds['train']), not {type(split).__name__}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size={image_size!r} must be a positive integer (pixels)")
    if resize not in _decode.RESIZE_POLICIES:
        raise DataError(f"resize={resize!r} is not valid; choose one of {', '.join(_decode.RESIZE_POLICIES)}")
    check_number("photo_size", photo_size, low=1, low_ok=True, integer=True, allow_none=True, error=DataError)
    photo_size = _decode.photo_step(photo_size, image_size)  # one equal to the size shares the plain entry
    for col in ("image", "label"):
        if col not in split.column_names:
            raise DataError(f"the split has no {col!r} column (columns: {split.column_names}); "
                            "load it with load_image_dataset")
    label_feature = split.features["label"]
    class_names = list(getattr(label_feature, "names", None) or [])
    if not class_names:
        raise DataError("the split's 'label' column is not a ClassLabel; load it with load_image_dataset")

    if split.num_rows == 0:  # nothing to decode or store
        return CachedSplit(torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8),
                           torch.zeros(0, dtype=torch.int64), class_names, image_size, resize,
                           photo_size=photo_size)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = cache_key(split, image_size, resize, photo_size)
    entry = root / key
    meta_file = entry / _META
    if meta_file.is_file():
        try:
            return _load(entry, json.loads(meta_file.read_text()))
        except Exception as exc:  # noqa: BLE001 - a damaged entry is rebuilt, never trusted
            logger.warning("effv2birds: cache entry %s is unreadable (%s); rebuilding it", entry, exc)
            shutil.rmtree(entry, ignore_errors=True)

    root.mkdir(parents=True, exist_ok=True)
    _remove_stale(root)
    tmp = root / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    started = time.perf_counter()
    try:
        if num_proc is None:
            num_proc = min(os.cpu_count() or 1, 8) if split.num_rows >= 2000 else None
        if num_proc is not None and num_proc <= 1:
            num_proc = None
        features = datasets.Features({
            "pixels": datasets.Array3D(shape=(3, image_size, image_size), dtype="uint8"),
            "label": datasets.Value("int64"),
            "error": datasets.Value("string"),
        })
        raw = _decode.undecoded(split.select_columns(["image", "label"]))
        built = raw.map(
            _decode_batch, batched=True, batch_size=64, num_proc=num_proc, features=features,
            remove_columns=["image"], fn_kwargs={"size": image_size, "resize": resize, "photo_size": photo_size},
            cache_file_name=str(tmp / "map.arrow"), load_from_cache_file=False, new_fingerprint=key,
            desc=f"caching {name or split.split or 'split'} at {image_size}px"
                 + (f" (from {photo_size}px photos)" if photo_size is not None else ""),
        )
        with _no_progress_bars():  # the "caching" bar above already showed the work
            built.save_to_disk(str(tmp / "data"))
        errors = built["error"]
        paths = _decode.raw_images(raw) if any(errors) else []
        bad = [i for i, e in enumerate(errors) if e]
        skipped = [[str(paths[i].get("path") or f"row {i}"), errors[i]] for i in bad]
        del built
        for f in tmp.glob("map*.arrow"):
            f.unlink()
        meta = {"version": CACHE_VERSION, "key": key, "image_size": image_size, "resize": resize,
                "rows": split.num_rows, "class_names": class_names, "split": str(split.split),
                "bad_rows": bad, "skipped": skipped, "photo_size": photo_size,
                "build_s": round(time.perf_counter() - started, 3)}
        (tmp / _META).write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, entry)  # atomic: the entry appears complete or not at all
        except OSError:
            if not meta_file.is_file():  # not another process finishing first: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if skipped:
        logger.warning("effv2birds: %d image(s) could not be decoded and are left out of the cache: %s",
                       len(skipped), ", ".join(p for p, _ in skipped[:3]))
    return _load(entry, json.loads(meta_file.read_text()))
