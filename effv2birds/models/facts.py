"""Parameter count and compute of a model, as reported in result tables.

>>> from effv2birds.models import build_model, model_facts
>>> facts = model_facts(build_model(num_classes=25, depth_multiplier=0.1), 32)
>>> facts.params > 0 and facts.gflops > 0
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from effv2birds.errors import ConfigError

__all__ = ["ModelFacts", "model_facts"]


@dataclass(frozen=True)
class ModelFacts:
    """``params``: all parameters; ``gflops``: multiply-accumulates (GMACs) for one image at
    ``image_size`` px, the number torchvision lists as "GFLOPS" (8.37 for efficientnet_v2_s at 384)."""

    params: int
    trainable_params: int
    gflops: float
    image_size: int
    in_chans: int

    def to_dict(self) -> dict:
        return asdict(self)


def _in_chans(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ConfigError(f"{type(model).__name__} has no Conv2d layer; model_facts needs an image model")


def model_facts(model: nn.Module, image_size: int = 224, *, in_chans: int | None = None) -> ModelFacts:
    """Count parameters and measure GMACs of one forward pass at ``image_size`` (square).

    ``torch.utils.flop_counter.FlopCounterMode`` counts 2 FLOPs per multiply-accumulate; the
    result is halved to match the "GFLOPS" column of torchvision's model tables. The model is
    run once on a CPU copy-free zero batch in eval mode and its train/eval mode is restored.

    >>> from effv2birds.models import build_model
    >>> model_facts(build_model(depth_multiplier=0.1), 64).image_size
    64
    """
    from torch.utils.flop_counter import FlopCounterMode

    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"image_size={image_size!r} is not valid: use a positive integer (pixels)")
    from .factory import unwrap_model

    model = unwrap_model(model)
    chans = in_chans or _in_chans(model)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros(1, chans, image_size, image_size, device=device, dtype=dtype))
        flops = counter.get_total_flops()
    finally:
        model.train(was_training)
    return ModelFacts(params=params, trainable_params=trainable, gflops=flops / 2 / 1e9, image_size=image_size,
                      in_chans=chans)
