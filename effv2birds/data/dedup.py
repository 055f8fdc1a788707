"""Near-duplicate photos: a 64-bit difference hash (dHash) that also sees flips and rotations.

Byte-identical copies are caught by file hashes (``load_image_dataset``); this module catches the
copies that are not: a re-encoded JPEG, a resized or flipped copy, a photo rotated by 90 degrees
(the Kaggle bird data holds such augmented copies). :func:`dhash` shrinks a grey picture to 9x8
pixels and keeps one bit per horizontal neighbour pair ("is the right one brighter?");
:func:`dihedral_hashes` hashes the 8 flips/rotations of a photo, so comparing one photo's plain
hash with another's 8 finds it in any orientation. Two photos are near-duplicates when the
Hamming distance of their hashes is at most :data:`NEAR_DUPLICATE_DISTANCE` bits of 64.

>>> import PIL.Image
>>> photo = PIL.Image.linear_gradient("L").rotate(30).convert("RGB")
>>> a = dihedral_hashes(photo)
>>> b = dihedral_hashes(photo.transpose(PIL.Image.Transpose.ROTATE_90))
>>> near_duplicates(b[:1], a[None]).tolist()
[True]
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import PIL.Image

from ..atomic import atomic_path
from .decode import raw_images
from .names import DataError

__all__ = ["NEAR_DUPLICATE_DISTANCE", "TRAIN_HASHES_FILE", "dhash", "dihedral_hashes", "drop_cross_split_duplicates",
           "hash_images", "hamming_distance", "nearest_hashes", "near_duplicates", "write_train_hashes",
           "read_train_hashes"]

# Measured on birds25-mini (500 test vs 2,500 train photos, README: no true near-duplicates between
# them): no unrelated pair is within 3 bits, the closest are at 4-6; flips and 90-degree rotations
# give 0, a JPEG re-encoded at quality 75-90 at most 2, a resized copy at most 3.
NEAR_DUPLICATE_DISTANCE = 3
TRAIN_HASHES_FILE = "train_hashes.npz"

_T = PIL.Image.Transpose
# identity first: dihedral_hashes(x)[0] == dhash(x)
_DIHEDRAL = (None, _T.FLIP_LEFT_RIGHT, _T.FLIP_TOP_BOTTOM, _T.ROTATE_90, _T.ROTATE_180, _T.ROTATE_270,
             _T.TRANSPOSE, _T.TRANSVERSE)
_WEIGHTS = np.uint64(1) << np.arange(64, dtype=np.uint64)
_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _grey(image: Any) -> PIL.Image.Image:
    """A grey PIL picture from a PIL image, a uint8 array (CHW or HWC), a tensor, a path or bytes."""
    if hasattr(image, "detach"):  # a torch tensor
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
            image = image.transpose(1, 2, 0)  # CHW (the cache's layout) -> HWC
        image = PIL.Image.fromarray(np.ascontiguousarray(image.squeeze()).astype(np.uint8))
    if not isinstance(image, PIL.Image.Image):
        from .decode import open_rgb

        image = open_rgb(image, draft_size=64)  # upright, any mode; 64 px is plenty for 9x8
    return image.convert("L")


def _bits(grey: PIL.Image.Image) -> np.uint64:
    small = np.asarray(grey.resize((9, 8), PIL.Image.BILINEAR), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).ravel().astype(np.uint64)
    return np.uint64((bits * _WEIGHTS).sum())


def dhash(image: Any) -> int:
    """The 64-bit difference hash of a photo (PIL image, uint8 array or tensor, path or bytes).

    >>> import PIL.Image
    >>> ramp = PIL.Image.linear_gradient("L").rotate(90)          # brighter to the right
    >>> hex(dhash(ramp))
    '0xffffffffffffffff'
    """
    return int(_bits(_grey(image)))


def dihedral_hashes(image: Any) -> np.ndarray:
    """The dHashes of the 8 flips/rotations of a photo, a ``(8,)`` uint64 array; ``[0]`` is :func:`dhash`.

    >>> import PIL.Image
    >>> h = dihedral_hashes(PIL.Image.effect_mandelbrot((64, 64), (-2, -1.5, 1, 1.5), 100))
    >>> h.shape, int(h[0]) == dhash(PIL.Image.effect_mandelbrot((64, 64), (-2, -1.5, 1, 1.5), 100))
    ((8,), True)
    """
    grey = _grey(image)
    return np.array([_bits(grey if op is None else grey.transpose(op)) for op in _DIHEDRAL], dtype=np.uint64)


def hash_images(images: Iterable[Any], *, threads: int | None = None) -> np.ndarray:
    """:func:`dihedral_hashes` of many photos, ``(N, 8)`` uint64 (threads: PIL releases the GIL).

    ``images``: a uint8 ``(N, 3, S, S)`` tensor or array (a ``CachedSplit``'s images) or any
    iterable of photos.

    >>> import torch
    >>> hash_images(torch.zeros(5, 3, 16, 16, dtype=torch.uint8)).shape
    (5, 8)
    """
    items = list(images)
    if not items:
        return np.zeros((0, 8), dtype=np.uint64)
    workers = threads or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        return np.stack(list(pool.map(dihedral_hashes, items, chunksize=64)))


def hamming_distance(a: Any, b: Any) -> np.ndarray:
    """Bits that differ between uint64 hashes (broadcast like ``a ^ b``).

    >>> hamming_distance(np.uint64(0b1011), np.uint64(0b0001)).tolist()
    2
    """
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(x)
    return _POPCOUNT8[x[..., None].view(np.uint8)].sum(axis=-1, dtype=np.uint8)


def nearest_hashes(query: Any, reference: Any) -> tuple[np.ndarray, np.ndarray]:
    """For each query photo, the smallest Hamming distance to any reference photo in any
    orientation, and that reference row: ``(distances, rows)``, both ``(N,)``.

    ``query``: ``(N,)`` plain hashes or ``(N, 8)`` from :func:`hash_images` (its plain column is
    used); ``reference``: ``(M, 8)`` (or ``(M,)``: orientation not considered). An empty reference
    gives distance 65 and row -1.

    >>> q = np.array([0b1111, 0], dtype=np.uint64); r = np.array([[0b0111] * 8, [1 << 40] * 8], dtype=np.uint64)
    >>> [x.tolist() for x in nearest_hashes(q, r)]
    [[1, 1], [0, 1]]
    """
    q = np.asarray(query, dtype=np.uint64)
    q = q[:, 0] if q.ndim == 2 else q.reshape(-1)
    ref = np.asarray(reference, dtype=np.uint64)
    ref = ref.reshape(len(ref), -1) if ref.size else np.zeros((0, 1), np.uint64)
    distances = np.full(len(q), 65, dtype=np.int64)
    rows = np.full(len(q), -1, dtype=np.int64)
    if len(ref) == 0:
        return distances, rows
    chunk = max(1, (1 << 22) // ref.size)  # ~4M hash pairs (32 MB) at a time, however large the reference
    for start in range(0, len(q), chunk):
        d = hamming_distance(q[start:start + chunk, None, None], ref[None]).min(axis=2)
        rows[start:start + chunk] = d.argmin(axis=1)
        distances[start:start + chunk] = d.min(axis=1)
    return distances, rows


def near_duplicates(query: Any, reference: Any, max_distance: int = NEAR_DUPLICATE_DISTANCE) -> np.ndarray:
    """``(N,)`` bool: which query photos are within ``max_distance`` bits of a reference photo
    (any orientation). Arguments as in :func:`nearest_hashes`.

    >>> near_duplicates(np.array([0b1, 0xFF00], dtype=np.uint64), np.array([[0b11] * 8], dtype=np.uint64)).tolist()
    [True, False]
    """
    return nearest_hashes(query, reference)[0] <= max_distance


def _where(value: Any, split: str, row: int) -> str:
    return str(value["path"]) if isinstance(value, dict) and value.get("path") else f"{split}[{row}]"


def drop_cross_split_duplicates(splits: Any, *, max_distance: int = NEAR_DUPLICATE_DISTANCE,
                                threads: int | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """Drop photos that are near-duplicates (any flip/rotation) of a photo in another split.

    As for byte-identical files, test keeps everything, validation loses its near-duplicates of
    test photos, train those of test and validation photos; near-duplicates inside one split stay.
    ``splits``: a ``DatasetDict`` (e.g. from ``load_image_dataset``) or a dict of ``Dataset``.
    Returns the splits (same kind) and one ``{path, split, duplicate_of, distance}`` per dropped photo.

    >>> from effv2birds.data import load_image_dataset
    >>> ds = load_image_dataset("synthetic", synthetic_size=50)
    >>> kept, dropped = drop_cross_split_duplicates(ds)
    >>> sorted(kept) == sorted(ds), all(d["split"] != "test" for d in dropped)
    (True, True)
    """
    out = dict(splits)
    dropped: list[dict[str, Any]] = []
    ref_hashes: list[np.ndarray] = []
    ref_where: list[str] = []
    for name in [n for n in ("test", "validation", "train") if n in out]:
        raw = raw_images(out[name])
        hashes = hash_images(raw, threads=threads)
        keep = np.ones(len(raw), dtype=bool)
        if ref_where:
            dist, rows = nearest_hashes(hashes, np.concatenate(ref_hashes))
            keep = dist > max_distance
            dropped += [{"path": _where(raw[i], name, i), "split": name, "duplicate_of": ref_where[rows[i]],
                         "distance": int(dist[i])} for i in np.flatnonzero(~keep)]
            if not keep.all():
                out[name] = out[name].select(np.flatnonzero(keep))
        ref_hashes.append(hashes[keep])
        ref_where += [_where(raw[i], name, i) for i in np.flatnonzero(keep)]
    if type(splits) is dict:
        return out, dropped
    import datasets

    from .reported import ReportedDatasetDict

    if isinstance(splits, ReportedDatasetDict):  # keep the kind, and load_image_dataset's report up to date
        report = splits.report
        return ReportedDatasetDict(out, {**report, "rows": {n: out[n].num_rows for n in out},
                                         "near_duplicates": report.get("near_duplicates", []) + dropped}), dropped
    return datasets.DatasetDict(out), dropped


def write_train_hashes(run_dir: str | os.PathLike, train_split: Any) -> Path:
    """Write the dihedral hashes of a run's training photos to ``run_dir/train_hashes.npz``.

    ``train_split``: the ``CachedSplit`` the run trained on (its pixels are hashed, no decoding), or
    a ``datasets.Dataset`` split (its photos are decoded). ``effv2birds evaluate`` reads the file to
    count evaluation photos that are near-duplicates of training photos.

    >>> import tempfile, torch
    >>> from effv2birds.data import CachedSplit
    >>> split = CachedSplit(torch.zeros(3, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 1]), ["a", "b"], 8)
    >>> write_train_hashes(tempfile.mkdtemp(), split).name
    'train_hashes.npz'
    """
    from .cache import CachedSplit

    if isinstance(train_split, CachedSplit):
        hashes, labels = hash_images(train_split.images), train_split.labels.cpu().numpy()
        meta = {"pixels": "cache", "image_size": train_split.image_size, "resize": train_split.resize,
                "class_names": list(train_split.class_names)}
        if train_split.photo_size is not None:
            meta["photo_size"] = train_split.photo_size
    elif hasattr(train_split, "cast_column") and "image" in getattr(train_split, "column_names", ()):
        raw = raw_images(train_split)
        hashes, labels = hash_images(raw), np.asarray(train_split["label"])
        meta = {"pixels": "original", "image_size": None, "resize": None,
                "class_names": list(train_split.features["label"].names)}
    else:
        raise DataError("write_train_hashes needs a CachedSplit or a datasets.Dataset, "
                        f"not {type(train_split).__name__}")
    path = Path(run_dir) / TRAIN_HASHES_FILE
    with atomic_path(path) as tmp:  # never half-written
        np.savez(tmp, hashes=hashes, labels=labels.astype(np.int64), meta=np.array(json.dumps(meta)))
    return path


def read_train_hashes(run_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
    """``(hashes (N, 8), labels (N,), meta)`` from ``run_dir/train_hashes.npz``, or None without one.

    >>> read_train_hashes("/nonexistent") is None
    True
    """
    path = Path(run_dir) / TRAIN_HASHES_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return data["hashes"].astype(np.uint64), data["labels"], json.loads(str(data["meta"]))
