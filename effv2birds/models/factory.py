"""``build_model``: EfficientNetV2-S (and the study's variants) from torchvision or timm, one interface.

>>> from effv2birds.models import build_model
>>> model = build_model(num_classes=25, depth_multiplier=0.1)
>>> model(torch.zeros(2, 3, 32, 32)).shape
torch.Size([2, 25])
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import torch
from torch import nn

from effv2birds.errors import check_number
from effv2birds.model_ids import (TIMM_ARCHS, TORCHVISION_ARCHS, ModelSpec, model_ids,
                                  parse_model_id)

from .errors import ModelConfigError
from .variants import check_multipliers, stem_channels, timm_arch_def, torchvision_setting, variant_stages

__all__ = ["ModelSpec", "build_model", "list_models", "resolve_model_name", "get_classifier",
           "set_regularization", "set_bn_momentum", "unwrap_model", "DEFAULT_DROPOUT", "DEFAULT_STOCHASTIC_DEPTH"]

# timm archs that share efficientnetv2_s's stage table, so the study's variants apply to them
_TIMM_VARIANT_ARCHS = ("efficientnetv2_s", "tf_efficientnetv2_s")
# torchvision's efficientnet_v2_s defaults; used for timm too so that the keywords mean the same thing
DEFAULT_DROPOUT = 0.2
DEFAULT_STOCHASTIC_DEPTH = 0.2


def list_models(pretrained: bool = False) -> list[str]:
    """Model ids ``build_model`` accepts (``pretrained=True``: only those with ImageNet weights).

    >>> list_models()[:2]
    ['torchvision/efficientnet_v2_s', 'timm/efficientnetv2_s']
    """
    if not pretrained:
        return model_ids()
    import timm

    tagged = sorted({n for a in TIMM_ARCHS for n in timm.list_pretrained(f"{a}.*")})
    return [f"torchvision/{a}" for a in TORCHVISION_ARCHS] + [f"timm/{n}" for n in tagged]


def resolve_model_name(name: str | None = None, backend: str | None = None) -> ModelSpec:
    """The ModelSpec of a model id (``effv2birds.model_ids.parse_model_id``); old spellings give a
    FutureWarning, a ModelConfigError names the choices.

    >>> resolve_model_name("timm/tf_efficientnetv2_s").backend
    'timm'
    """
    return parse_model_id(name, backend)


def _check_rate(name: str, value: float | None) -> None:
    check_number(name, value, low=0.0, high=1.0, low_ok=True, allow_none=True, error=ModelConfigError)


def _check_int(name: str, value: Any, lowest: int) -> None:
    check_number(name, value, low=lowest, low_ok=True, integer=True, error=ModelConfigError)


def build_model(
    name: str | None = None,
    *,
    backend: str | None = None,
    num_classes: int = 1000,
    pretrained: bool = False,
    weights: str | os.PathLike | None = None,
    variant: str = "default",
    dropout: float | None = None,
    stochastic_depth: float | None = None,
    bn_momentum: float | None = None,
    in_chans: int = 3,
    width_multiplier: float = 1.0,
    depth_multiplier: float = 1.0,
    zero_init_residual: bool = False,
) -> nn.Module:
    """Build EfficientNetV2-S (or a study variant) from torchvision or timm.

    Args:
        name: a model id, ``"torchvision/efficientnet_v2_s"`` (default) or a timm one such as
            ``"timm/tf_efficientnetv2_s"`` (see ``list_models()``); None: the default.
        backend: deprecated (the id names the backend); old spellings give a FutureWarning.
        num_classes: classifier outputs. With pretrained weights and ``num_classes != 1000`` the
            backbone is loaded and a fresh head is created.
        pretrained: load ImageNet weights (from the local caches, else downloaded).
        weights: a local weights file (torchvision ``.pth`` or timm ``.safetensors``/``.pth``, or
            one saved from a model built here, of any variant); implies ``pretrained``.
        variant: one of ``list_variants()``.
        dropout: classifier dropout; None = 0.2 on both backends.
        stochastic_depth: drop-path rate of the last block (linear in depth); None = 0.2.
        bn_momentum: BatchNorm running-statistics momentum, in PyTorch's convention
            (``running = (1 - m) * running + m * batch``; TensorFlow's decay 0.99 is ``m = 0.01``);
            None keeps the backends' default, 0.1. Used only in training mode (see ``set_bn_momentum``).
        in_chans: input channels (1 for grey images; pretrained stem weights are summed over RGB).
        width_multiplier, depth_multiplier: scale channels (rounded to multiples of 8) and
            layers per stage (rounded up), as torchvision/timm do for the EfficientNet family.
        zero_init_residual: start every residual block as the identity and the classifier at zero
            (see ``zero_init_residual_``); ignored when weights are loaded.

    >>> m = build_model("timm/efficientnetv2_s", num_classes=10, variant="all_fused", depth_multiplier=0.1)
    >>> m(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    spec = resolve_model_name(name, backend)
    variant_stages(variant)  # validates the name
    check_multipliers(width_multiplier, depth_multiplier)
    _check_int("num_classes", num_classes, 1)
    _check_int("in_chans", in_chans, 1)
    _check_rate("dropout", dropout)
    _check_rate("stochastic_depth", stochastic_depth)
    _check_bn_momentum(bn_momentum)
    dropout = DEFAULT_DROPOUT if dropout is None else float(dropout)
    stochastic_depth = DEFAULT_STOCHASTIC_DEPTH if stochastic_depth is None else float(stochastic_depth)
    use_weights = bool(pretrained) or weights is not None
    if weights is None and pretrained and (variant != "default" or width_multiplier != 1.0 or depth_multiplier != 1.0):
        # (a weights= file may hold any architecture, e.g. a trained variant; its shapes are checked on load)
        raise ModelConfigError(
            f"ImageNet weights exist only for variant='default' with width_multiplier=1.0 and "
            f"depth_multiplier=1.0 (got variant={variant!r}, width_multiplier={width_multiplier}, "
            f"depth_multiplier={depth_multiplier}); train this architecture from scratch (pretrained=False), "
            "or pass weights=FILE saved from a model of this architecture"
        )

    weights_file = None
    if use_weights:  # find the file first, so a missing file fails before the model is built
        from .weights import resolve_weights_file

        weights_file = resolve_weights_file(spec, weights)
    if spec.backend == "torchvision":
        model = _build_torchvision(variant, num_classes, dropout, stochastic_depth, in_chans,
                                   width_multiplier, depth_multiplier)
    else:
        model = _build_timm(spec, variant, num_classes, dropout, stochastic_depth, in_chans,
                            width_multiplier, depth_multiplier)
    if bn_momentum is not None:
        set_bn_momentum(model, bn_momentum)
    if weights_file is not None:
        from .weights import fit_state_dict, read_state_dict

        fit_state_dict(model, read_state_dict(weights_file), source=f"weights file {str(weights_file)!r}")
    elif zero_init_residual:
        zero_init_residual_(model)
    return model


def zero_init_residual_(model: nn.Module) -> int:
    """Make every residual block start as the identity, and the classifier output zero; returns the
    number of blocks changed.

    The last BatchNorm of each block that has a skip connection gets weight 0 (Goyal et al. 2017,
    "bag of tricks"), and the classifier's weight and bias are zeroed (first loss = ln(classes)).
    With the default init the residual stream grows with depth: EfficientNetV2-S's ~35 residual
    blocks make its first logits large (loss ~4.7 for 25 classes) and from-scratch training on a few
    thousand small photos barely moves; started as the identity it learns from the first epoch.

    >>> model = build_model(num_classes=25, depth_multiplier=0.1)
    >>> zero_init_residual_(model) > 0
    True
    """
    from torchvision.models.efficientnet import FusedMBConv, MBConv

    changed = 0
    for module in model.modules():
        norm = None
        if isinstance(module, (MBConv, FusedMBConv)) and module.use_res_connect:
            norm = module.block[-1][1]  # Conv2dNormActivation(conv, norm[, act]) that ends the branch
        elif getattr(module, "has_skip", False):  # timm's blocks: the branch ends in its last bnN
            norm = next((getattr(module, n) for n in ("bn3", "bn2", "bn1") if hasattr(module, n)), None)
        if isinstance(norm, nn.modules.batchnorm._NormBase) and norm.weight is not None:
            nn.init.zeros_(norm.weight)
            changed += 1
    head = get_classifier(model)
    for param in head.parameters():
        nn.init.zeros_(param)
    return changed


def _build_torchvision(variant, num_classes, dropout, stochastic_depth, in_chans, width, depth) -> nn.Module:
    from torchvision.models.efficientnet import EfficientNet

    setting, last_channel = torchvision_setting(variant, width, depth)
    # the same norm layer as torchvision.models.efficientnet_v2_s
    model = EfficientNet(setting, dropout, stochastic_depth_prob=stochastic_depth, num_classes=num_classes,
                         norm_layer=partial(nn.BatchNorm2d, eps=1e-03), last_channel=last_channel)
    if in_chans != 3:
        # torchvision hard-codes an RGB stem; swap in the same conv for in_chans, initialised like the rest
        old = model.features[0][0]
        new = nn.Conv2d(in_chans, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
        nn.init.kaiming_normal_(new.weight, mode="fan_out")
        model.features[0][0] = new
    return model


def _build_timm(spec, variant, num_classes, dropout, stochastic_depth, in_chans, width, depth) -> nn.Module:
    import timm

    common = dict(num_classes=num_classes, drop_rate=dropout, drop_path_rate=stochastic_depth, in_chans=in_chans)
    if variant == "default":
        return timm.create_model(spec.arch, pretrained=False, channel_multiplier=width, depth_multiplier=depth,
                                 **common)
    if spec.arch not in _TIMM_VARIANT_ARCHS:
        raise ModelConfigError(
            f"variant={variant!r} is defined on EfficientNetV2-S's stage table; timm's {spec.arch} has a different "
            f"one, so it supports only variant='default'. Use the variants with 'torchvision/efficientnet_v2_s', "
            f"'timm/efficientnetv2_s' or 'timm/tf_efficientnetv2_s'"
        )
    from timm.models._efficientnet_builder import (BN_EPS_TF_DEFAULT, decode_arch_def, resolve_act_layer,
                                                   resolve_bn_args, round_channels)
    from timm.models.efficientnet import _create_effnet

    # mirrors timm's _gen_efficientnetv2_s and its tf_ registration, with the variant's arch_def
    extra: dict[str, Any] = {}
    if spec.arch.startswith("tf_"):
        extra.update(bn_eps=BN_EPS_TF_DEFAULT, pad_type="same")
    round_chs_fn = partial(round_channels, multiplier=width)
    model_kwargs = dict(
        block_args=decode_arch_def(timm_arch_def(variant), depth),
        num_features=round_chs_fn(1280),
        stem_size=stem_channels(variant),
        round_chs_fn=round_chs_fn,
        norm_layer=partial(nn.BatchNorm2d, **resolve_bn_args(extra)),
        act_layer=resolve_act_layer(extra, "silu"),
        **extra,
        **common,
    )
    return _create_effnet(spec.arch, False, **model_kwargs)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside DDP/``torch.compile``/accelerate wrappers."""
    seen = 0
    while seen < 8:
        seen += 1
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            break
    return model


def _is_timm(model: nn.Module) -> bool:
    return hasattr(model, "get_classifier") and hasattr(model, "conv_stem")


def get_classifier(model: nn.Module) -> nn.Module:
    """The final classification head (train only its parameters for a linear probe).

    torchvision: ``model.classifier`` (Dropout + Linear); timm: its ``get_classifier()`` (Linear).

    >>> head = get_classifier(build_model(num_classes=5, depth_multiplier=0.1))
    >>> [p.shape for p in head.parameters()][0]
    torch.Size([5, 1280])
    """
    model = unwrap_model(model)
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    head = getattr(model, "classifier", None)
    if isinstance(head, nn.Module):
        return head
    raise ModelConfigError(
        f"{type(model).__name__} has no classifier head this package knows; use a model from build_model()"
    )


def _check_bn_momentum(momentum: Any) -> None:
    # 0 would freeze the running statistics at their init (mean 0, var 1): evaluation silently wrong
    check_number("bn_momentum", momentum, low=0.0, high=1.0, allow_none=True, error=ModelConfigError)


def set_bn_momentum(model: nn.Module, momentum: float) -> int:
    """Set the running-statistics momentum of every BatchNorm layer in place; returns how many.

    PyTorch's convention: ``running = (1 - momentum) * running + momentum * batch`` (TensorFlow's
    EfficientNets use decay 0.99, i.e. ``momentum=0.01``). A smaller momentum averages the
    statistics that evaluation uses over more steps: smoother with small batches, slower to follow
    the weights early in training.

    >>> m = build_model(num_classes=3, depth_multiplier=0.1)
    >>> set_bn_momentum(m, 0.01) > 0
    True
    >>> {b.momentum for b in m.modules() if isinstance(b, nn.BatchNorm2d)}
    {0.01}
    """
    _check_bn_momentum(momentum)
    norms = [m for m in unwrap_model(model).modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ModelConfigError(f"{type(model).__name__} has no BatchNorm layers whose momentum could be set")
    for norm in norms:
        norm.momentum = float(momentum)
    return len(norms)


def _drop_path_blocks(model: nn.Module) -> list[nn.Module]:
    """The residual blocks, in depth order, whose drop-path rate grows linearly with depth."""
    from torchvision.models.efficientnet import FusedMBConv, MBConv

    if _is_timm(model):
        return [blk for stage in model.blocks for blk in stage]
    return [m for m in model.modules() if isinstance(m, (MBConv, FusedMBConv))]


def set_regularization(model: nn.Module, *, dropout: float | None = None,
                       stochastic_depth: float | None = None) -> None:
    """Change classifier dropout and/or the drop-path rate of a built model in place.

    Used by progressive learning between stages. The drop-path rate is spread over the blocks
    exactly as at build time (block ``i`` of ``n`` gets ``rate * i / n``). ``None`` leaves a value.

    >>> m = build_model(num_classes=3, depth_multiplier=0.1)
    >>> set_regularization(m, dropout=0.5, stochastic_depth=0.3)
    >>> m.classifier[0].p
    0.5
    """
    _check_rate("dropout", dropout)
    _check_rate("stochastic_depth", stochastic_depth)
    model = unwrap_model(model)
    timm_model = _is_timm(model)
    if dropout is not None:
        if timm_model:
            model.drop_rate = float(dropout)
        else:
            drops = [m for m in get_classifier(model).modules() if isinstance(m, nn.Dropout)]
            if not drops:
                raise ModelConfigError(f"{type(model).__name__} has no classifier dropout to change")
            for m in drops:
                m.p = float(dropout)
    if stochastic_depth is not None:
        blocks = _drop_path_blocks(model)
        if not blocks:
            raise ModelConfigError(f"{type(model).__name__} has no residual blocks with drop-path")
        for i, blk in enumerate(blocks):
            rate = float(stochastic_depth) * i / len(blocks)
            if timm_model:
                from timm.layers import DropPath

                # timm builds nn.Identity where the rate was 0: swap in a DropPath
                if isinstance(blk.drop_path, DropPath):
                    blk.drop_path.drop_prob = rate
                elif hasattr(blk, "drop_path"):
                    blk.drop_path = DropPath(rate) if rate > 0 else nn.Identity()
            else:
                blk.stochastic_depth.p = rate

