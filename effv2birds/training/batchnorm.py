"""BatchNorm statistics recomputed for a set of weights, as the EMA of the weights needs before it is evaluated.

An EMA copy averages the weights of many steps, but its BatchNorm running statistics can only be the
model's current ones (copied) or an average of them; neither describes the activations of the averaged
weights. With a horizon of several epochs that evaluated at chance on birds25-mini (docs/results.md).
Like ``torch.optim.swa_utils.update_bn`` for SWA, ``recompute_bn_statistics`` forgets the running
statistics and measures them again with the weights as they are.

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
>>> recompute_bn_statistics(model, [torch.randn(8, 3, 4, 4) + 5.0])
8
>>> bool(model[1].running_mean.abs().sum() > 0), model.training
(True, True)
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterable, Iterator

import torch

__all__ = ["recompute_bn_statistics", "sample_images"]


@torch.no_grad()
def recompute_bn_statistics(model: torch.nn.Module, batches: Iterable[torch.Tensor], *,
                            autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext) -> int:
    """Replace every BatchNorm layer's running mean and variance by their average over ``batches``
    (model inputs); returns how many images were seen.

    Only the BatchNorm layers run in training mode: dropout and stochastic depth stay off (unlike
    ``torch.optim.swa_utils.update_bn``, which puts the whole model in training mode), so the statistics
    describe the activations the model has in evaluation. Each batch counts equally (``momentum=None``,
    a cumulative average); the layers' momenta and the model's mode are restored afterwards. No random
    numbers are drawn, so a resumed run recomputes the same statistics. When no batch comes, or the pass
    fails, the previous statistics are put back and the error raised (a ``ValueError`` for no batches).

    >>> import torch
    >>> bn = torch.nn.BatchNorm1d(2)
    >>> recompute_bn_statistics(bn, [torch.tensor([[1.0, 0.0], [3.0, 0.0]]), torch.tensor([[5.0, 2.0], [7.0, 2.0]])])
    4
    >>> bn.running_mean.tolist(), bn.momentum
    ([4.0, 1.0], 0.1)
    """
    layers = [m for m in model.modules()
              if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    modes = [(m, m.training) for m in model.modules()]
    momenta = [m.momentum for m in layers]
    before = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in layers]
    model.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    seen = 0
    try:
        for inputs in batches:
            with autocast():
                model(inputs)
            seen += int(inputs.shape[0])
        if layers and not seen:
            raise ValueError("recompute_bn_statistics() got no batches: pass at least one batch of model inputs")
    except BaseException:
        for layer, saved in zip(layers, before):  # a failed pass leaves the statistics as they were
            for buffer, value in zip((layer.running_mean, layer.running_var, layer.num_batches_tracked), saved):
                buffer.copy_(value)
        raise
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        for module, mode in modes:
            module.training = mode
    return seen


def sample_images(images: torch.Tensor, *, max_images: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Batches of at most ``max_images`` of ``images`` (a split's uint8 ``(N, 3, H, W)``), chosen at random
    with ``seed`` (a local generator: the global random state is untouched), so that a split sorted by class
    still gives every class its share.

    >>> import torch
    >>> batches = list(sample_images(torch.arange(10).view(10, 1, 1, 1), max_images=6, batch_size=4, seed=0))
    >>> [len(b) for b in batches], len(set(torch.cat(batches).flatten().tolist()))
    ([4, 2], 6)
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=generator)[:max_images].to(images.device)
    for start in range(0, len(order), batch_size):
        yield images[order[start:start + batch_size]]
