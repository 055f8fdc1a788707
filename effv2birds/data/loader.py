"""A real ``torch.utils.data.DataLoader`` over a cached split, with batched fetching.

The data set is map-style, so the standard ``RandomSampler``/``SequentialSampler`` and
``BatchSampler`` drive it: ``accelerate`` can shard it across processes, skip batches when
resuming (``skip_first_batches``) and swap in its seedable sampler. ``__getitems__`` fetches a
whole batch with one tensor index, so no per-sample Python work happens.

>>> import torch
>>> from effv2birds.data.cache import CachedSplit
>>> c = CachedSplit(torch.zeros(10, 3, 8, 8, dtype=torch.uint8), torch.arange(10), list("abcdefghij"), 8)
>>> x, y = next(iter(make_loader(c, 4, shuffle=False)))
>>> tuple(x.shape), y.tolist()
((4, 3, 8, 8), [0, 1, 2, 3])
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader, TensorDataset

from .cache import CachedSplit
from .names import DataError

__all__ = ["TensorPairDataset", "make_loader", "passthrough_collate"]


class TensorPairDataset(TensorDataset):
    """torch's ``TensorDataset`` over ``(images, labels)``, plus ``__getitems__`` for a whole batch.

    >>> ds = TensorPairDataset(torch.zeros(5, 3, 2, 2), torch.arange(5))
    >>> ds.__getitems__([4, 1])[1].tolist()
    [4, 1]
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        super().__init__(images, labels)
        self.images, self.labels = images, labels

    def __getitems__(self, indices: Sequence[int]):
        idx = torch.as_tensor(indices, dtype=torch.long)
        if self.labels.device.type == "cuda":
            # a GPU-resident split: copy the indices from pinned memory without blocking, since a
            # plain host-to-GPU copy would wait for all queued GPU work every step
            idx = idx.pin_memory().to(self.labels.device, non_blocking=True)
        return self.images[idx], self.labels[idx]


def passthrough_collate(batch: Any) -> Any:
    """The batch is already stacked by ``__getitems__``; hand it on unchanged.

    >>> passthrough_collate((1, 2))
    (1, 2)
    """
    return batch


def make_loader(
    cached: CachedSplit,
    batch_size: int,
    *,
    shuffle: bool,
    drop_last: bool = False,
    seed: int = 0,
    device: Any = None,
    pin_memory: bool = False,
) -> DataLoader:
    """A ``DataLoader`` yielding ``(images uint8 (B,3,S,S), labels int64 (B,))``.

    ``shuffle=True`` uses a ``RandomSampler`` driven by a generator seeded with ``seed`` (two
    loaders with the same seed give the same order, and each epoch a new one). ``device`` moves
    the whole split there once (e.g. ``"cuda"`` when it fits), so batches need no transfer;
    otherwise ``pin_memory=True`` (with a CUDA device) lets the trainer copy each batch to the GPU
    without blocking.

    >>> import torch
    >>> from effv2birds.data.cache import CachedSplit
    >>> c = CachedSplit(torch.zeros(10, 3, 8, 8, dtype=torch.uint8), torch.arange(10), list("abcdefghij"), 8)
    >>> len(make_loader(c, 4, shuffle=True, drop_last=True))
    2
    """
    if not isinstance(cached, CachedSplit):
        raise DataError(f"make_loader needs a CachedSplit (from cache_split), not {type(cached).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size={batch_size!r} must be a positive integer")
    if shuffle and len(cached) == 0:
        raise DataError("cannot shuffle an empty split; add images or lower per_class/max_samples limits")
    if device is not None:
        cached = cached.to(device)
    images, labels = cached.images, cached.labels
    generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
    return DataLoader(
        TensorPairDataset(images, labels),
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        generator=generator,
        collate_fn=passthrough_collate,
        num_workers=0,  # batches are slices of an in-memory tensor: workers would only add copies
        pin_memory=bool(pin_memory) and device is None and torch.cuda.is_available(),
    )
