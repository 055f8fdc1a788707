"""The exceptions of effv2birds, all under one base class, and the value checks that raise them.

Every error effv2birds raises for bad input (a config value, a data folder, a weights file, a
checkpoint, an export) is an :class:`Effv2birdsError` whose message names the problem and the
fix, so a program (or the ``effv2birds`` command) catches one type. Range checks of values live
here once (:func:`check_number`) and raise :class:`ConfigError`.

>>> try:
...     check_number("TrainConfig.lr", -1.0, low=0.0)
... except Effv2birdsError as exc:
...     print(exc)
TrainConfig.lr=-1.0 is not valid: a number > 0
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["Effv2birdsError", "ConfigError", "ModelConfigError", "check_number"]


class Effv2birdsError(Exception):
    """Base of every effv2birds error about its input; the message says what to change."""


class ConfigError(Effv2birdsError, ValueError):
    """A config value that is not allowed; the message names field, value and choices."""


class ModelConfigError(ConfigError):
    """An unknown model name or variant, or a combination a backend cannot build."""


def check_number(name: str, value: Any, *, low: float = 0.0, high: float | None = None, low_ok: bool = False,
                 integer: bool = False, allow_none: bool = False, error: type[Exception] = ConfigError) -> None:
    """Raise ``error`` unless ``value`` is a finite number in the range (``low`` included when
    ``low_ok``; ``high`` never included), an integer when ``integer``, or None when ``allow_none``.

    >>> check_number("dropout", 0.2, low=0.0, high=1.0, low_ok=True)
    >>> check_number("num_classes", 0, low=1, low_ok=True, integer=True)
    Traceback (most recent call last):
    ...
    effv2birds.errors.ConfigError: num_classes=0 is not valid: an integer >= 1
    """
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (not integer or isinstance(value, int))
    ok = ok and (value >= low if low_ok else value > low) and (high is None or value < high)
    if not ok:
        kind = "an integer" if integer else "a number"
        if high is not None:
            what = f"{kind} in {'[' if low_ok else '('}{low:g}, {high:g})"
        else:
            what = f"{kind} {'>=' if low_ok else '>'} {low:g}"
        raise error(f"{name}={value!r} is not valid: {what}" + (" or None" if allow_none else ""))
