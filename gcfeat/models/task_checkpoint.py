"""The single-label task checkpoint of gcfeat before there was one format (read only).

Older runs of prostate / organ3d / alzheimer wrote ``<out>/<task>_<arch>_best.pt`` as::

    {"format": "gcfeat-task-checkpoint", "task": "organ3d", "arch": "resnet3d_18",
     "classes": [...], "input_size": [28, 28, 28], "state_dict": {...}, "meta": {...}}

Every task now writes the gcfeat checkpoint (:func:`gcfeat.models.checkpoint.save_checkpoint`
with ``task=``), and :func:`gcfeat.models.checkpoint.load_checkpoint` reads both forms.
:func:`save_task_checkpoint` is kept for callers of the old name: it writes the one format.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from gcfeat.models.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from gcfeat.models.torch_files import FORMAT as GCFEAT_FORMAT
from gcfeat.models.torch_files import TASK_FORMAT as FORMAT

__all__ = ["FORMAT", "save_task_checkpoint", "read_task_checkpoint", "is_task_checkpoint"]


def save_task_checkpoint(
    path: str | os.PathLike, model: nn.Module, task, arch: str, meta: dict | None = None, input_size=None
) -> Path:
    """Write ``model`` of ``task`` as a gcfeat checkpoint (the one format, ``task`` set)."""
    return save_checkpoint(
        path,
        model,
        classes=task.classes,
        arch=arch,
        input_size=input_size or task.input_size,
        mean=task.mean,
        std=task.std,
        meta=meta,
        task=task.name,
    )


def read_task_checkpoint(path: str | os.PathLike, task: str | None = None, map_location="cpu") -> dict:
    """The raw dict of a task's checkpoint (either form; weights under ``state_dict``).

    ``task`` (optional) must match the file's task; a missing file, a file of no task or
    another task raise :class:`CheckpointError` (a ``ValueError``).
    """
    blob = read_checkpoint(path)
    if not is_task_checkpoint(blob):
        raise CheckpointError(
            f"{path}: not a gcfeat checkpoint of a task (expected a dict with "
            f"format {FORMAT!r} or {GCFEAT_FORMAT!r} and a task name)"
        )
    if task is not None and blob["task"] != task:
        raise CheckpointError(f"{path}: a {blob['task']!r} checkpoint, expected task {task!r}")
    return blob


def is_task_checkpoint(blob) -> bool:
    """Whether a loaded file names its task (the old task form or a gcfeat file with ``task``)."""
    return isinstance(blob, dict) and blob.get("format") in (FORMAT, GCFEAT_FORMAT) and bool(blob.get("task"))
