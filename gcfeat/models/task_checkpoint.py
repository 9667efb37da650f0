"""The task checkpoint of the single-label tasks (prostate, organ3d, alzheimer).

Written by :func:`save_task_checkpoint` (``<out>/<task>_<arch>_best.pt``), read with
``torch.load(weights_only=True)``::

    {"format": "gcfeat-task-checkpoint", "task": "organ3d", "arch": "resnet3d_18",
     "classes": [...], "input_size": [28, 28, 28], "state_dict": {...}, "meta": {...}}

Building the model from ``arch`` is the task's job (:meth:`gcfeat.tasks.Task.load_checkpoint`);
this module only reads and writes the file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from gcfeat.models.checkpoint import CheckpointError, CheckpointInfo
from gcfeat.models.torch_files import read_torch_file

__all__ = ["FORMAT", "save_task_checkpoint", "read_task_checkpoint", "is_task_checkpoint",
           "task_checkpoint_info"]

FORMAT = "gcfeat-task-checkpoint"


def save_task_checkpoint(path: str | os.PathLike, model: nn.Module, task, arch: str,
                         meta: dict | None = None, input_size=None) -> Path:
    """Write a task checkpoint (format in the module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    blob = {"format": FORMAT, "task": task.name, "arch": arch, "classes": list(task.classes),
            "input_size": list(input_size or task.input_size), "state_dict": state,
            "meta": json.loads(json.dumps(meta or {}, default=str))}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def read_task_checkpoint(path: str | os.PathLike, task: str | None = None,
                         map_location="cpu") -> dict:
    """The task checkpoint at ``path`` as a dict (weights under ``state_dict``).

    ``task`` (optional) must match the file's task; a missing file, another format or another
    task raise :class:`CheckpointError` (a ``ValueError``).
    """
    path = Path(path)
    blob = read_torch_file(path)          # missing / empty / truncated / pickled code: named
    if not is_task_checkpoint(blob):
        raise CheckpointError(f"checkpoint {path}: not a gcfeat task checkpoint (expected a "
                              f"dict with format={FORMAT!r}; surgical checkpoints load with "
                              "gcfeat.models.load_checkpoint)")
    if task is not None and blob.get("task") != task:
        raise CheckpointError(f"checkpoint {path}: a {blob.get('task')!r} checkpoint, expected "
                              f"task {task!r}")
    return blob


def is_task_checkpoint(blob) -> bool:
    """Whether a loaded file is a task checkpoint."""
    return isinstance(blob, dict) and blob.get("format") == FORMAT


def task_checkpoint_info(path: str | os.PathLike, blob: dict) -> CheckpointInfo:
    """The :class:`~gcfeat.models.checkpoint.CheckpointInfo` of a read task checkpoint; the
    file's keys stay reachable as ``info["arch"]``, ``info["meta"]``, ..."""
    stored = {k: v for k, v in blob.items() if k != "state_dict"}
    meta = dict(stored.get("meta") or {})
    size = stored.get("input_size")
    return CheckpointInfo(path=str(path), form="task", arch=stored["arch"],
                          num_classes=len(stored["classes"]),
                          classes=tuple(stored["classes"]), dropout=0.0,
                          input_size=None if size is None else tuple(size),
                          in_channels=0, norm="", epoch=meta.get("epoch"), meta=meta,
                          task=stored["task"], stored=stored)
