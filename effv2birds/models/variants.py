"""The study's named EfficientNetV2-S architecture variants, for both backends.

One table of stages per variant is the single source of truth. It is turned into
torchvision's own block configs (``MBConvConfig`` / ``FusedMBConvConfig``, fed to
``torchvision.models.EfficientNet``) or into timm's architecture-definition strings (decoded
by timm's ``decode_arch_def``), so neither backend's blocks are re-implemented here.

>>> list_variants()
['default', 'all_mbconv', 'all_fused', 'half_layers', 'four_stage']
>>> timm_arch_def("half_layers")[0]
['cn_r1_k3_s1_e1_c24_skip']
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from .errors import ModelConfigError

__all__ = ["Stage", "VARIANTS", "list_variants", "variant_stages", "torchvision_setting", "timm_arch_def",
           "check_multipliers"]


@dataclass(frozen=True)
class Stage:
    """One stage of Table 4 of the EfficientNetV2 paper: ``layers`` blocks, the first one strided."""

    block: Literal["fused", "mbconv"]
    expand: int
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    layers: int


def _f(e: int, k: int, s: int, cin: int, cout: int, n: int) -> Stage:
    return Stage("fused", e, k, s, cin, cout, n)


def _m(e: int, k: int, s: int, cin: int, cout: int, n: int) -> Stage:
    return Stage("mbconv", e, k, s, cin, cout, n)


# EfficientNetV2-S (paper Table 4; identical to torchvision's _efficientnet_conf("efficientnet_v2_s")).
_DEFAULT = (
    _f(1, 3, 1, 24, 24, 2),
    _f(4, 3, 2, 24, 48, 4),
    _f(4, 3, 2, 48, 64, 4),
    _m(4, 3, 2, 64, 128, 6),
    _m(6, 3, 1, 128, 160, 9),
    _m(6, 3, 2, 160, 256, 15),
)
_HALF_REPEATS = (1, 2, 2, 3, 4, 7)

VARIANTS: dict[str, tuple[Stage, ...]] = {
    "default": _DEFAULT,
    "all_mbconv": tuple(replace(s, block="mbconv") for s in _DEFAULT),
    "all_fused": tuple(replace(s, block="fused") for s in _DEFAULT),
    "half_layers": tuple(replace(s, layers=n) for s, n in zip(_DEFAULT, _HALF_REPEATS)),
    "four_stage": (
        _f(1, 3, 1, 24, 48, 2),
        _f(4, 3, 2, 48, 64, 4),
        _m(4, 3, 2, 64, 128, 6),
        _m(6, 3, 2, 128, 256, 15),
    ),
}
LAST_CHANNEL = 1280  # the 1x1 head conv before pooling, for every variant


def list_variants() -> list[str]:
    """Names accepted by ``build_model(variant=...)``.

    >>> "all_fused" in list_variants()
    True
    """
    return list(VARIANTS)


def variant_stages(variant: str) -> tuple[Stage, ...]:
    """The stage table of a named variant (raises ModelConfigError naming the choices).

    >>> variant_stages("four_stage")[0].out_channels
    48
    """
    try:
        return VARIANTS[variant]
    except (KeyError, TypeError):
        raise ModelConfigError(
            f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}"
        ) from None


def check_multipliers(width_multiplier: float, depth_multiplier: float) -> None:
    """Reject multipliers that would build an empty or nonsensical network."""
    for name, value in (("width_multiplier", width_multiplier), ("depth_multiplier", depth_multiplier)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 10:
            raise ModelConfigError(f"{name}={value!r} is not valid: use a number in (0, 10], e.g. 1.0 or 0.1")


def torchvision_setting(variant: str = "default", width_multiplier: float = 1.0, depth_multiplier: float = 1.0):
    """torchvision block configs and last channel count for a variant, scaled like ``_efficientnet_conf``.

    Channels are rounded to multiples of 8 (``_make_divisible``) and layer counts rounded up
    (``ceil``), exactly as torchvision's ``MBConvConfig`` does for the EfficientNet-B family.

    >>> setting, last = torchvision_setting("default", depth_multiplier=0.1)
    >>> [c.num_layers for c in setting], last
    ([1, 1, 1, 1, 1, 2], 1280)
    """
    from torchvision.models.efficientnet import FusedMBConvConfig, MBConvConfig

    check_multipliers(width_multiplier, depth_multiplier)
    ch = MBConvConfig.adjust_channels
    setting = []
    for s in variant_stages(variant):
        if s.block == "mbconv":
            setting.append(MBConvConfig(s.expand, s.kernel, s.stride, s.in_channels, s.out_channels, s.layers,
                                        width_mult=width_multiplier, depth_mult=depth_multiplier))
        else:  # FusedMBConvConfig takes no multipliers: apply the same rounding rules ourselves
            setting.append(FusedMBConvConfig(s.expand, s.kernel, s.stride, ch(s.in_channels, width_multiplier),
                                             ch(s.out_channels, width_multiplier),
                                             MBConvConfig.adjust_depth(s.layers, depth_multiplier)))
    return setting, ch(LAST_CHANNEL, width_multiplier)


def _timm_block(s: Stage) -> str:
    core = f"r{s.layers}_k{s.kernel}_s{s.stride}_e{s.expand}_c{s.out_channels}"
    if s.block == "fused":
        # timm writes an expansion-free fused block as a plain conv-bn-act with a residual ("cn ... skip")
        return f"cn_{core}_skip" if s.expand == 1 else f"er_{core}"
    # An expansion-free MBConv is timm's depthwise-separable block (torchvision also drops the 1x1 expand)
    return f"ds_r{s.layers}_k{s.kernel}_s{s.stride}_c{s.out_channels}_se0.25" if s.expand == 1 else f"ir_{core}_se0.25"


def timm_arch_def(variant: str = "default") -> list[list[str]]:
    """timm architecture-definition strings (one list per stage) for a variant of ``efficientnetv2_s``.

    >>> timm_arch_def("default")[3]
    ['ir_r6_k3_s2_e4_c128_se0.25']
    """
    return [[_timm_block(s)] for s in variant_stages(variant)]


def stem_channels(variant: str = "default") -> int:
    """Output channels of the stem conv (the first stage's input)."""
    return variant_stages(variant)[0].in_channels
