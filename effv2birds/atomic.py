"""Atomic file writes: a file appears complete or not at all.

Every writer here puts the data into a hidden temporary file beside the target (the same folder,
so the same file system) and renames it onto the target with ``os.replace``, which is atomic: a
crash, Ctrl-C or a full disk leaves the old file (or none), never half of a new one that a later
run would trust. The module imports nothing heavy, so every layer (data, training, export) can use it.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "records" / "notes.txt"
>>> atomic_write_text(p, "hello")
>>> p.read_text(), [f.name for f in p.parent.iterdir()]
('hello', ['notes.txt'])
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "temporary_path"]


def temporary_path(path: str | os.PathLike) -> Path:
    """A fresh hidden name beside ``path`` that keeps its suffix, for writing ``path`` by rename.

    The suffix stays last because some writers look at it (``np.savez`` appends ``.npz`` to a name
    without it, ``PIL.Image.save`` picks the format from it); the process id and a random part keep
    two writers of one file, in two processes or two threads, apart.

    >>> tmp = temporary_path("runs/demo/train_hashes.npz")
    >>> tmp.parent.as_posix(), tmp.name.startswith(".train_hashes.tmp-"), tmp.suffix
    ('runs/demo', True, '.npz')
    """
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file name to write ``path`` through, for writers that want a name (safetensors
    ``save_file``, ``np.savez``, ``PIL.Image.save``, ``torch.save``).

    The parent folder is created first. When the block ends normally the file is renamed onto
    ``path``; when it raises, the temporary file is removed and ``path`` is left as it was.

    >>> import tempfile, pathlib, numpy as np
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "arrays.npz"
    >>> with atomic_path(target) as tmp:
    ...     np.savez(tmp, x=np.arange(3))
    >>> np.load(target)["x"].tolist(), [f.name for f in target.parent.iterdir()]
    ([0, 1, 2], ['arrays.npz'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):  # gone after the rename; a failed write may never have made it
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (parent folders are created).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "blob.bin"
    >>> atomic_write_bytes(p, b"\\x00\\x01"); p.read_bytes()
    b'\\x00\\x01'
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (parent folders are created).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a" / "b.txt"
    >>> atomic_write_text(p, "one"); atomic_write_text(p, "two"); p.read_text()
    'two'
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, data: Any, **dumps_kwargs: Any) -> None:
    """Write ``json.dumps(data, **dumps_kwargs)`` to ``path`` atomically.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "memo.json"
    >>> atomic_write_json(p, {"a": [1, 2]}); p.read_text()
    '{"a": [1, 2]}'
    """
    atomic_write_text(path, json.dumps(data, **dumps_kwargs))
