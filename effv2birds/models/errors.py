"""Exceptions of the model layer (each message names the problem and the fix)."""

from __future__ import annotations

__all__ = ["ModelConfigError", "WeightsError", "WeightsNotFoundError"]


class ModelConfigError(ValueError):
    """An unknown model name, backend or variant, or a combination a backend cannot build."""


class WeightsError(ValueError):
    """A weights file that cannot be used: unreadable, truncated, or for another architecture."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """Pretrained weights are not on disk and could not be downloaded (e.g. no network)."""
