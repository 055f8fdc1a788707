"""Progressive learning with adaptive regularization (EfficientNetV2, Tan & Le 2021, Sec. 4, Table 6).

Training is cut into ``M`` stages of equal length. In stage ``i`` (0-based) every scheduled value is
``start + (end - start) * i / (M - 1)``: small images with weak regularization first, large images
with strong regularization last. Image sizes are truncated to whole pixels, as in the released code
(``int(ibase + (isize - ibase) * ratio)``).

>>> from effv2birds.config import ProgressiveConfig, TrainConfig
>>> cfg = TrainConfig(epochs=8, progressive=ProgressiveConfig.from_preset("low-res"))
>>> [stage_settings(cfg, e).image_size for e in range(8)]
[32, 32, 64, 64, 96, 96, 128, 128]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from effv2birds.config import TrainConfig
from effv2birds.errors import ConfigError

__all__ = ["StageSettings", "stage_of_epoch", "stage_settings", "schedule_table"]


@dataclass(frozen=True)
class StageSettings:
    """What one epoch trains with. Without progressive learning, the TrainConfig's own values."""

    stage: int
    image_size: int
    randaug_magnitude: float
    mixup_alpha: float
    dropout: float | None
    stochastic_depth: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def stage_of_epoch(epoch: int, epochs: int, stages: int) -> int:
    """The 0-based stage of 0-based ``epoch`` when ``epochs`` are cut into ``stages`` equal parts.

    >>> [stage_of_epoch(e, 10, 4) for e in range(10)]
    [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    """
    if epoch < 0:
        raise ConfigError(f"epoch={epoch} must be >= 0")
    return min(stages - 1, epoch * stages // epochs)


def _lerp(start: float, end: float, stage: int, stages: int) -> float:
    return start + (end - start) * stage / (stages - 1)


def stage_settings(config: TrainConfig, epoch: int) -> StageSettings:
    """Image size and regularization for 0-based ``epoch`` of a run with ``config``.

    >>> from effv2birds.config import ProgressiveConfig, TrainConfig
    >>> cfg = TrainConfig(epochs=4, progressive=ProgressiveConfig.from_preset("paper-s"))
    >>> s = stage_settings(cfg, 3)
    >>> (s.image_size, s.randaug_magnitude, round(s.dropout, 3))
    (300, 15.0, 0.3)
    """
    prog = config.progressive
    if not prog.enabled:
        return StageSettings(0, config.image_size, config.randaug_magnitude, config.mixup_alpha,
                             config.dropout, config.stochastic_depth)
    stage = stage_of_epoch(epoch, config.epochs, prog.stages)
    sd = config.stochastic_depth
    if prog.stochastic_depth_start is not None and prog.stochastic_depth_end is not None:
        sd = _lerp(prog.stochastic_depth_start, prog.stochastic_depth_end, stage, prog.stages)
    return StageSettings(
        stage=stage,
        image_size=int(_lerp(prog.size_start, prog.size_end, stage, prog.stages)),
        randaug_magnitude=_lerp(prog.randaug_start, prog.randaug_end, stage, prog.stages),
        mixup_alpha=_lerp(prog.mixup_start, prog.mixup_end, stage, prog.stages),
        dropout=_lerp(prog.dropout_start, prog.dropout_end, stage, prog.stages),
        stochastic_depth=sd,
    )


def schedule_table(config: TrainConfig) -> list[dict]:
    """One row per epoch (1-based ``epoch``) with the scheduled values: for records and plots."""
    return [{"epoch": e + 1, **stage_settings(config, e).to_dict()} for e in range(config.epochs)]
