"""Exceptions of the model layer (each message names the problem and the fix)."""

from __future__ import annotations

from effv2birds.errors import Effv2birdsError, ModelConfigError

__all__ = ["ModelConfigError", "WeightsError", "WeightsNotFoundError"]


class WeightsError(Effv2birdsError, ValueError):
    """A weights file that cannot be used: unreadable, truncated, or for another architecture."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """Pretrained weights are not on disk and could not be downloaded (e.g. no network)."""
