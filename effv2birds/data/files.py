"""Image paths from what a user types: files, folders (searched recursively) and glob patterns.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp()); (d / "a").mkdir(); (d / "a" / "x.jpg").touch(); (d / "y.png").touch()
>>> [p.relative_to(d).as_posix() for p in expand_image_paths([d])]
['a/x.jpg', 'y.png']
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable

from .decode import IMAGE_EXTENSIONS

__all__ = ["expand_image_paths"]

_GLOB_CHARS = frozenset("*?[")


def _folder_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def expand_image_paths(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given (any extension: a misnamed file is still tried), image files under folders
    (recursively, sorted), glob matches (``**`` recursive, sorted); in the given order, each once.

    A path that does not exist and a folder or glob with no images raise ``FileNotFoundError``
    naming it.

    >>> expand_image_paths(["/nonexistent/*.jpg"])                    # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: no image files match /nonexistent/*.jpg; ...
    """
    out: list[Path] = []
    seen: set[Path] = set()
    for item in items:
        text = os.path.expanduser(str(item))
        path = Path(text)
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = _folder_images(path)
            if not found:
                raise FileNotFoundError(f"folder {item} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        elif _GLOB_CHARS & set(text):
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            found = [p for m in matches for p in ([m] if m.is_file() else _folder_images(m))]
            if not found:
                raise FileNotFoundError(f"no image files match {item}; check the pattern (quote it to let "
                                        "effv2birds expand it, ** for sub-folders)")
        else:
            raise FileNotFoundError(f"image {item} does not exist; pass image files, folders or glob patterns")
        for p in found:
            if p not in seen:
                seen.add(p)
                out.append(p)
    return out
