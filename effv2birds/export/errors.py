"""The export step's error, and the check for its optional packages (named with the pip command).

>>> require_packages("the ONNX export", ["json"])  # installed: nothing happens
>>> require_packages("the ONNX export", ["no_such_module_xyz"])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
effv2birds.export.errors.ExportError: the ONNX export needs no_such_module_xyz, which is not installed: pip install ...
"""

from __future__ import annotations

import importlib.util
from typing import Sequence

from effv2birds.errors import Effv2birdsError

__all__ = ["ExportError", "require_packages", "EXPORT_PIP"]

EXPORT_PIP = "pip install 'effv2birds[export]'"


class ExportError(Effv2birdsError, RuntimeError):
    """An export that cannot be made or that does not compute what the trained model computes."""


def require_packages(what: str, modules: Sequence[str], pip: str = EXPORT_PIP) -> None:
    """Raise ExportError naming the missing modules and ``pip`` when any of ``modules`` is not importable."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ExportError(f"{what} needs {', '.join(missing)}, which {verb} not installed: {pip}")
