"""Seeded, stratified index selection: carve validation/test out of train, keep N per class, cap sizes.

All functions work on an array of integer labels and return sorted row indices, so the caller can
``Dataset.select`` them; the result depends only on the labels and the seed.

>>> import numpy as np
>>> labels = np.repeat(np.arange(3), 10)
>>> train, val, test = stratified_split(labels, 0.2, 0.1, seed=0)
>>> len(train), len(val), len(test), len(set(train) & set(val))
(21, 6, 3, 0)
"""

from __future__ import annotations

import numpy as np

from effv2birds.errors import ConfigError

__all__ = ["stratified_split", "per_class_indices", "stratified_subsample"]


def _by_class(labels: np.ndarray, seed: int) -> dict[int, np.ndarray]:
    """Row indices of each class, each list in a seeded random order."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    return {int(c): rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}


def stratified_split(
    labels, val_fraction: float, test_fraction: float, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split rows into disjoint (train, validation, test) index arrays, class by class.

    Each class gives ``round(n * fraction)`` rows to validation and test; a class with at least
    three rows gives at least one to each split whose fraction is > 0, and every class keeps at
    least one training row.

    >>> tr, va, te = stratified_split([0, 0, 0, 1, 1, 1], 0.2, 0.2, seed=1)
    >>> sorted(map(len, (tr, va, te)))
    [2, 2, 2]
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) "
            "with a sum below 1 so that training data remains"
        )
    train, val, test = [], [], []
    for idx in _by_class(labels, seed).values():
        n = len(idx)
        n_test = int(round(n * test_fraction))
        n_val = int(round(n * val_fraction))
        if test_fraction > 0 and n_test == 0 and n >= 3:
            n_test = 1
        if val_fraction > 0 and n_val == 0 and n - n_test >= 2:
            n_val = 1
        while n_val + n_test >= n and (n_val or n_test):  # keep one training row
            if n_val >= n_test:
                n_val -= 1
            else:
                n_test -= 1
        test.append(idx[:n_test])
        val.append(idx[n_test:n_test + n_val])
        train.append(idx[n_test + n_val:])
    cat = lambda parts: np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)  # noqa: E731
    return cat(train), cat(val), cat(test)


def per_class_indices(labels, per_class: int, *, seed: int = 0) -> np.ndarray:
    """Keep at most ``per_class`` rows of every class (a seeded random choice).

    >>> per_class_indices([0, 0, 0, 1], 2, seed=0).tolist().count(3)
    1
    """
    if not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise ConfigError(f"per_class={per_class!r} must be a positive integer")
    parts = [idx[:per_class] for idx in _by_class(labels, seed).values()]
    return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)


def stratified_subsample(labels, max_samples: int, *, seed: int = 0) -> np.ndarray:
    """Keep ``max_samples`` rows with the class proportions of ``labels`` (largest remainders).

    >>> len(stratified_subsample([0] * 9 + [1] * 3, 4, seed=0))
    4
    """
    labels = np.asarray(labels)
    if not isinstance(max_samples, (int, np.integer)) or max_samples < 1:
        raise ConfigError(f"max_samples={max_samples!r} must be a positive integer")
    if max_samples >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    groups = _by_class(labels, seed)
    sizes = np.array([len(v) for v in groups.values()], dtype=np.float64)
    exact = sizes * max_samples / sizes.sum()
    quota = np.floor(exact).astype(int)
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[: max_samples - quota.sum()]] += 1
    parts = [idx[:q] for idx, q in zip(groups.values(), quota)]
    return np.sort(np.concatenate(parts)).astype(np.int64)
