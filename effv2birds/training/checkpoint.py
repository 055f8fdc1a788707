"""Atomic ``accelerate`` checkpoints: written completely or not at all, the last k and the best kept.

A checkpoint is ``run_dir/checkpoints/step-00000123/``: what ``Accelerator.save_state`` writes
(model, optimizer, grad scaler, every process's RNG states, registered objects such as the schedule
and the trainer's counters) plus ``trainer_state.json`` (a readable summary). It is first written to
``checkpoints/.tmp-step-.../`` and then renamed into place with ``os.replace``, which is atomic: a
process killed while saving leaves a ``.tmp-*`` folder that every loader ignores, and the previous
checkpoint untouched.

>>> from effv2birds.training.checkpoint import checkpoint_name, list_checkpoints
>>> checkpoint_name(42)
'step-00000042'
>>> list_checkpoints("/nonexistent")
[]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

from effv2birds.errors import Effv2birdsError
from effv2birds.run_files import CHECKPOINTS

__all__ = [
    "CheckpointError",
    "checkpoint_name",
    "checkpoint_problem",
    "list_checkpoints",
    "resolve_resume",
    "save_checkpoint",
    "load_checkpoint",
    "prune_checkpoints",
]

_NAME = re.compile(r"^step-(\d{8,})$")
STATE_FILE = "trainer_state.json"


class CheckpointError(Effv2birdsError, ValueError):
    """A checkpoint to resume from is missing or incomplete; the message says what to pass instead."""


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint taken after ``step`` optimizer steps."""
    return f"step-{step:08d}"


def _is_complete(path: Path) -> bool:
    return path.is_dir() and (path / STATE_FILE).is_file()


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root`` (a ``checkpoints/`` folder), oldest first.

    Temporary (``.tmp-*``) and partially written folders are never listed.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and _is_complete(p)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def checkpoint_problem(path: str | Path) -> str | None:
    """Why a complete-looking checkpoint cannot be loaded (a truncated or corrupt file), else ``None``.

    Cheap: reads the safetensors headers (which record every tensor's extent, so a cut file fails) and
    the zip directory at the end of each ``torch.save`` file, not the tensors.

    >>> checkpoint_problem("/nonexistent")
    'not a complete checkpoint (no trainer_state.json)'
    """
    from safetensors import safe_open

    path = Path(path)
    if not _is_complete(path):
        return f"not a complete checkpoint (no {STATE_FILE})"
    for file in sorted(path.rglob("*")):
        try:
            if file.suffix == ".safetensors":
                with safe_open(str(file), framework="pt"):
                    pass
            elif file.suffix in (".bin", ".pt", ".pth") and not zipfile.is_zipfile(file):
                return f"{file.name} is truncated or corrupt (not a complete torch.save archive)"
        except Exception as exc:  # safetensors raises its own error type for a cut or garbled header
            return f"{file.name} is truncated or corrupt ({exc})"
    return None


def resolve_resume(resume: str, run_dir: str | Path) -> Path | None:
    """The checkpoint folder that ``resume`` names: ``"latest"`` (newest loadable one in
    ``run_dir/checkpoints``, ``None`` when there is none yet, so a fresh run starts) or a path to a
    checkpoint folder. With ``"latest"`` a corrupt newest checkpoint (a disk filled up, a copy cut
    short) is passed over with a warning naming it, and the newest loadable one before it is used.

    >>> resolve_resume("latest", "/nonexistent") is None
    True
    """
    if resume == "latest":
        found = list_checkpoints(Path(run_dir) / CHECKPOINTS)
        for candidate in reversed(found):
            problem = checkpoint_problem(candidate)
            if problem is None:
                return candidate
            warnings.warn(f"checkpoint {candidate} cannot be loaded: {problem}; trying the one before it",
                          stacklevel=2)
        if found:
            raise CheckpointError(
                f"no checkpoint in {Path(run_dir) / CHECKPOINTS} can be loaded (all truncated or corrupt); "
                "start a new run with another output_dir, or resume=PATH from a copy of the run"
            )
        return None
    path = Path(resume).expanduser()
    if path.is_dir() and not _is_complete(path) and list_checkpoints(path / CHECKPOINTS):
        return list_checkpoints(path / CHECKPOINTS)[-1]  # a run directory: its newest checkpoint
    if path.is_dir() and not _is_complete(path) and list_checkpoints(path):
        return list_checkpoints(path)[-1]  # a checkpoints/ folder
    if not _is_complete(path):
        why = "does not exist" if not path.exists() else f"is not a complete checkpoint (no {STATE_FILE})"
        raise CheckpointError(
            f"resume={resume!r}: {path} {why}; pass a folder like RUN_DIR/checkpoints/step-00000100, "
            "a run directory, or 'latest'"
        )
    return path


def save_checkpoint(accelerator: Any, root: str | Path, step: int, summary: dict[str, Any]) -> Path:
    """Save the accelerator state as ``root/step-NNNNNNNN`` atomically (call on every process).

    ``summary`` (JSON-able) is written as ``trainer_state.json``; the exact training state belongs in
    objects registered with ``accelerator.register_for_checkpointing``.

    >>> import tempfile, torch
    >>> from accelerate import Accelerator
    >>> acc = Accelerator(cpu=True)
    >>> model = acc.prepare(torch.nn.Linear(2, 2))
    >>> root = tempfile.mkdtemp()
    >>> path = save_checkpoint(acc, root, 7, {"epoch": 1})
    >>> [p.name for p in list_checkpoints(root)], load_checkpoint(acc, path)["epoch"]
    (['step-00000007'], 1)
    """
    root = Path(root)
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{final.name}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # left over by a crash: never complete
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(summary, indent=2, default=float) + "\n")
        old = root / f".old-{final.name}"
        if final.exists():  # the same step saved again (e.g. after evaluation): swap, never delete first
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, path: str | Path) -> dict[str, Any]:
    """Restore everything ``save_checkpoint`` saved; returns the ``trainer_state.json`` summary."""
    path = Path(path)
    if not _is_complete(path):
        raise CheckpointError(f"{path} is not a complete checkpoint (no {STATE_FILE}); pick another one")
    accelerator.load_state(str(path))
    return json.loads((path / STATE_FILE).read_text())


def prune_checkpoints(root: str | Path, keep_last: int, keep: set[str] | frozenset[str] = frozenset()) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete checkpoints, never those named in ``keep``
    (the best one). Returns the deleted folders.

    >>> prune_checkpoints("/nonexistent", keep_last=2)
    []
    """
    found = list_checkpoints(root)
    doomed = [p for p in found[: max(0, len(found) - keep_last)] if p.name not in keep]
    for path in doomed:
        # rename first so a crash mid-delete leaves a folder that loaders ignore
        trash = path.with_name(f".tmp-del-{path.name}")
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
    return doomed
