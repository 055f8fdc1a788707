"""Optimizers (no weight decay on norm and bias parameters) and learning-rate schedules.

The schedule is stepped once per optimizer step (not per micro-batch), warms up linearly, and
keeps all its state (including the plateau counters) in ``state_dict`` so a resumed run continues
with exactly the same learning rates.

>>> import torch
>>> from effv2birds import TrainConfig
>>> from effv2birds.training.optim import build_optimizer, build_schedule
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
>>> cfg = TrainConfig(optimizer="sgd", lr=0.1, warmup_epochs=1, epochs=4)
>>> opt = build_optimizer(model, cfg, global_batch_size=256)
>>> [g["weight_decay"] for g in opt.param_groups]
[0.0, 0.05]
>>> sched = build_schedule(opt, cfg, steps_per_epoch=10)
>>> for _ in range(10): sched.step()
>>> round(opt.param_groups[0]["lr"], 4)
0.1
"""

from __future__ import annotations

import math
from typing import Any

import torch

from effv2birds.errors import ConfigError
from effv2birds.training.nonfinite import nonfinite_skipper  # moved to nonfinite.py; importable here as before

__all__ = ["build_optimizer", "build_schedule", "nonfinite_skipper", "scaled_lr", "LRSchedule"]


def scaled_lr(config: Any, global_batch_size: int) -> float:
    """The peak learning rate: ``config.lr``, or ``lr * global_batch / 256`` with ``lr_scaling="linear"``.

    >>> from effv2birds import TrainConfig
    >>> scaled_lr(TrainConfig(lr=0.1, lr_scaling="linear"), 512)
    0.2
    """
    if config.lr_scaling == "linear":
        return config.lr * global_batch_size / 256
    return config.lr


def build_optimizer(model: torch.nn.Module, config: Any, *, global_batch_size: int,
                    fused: bool = False) -> torch.optim.Optimizer:
    """The optimizer named by ``config.optimizer`` over the trainable parameters of ``model``.

    Weight decay skips 1-d parameters (biases, norm scales/shifts): decaying them only hurts.
    ``rmsprop`` is the TensorFlow-style RMSprop of the EfficientNetV2 paper (decay 0.9, eps 1e-3).
    ``fused=True`` uses torch's fused Adam/AdamW kernels (CPU and CUDA): one kernel per step, and
    they can skip a step on the device (``optimizer.found_inf``), so the trainer never has to ask
    the GPU whether a loss was finite; other optimizers ignore it.

    >>> import torch
    >>> from effv2birds import TrainConfig
    >>> opt = build_optimizer(torch.nn.Linear(2, 2), TrainConfig(optimizer="rmsprop"), global_batch_size=64)
    >>> type(opt).__name__
    'RMSpropTF'
    """
    from timm.optim import RMSpropTF, param_groups_weight_decay

    groups = param_groups_weight_decay(model, weight_decay=config.weight_decay)
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ConfigError("the model has no trainable parameters; check freeze_backbone and the model head")
    lr = scaled_lr(config, global_batch_size)
    name = config.optimizer
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum,
                               nesterov=config.nesterov and config.momentum > 0)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, fused=fused or None)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, fused=fused or None)
    if name == "rmsprop":
        return RMSpropTF(groups, lr=lr, alpha=0.9, eps=1e-3, momentum=config.momentum)
    raise ConfigError(f"optimizer={name!r} is unknown; choose one of sgd, adamw, adam, rmsprop")


class LRSchedule:
    """Linear warmup, then ``cosine`` / ``step`` / ``plateau`` / ``constant``, per optimizer step.

    ``step()`` after every optimizer step; ``epoch_end(val_top1)`` after each evaluation (only the
    plateau schedule uses it: it multiplies the lr by ``plateau_factor`` after ``plateau_patience``
    evaluations without improvement, like ``torch.optim.lr_scheduler.ReduceLROnPlateau``).

    >>> import torch
    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> s = LRSchedule(opt, kind="plateau", total_steps=100, warmup_steps=0, steps_per_epoch=10,
    ...                plateau_patience=1, plateau_factor=0.5)
    >>> for acc in (0.5, 0.4, 0.4): s.epoch_end(acc)
    >>> opt.param_groups[0]["lr"]
    0.5
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, kind: str, total_steps: int, warmup_steps: int,
                 steps_per_epoch: int, min_lr_ratio: float = 0.0, step_epochs: int = 30,
                 step_gamma: float = 0.1, plateau_patience: int = 10, plateau_factor: float = 0.1) -> None:
        if kind not in ("cosine", "step", "plateau", "constant"):
            raise ConfigError(f"schedule={kind!r} is unknown; choose one of cosine, step, plateau, constant")
        self.optimizer = optimizer
        self.kind = kind
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, int(warmup_steps))
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.min_lr_ratio = min_lr_ratio
        self.step_epochs = step_epochs
        self.step_gamma = step_gamma
        self.plateau_patience = plateau_patience
        self.plateau_factor = plateau_factor
        self.base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        for group, lr in zip(optimizer.param_groups, self.base_lrs):
            group["initial_lr"] = lr
        self.step_count = 0
        self.plateau_scale = 1.0
        self.plateau_best = -math.inf
        self.plateau_bad_epochs = 0
        self._apply()

    def factor(self, step: int) -> float:
        """Multiplier of the base lr after ``step`` optimizer steps."""
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / span)
            return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        if self.kind == "step":
            return self.step_gamma ** (step // (self.step_epochs * self.steps_per_epoch))
        if self.kind == "plateau":
            return self.plateau_scale
        return 1.0

    def _apply(self) -> None:
        f = self.factor(self.step_count)
        for group, lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = lr * f

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def epoch_end(self, metric: float | None) -> None:
        if self.kind != "plateau" or metric is None or math.isnan(metric):
            return
        # ReduceLROnPlateau's default: an improvement must beat the best by a relative 1e-4
        if self.plateau_best == -math.inf or metric > self.plateau_best * (1 + 1e-4):
            self.plateau_best, self.plateau_bad_epochs = metric, 0
        else:
            self.plateau_bad_epochs += 1
            if self.plateau_bad_epochs > self.plateau_patience:
                self.plateau_scale *= self.plateau_factor
                self.plateau_bad_epochs = 0
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    # only what changes while training: the lengths come from the config, which a resumed run may
    # extend (more epochs or max_steps), and the schedule must then stretch to the new budget
    _STATE = ("step_count", "plateau_scale", "plateau_best", "plateau_bad_epochs")

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._STATE}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update({k: state[k] for k in self._STATE})
        self._apply()


def build_schedule(optimizer: torch.optim.Optimizer, config: Any, *, steps_per_epoch: int) -> LRSchedule:
    """The ``LRSchedule`` for ``config`` (``steps_per_epoch`` counts optimizer steps, after accumulation).

    >>> import torch
    >>> from effv2birds import TrainConfig
    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> s = build_schedule(opt, TrainConfig(schedule="cosine", warmup_epochs=0, epochs=1), steps_per_epoch=4)
    >>> for _ in range(4): s.step()
    >>> opt.param_groups[0]["lr"]
    0.0
    """
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    return LRSchedule(
        optimizer, kind=config.schedule, total_steps=total_steps,
        warmup_steps=round(config.warmup_epochs * steps_per_epoch), steps_per_epoch=steps_per_epoch,
        min_lr_ratio=config.min_lr_ratio, step_epochs=config.step_epochs, step_gamma=config.step_gamma,
        plateau_patience=config.plateau_patience, plateau_factor=config.plateau_factor,
    )
