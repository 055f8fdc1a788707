"""NaN/inf losses in one place: skip the optimizer step, count the streak, stop with advice.

``NonFiniteGuard`` is what the training loop asks, once per micro-batch (``observe``) and once per
optimizer step (``end_step``, ``may_step``, ``skip_if``, ``should_stop``). Its counters live on the
device, so a step never waits for the GPU to say whether its loss was finite.

>>> import torch
>>> p = torch.nn.Parameter(torch.ones(2))
>>> opt = torch.optim.AdamW([p], lr=0.1, fused=True)
>>> guard = NonFiniteGuard(opt, max_streak=3)
>>> _ = guard.observe(torch.tensor(float("nan")))
>>> p.grad = torch.full((2,), float("nan"))
>>> bad = guard.end_step(lambda t, reduction: t)  # accelerator.reduce
>>> if guard.may_step(bad):
...     with guard.skip_if(bad):
...         opt.step()
>>> p.tolist(), guard.skipped, guard.should_stop()
([1.0, 1.0], 1, False)
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch

from effv2birds.errors import Effv2birdsError

__all__ = ["NonFiniteGuard", "NonFiniteLossError", "nonfinite_skipper"]


class NonFiniteLossError(Effv2birdsError, RuntimeError):
    """The loss was NaN/inf for ``max_nonfinite_steps`` optimizer steps in a row."""


def nonfinite_skipper(optimizer: Any, mixed_precision: str = "no"
                      ) -> tuple[bool, Callable[[torch.Tensor], ContextManager[None]]]:
    """How to skip an optimizer step whose loss was NaN/inf: ``(on_device, skip_if)``.

    ``on_device=True``: call ``optimizer.step()`` inside ``skip_if(flag)`` every step; with ``flag``
    1 the update is skipped on the device, so the host never waits for the GPU. Fused Adam/AdamW
    read the flag as ``found_inf`` (the mechanism torch's GradScaler uses); under fp16 the
    GradScaler itself skips steps with NaN/inf gradients. ``on_device=False`` (SGD, RMSprop, or
    optimizers restored without ``fused``): read the flag and do not call ``step()`` when it is set.

    >>> import torch
    >>> p = torch.nn.Parameter(torch.ones(2))
    >>> opt = torch.optim.AdamW([p], lr=0.1, fused=True)
    >>> p.grad = torch.full((2,), float("nan"))
    >>> on_device, skip_if = nonfinite_skipper(opt)
    >>> with skip_if(torch.ones(())):
    ...     opt.step()
    >>> on_device, p.tolist()
    (True, [1.0, 1.0])
    """
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps it
    if mixed_precision == "fp16":
        return True, lambda flag: contextlib.nullcontext()
    fused = getattr(inner, "_step_supports_amp_scaling", False) and all(g.get("fused") for g in inner.param_groups)
    if not fused:
        return False, lambda flag: contextlib.nullcontext()

    @contextlib.contextmanager
    def skip_if(flag: torch.Tensor):
        inner.grad_scale, inner.found_inf = None, flag.to(torch.float32)
        try:
            yield
        finally:
            del inner.grad_scale, inner.found_inf

    return True, skip_if


class NonFiniteGuard:
    """Skips optimizer steps whose loss was NaN/inf and decides when the run must stop.

    A step is bad when any of its micro-batches, on any process, had a non-finite loss; every
    process then skips it alike. ``counts`` holds the current streak of bad steps, the longest
    streak and the total skipped (on ``device``); ``state_dict`` saves them for a checkpoint. The
    run stops once the longest streak reaches ``max_streak``: read after every step when the
    optimizer skips on the host, else only every ``read_every`` steps (``should_stop``).

    >>> import torch
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    >>> guard = NonFiniteGuard(opt, max_streak=2)
    >>> for loss in (float("nan"), 1.0, float("inf"), float("inf")):
    ...     _ = guard.observe(torch.tensor(loss))
    ...     guard.may_step(guard.end_step(lambda t, reduction: t))  # SGD: a bad step is not taken
    False
    True
    False
    False
    >>> guard.should_stop(), guard.skipped
    (True, 3)
    >>> print(guard.error(step=4, lr=0.1, checkpoints=Path("runs/x/checkpoints")))  # doctest: +ELLIPSIS
    the loss was NaN or infinite for 2 optimizer steps in a row (step 4; max_nonfinite_steps=2); ...
    """

    def __init__(self, optimizer: Any, mixed_precision: str = "no", *, max_streak: int,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float64) -> None:
        self.optimizer = optimizer
        self.mixed_precision = mixed_precision
        self.max_streak = max_streak
        self.counts = torch.zeros(3, dtype=dtype, device=device)  # streak, longest streak, total skipped
        self._bad = torch.zeros((), dtype=torch.bool, device=device)  # the step in progress so far
        self._skipper: tuple[bool, Callable[[torch.Tensor], ContextManager[None]]] | None = None

    def _how(self) -> tuple[bool, Callable[[torch.Tensor], ContextManager[None]]]:
        # decided at first use, not in __init__: a resume loads the optimizer's param groups, their
        # "fused" flag included, from the checkpoint after the guard was made
        if self._skipper is None:
            self._skipper = nonfinite_skipper(self.optimizer, self.mixed_precision)
        return self._skipper

    @property
    def on_device(self) -> bool:
        """Whether bad steps are skipped on the device (fused Adam/AdamW, fp16) instead of the host."""
        return self._how()[0]

    def observe(self, loss: torch.Tensor) -> torch.Tensor:
        """Note one micro-batch's loss; returns its 0-d ``bad`` flag (on the device, no host read)."""
        bad = ~torch.isfinite(loss.detach())
        self._bad |= bad
        return bad

    def end_step(self, reduce: Callable[..., torch.Tensor]) -> torch.Tensor:
        """At an optimizer step: the step's flag (1.0 when any process saw a bad loss) via ``reduce``
        (``accelerator.reduce``); updates the counters on the device and starts the next step."""
        bad = reduce(self._bad.to(self.counts.dtype), reduction="sum").clamp_(max=1)
        # every epoch ends with an optimizer step, so the next epoch starts clean too
        self._bad.zero_()
        streak, longest, total = self.counts.unbind()
        streak.add_(bad).mul_(bad)  # +1 while bad, back to 0 after a good step
        torch.maximum(longest, streak, out=longest)
        total.add_(bad)
        return bad

    def may_step(self, bad: torch.Tensor) -> bool:
        """Whether to call ``optimizer.step()`` (inside ``skip_if(bad)``); reads ``bad`` only when the
        optimizer cannot skip on the device."""
        return self.on_device or not bad.item()

    def skip_if(self, bad: torch.Tensor) -> ContextManager[None]:
        """Context for ``optimizer.step()`` that makes it a no-op on the device when ``bad`` is 1."""
        return self._how()[1](bad)

    def should_stop(self, step: int | None = None, *, read_every: int = 1) -> bool:
        """Whether the longest streak reached ``max_streak``. Given the optimizer ``step``, an
        on-device guard reads its counters (a host sync) only when ``step % read_every == 0``: the
        steps in between were skipped on the device anyway. Without ``step`` it always reads."""
        if step is not None and self.on_device and step % read_every:
            return False
        return self.counts[1].item() >= self.max_streak

    @property
    def skipped(self) -> int:
        """Optimizer steps skipped so far (a host read)."""
        return int(self.counts[2].item())

    def error(self, *, step: int, lr: float, checkpoints: Path | str) -> NonFiniteLossError:
        """The error to raise when ``should_stop()``: what happened and what to try."""
        return NonFiniteLossError(
            f"the loss was NaN or infinite for {int(self.counts[1].item())} optimizer steps in a row "
            f"(step {step}; max_nonfinite_steps={self.max_streak}); those steps were "
            f"skipped and the run stopped. Try a lower lr "
            f"(now {lr}), grad_clip=1.0, mixed_precision='bf16' instead of 'fp16', or check the data. "
            f"Checkpoints so far are in {checkpoints}."
        )

    # the key is that of the trainer's counters before the guard existed, so old checkpoints load
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"nonfinite": self.counts.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counts = state["nonfinite"].to(self.counts.device)
