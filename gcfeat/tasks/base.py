"""The :class:`Task` (data, model, classes, target layer, normalisation and every default of one
task) and the registry (:func:`register_task`, :func:`get_task`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from gcfeat import config
from gcfeat.errors import GcfeatError
from gcfeat.models.checkpoint import CheckpointInfo, load_checkpoint, read_checkpoint

__all__ = [
    "Task",
    "TaskError",
    "register_task",
    "unregister_task",
    "get_task",
    "task_names",
    "tasks",
    "load_task_checkpoint",
]


class TaskError(GcfeatError):
    """An unknown task, or a task argument (arch, split, layer) the task does not have."""


@dataclass(frozen=True)
class Task:
    """Everything a CLI needs about one task (see the module docstring)."""

    name: str
    classes: tuple[str, ...]
    kind: str  # "multilabel" | "multiclass" | "binary"
    spatial_dims: int  # 2 | 3
    input_size: tuple[int, ...]  # spatial size (H, W) or (D, H, W)
    in_channels: int
    default_arch: str
    archs: tuple[str, ...]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    intensity: str  # one line: how intensities are scaled
    splits: tuple[str, ...]
    _model: Callable[..., nn.Module] = field(repr=False)
    _dataset: Callable[..., Any] = field(repr=False)
    _target: Callable[[nn.Module], nn.Module] = field(repr=False)
    _synthetic: Callable[..., Path] = field(repr=False)
    defaults: dict = field(default_factory=dict)  # training defaults: epochs, lr, batch_size, ...
    # --- every other default of the task (workflows and CLIs read them from here) ----------
    #: CAM method and target module name (None: ``_target``, the task's own choice).
    cam_method: str = config.CAM_METHOD
    layer: str | None = None
    box_threshold: float = config.BOX_THRESHOLD
    min_area: float = config.MIN_AREA
    pred_threshold: float = config.PRED_THRESHOLD
    #: ``{class id: box mode}`` overriding the box mode (surgical: tissue -> one union box).
    class_modes: dict = field(default_factory=dict)
    #: ``"boxes"`` (per-frame GT boxes, every predicted class explained) or ``"mask"``
    #: (a ``gt_mask`` per sample, one class explained per sample).
    ground_truth: str = "mask"
    gt_name: str = "ground-truth"  # what gt_mask marks (titles, printouts)
    display_channel: int = 0  # image channel shown under the heatmap
    deletion_baseline: str = "zeros"
    eval_split: str = "test"  # split of tune / inspect / evaluate
    #: demo sizes: n (synthetic training items), arch, epochs, batch_size, lr, limit, n_steps
    demo: dict = field(default_factory=dict)
    #: ``(n, seed) -> kwargs`` of :meth:`write_synthetic` for ``n`` training items
    _synthetic_kwargs: Callable[[int, int], dict] | None = field(default=None, repr=False)
    #: checkpoint loader ``(path, task, map_location) -> (model, info)``; None: task format
    _load: Callable[..., tuple] | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def activation(self) -> str:
        """``"sigmoid"`` for multilabel, ``"softmax"`` otherwise (binary = 2-way softmax)."""
        return "sigmoid" if self.kind == "multilabel" else "softmax"

    def build_model(self, arch: str | None = None, **kwargs) -> nn.Module:
        """A fresh (untrained) model; ``arch`` one of ``self.archs`` (default ``default_arch``)."""
        arch = arch or self.default_arch
        if arch not in self.archs:
            raise TaskError(f"--arch {arch!r} is not a {self.name} model; expected one of {list(self.archs)}")
        return self._model(arch, **kwargs)

    def build_dataset(self, root: str | os.PathLike, split: str = "train", **kwargs):
        """The Dataset of ``split`` under ``root`` (files written by the real source or by
        :meth:`write_synthetic`)."""
        if split not in self.splits:
            raise TaskError(
                f"split {split!r} is not a {self.name} split; expected one of {list(self.splits)}"
            )
        return self._dataset(root, split, **kwargs)

    def target_layer(self, model: nn.Module, name: str | None = None) -> nn.Module:
        """The CAM target module of ``model``: the task's default, or the submodule ``name``
        (e.g. ``"layer3"``, ``"layer4.1"``; a ``ValueError`` names the top-level modules if
        there is none)."""
        if name is None:
            return self._target(model)
        try:
            return model.get_submodule(name)
        except AttributeError:
            raise TaskError(
                f"--layer {name!r}: the {self.name} model has no such module; its "
                f"top-level modules: {[n for n, _ in model.named_children()]}"
            ) from None

    def load_checkpoint(
        self, path: str | os.PathLike, map_location="cpu"
    ) -> tuple[nn.Module, CheckpointInfo]:
        """``(model in eval mode, info)`` from a checkpoint of this task, through the one loader
        (:func:`gcfeat.models.checkpoint.load_checkpoint`: the gcfeat format of every task, the
        old task checkpoints, the original surgical forms; every check). A file written for
        another task, or with another class count, is a ``CheckpointError``."""
        if self._load is not None:
            return self._load(path, self, map_location)
        return load_checkpoint(
            path,
            task=self.name,
            num_classes=self.num_classes,
            build=self._build_for_checkpoint,
            map_location=map_location,
        )

    def _build_for_checkpoint(self, arch: str, task: str | None) -> nn.Module:
        """The loader's model builder: a fresh ``arch`` of this task."""
        return self.build_model(arch)

    @property
    def val_split(self) -> str:
        """The split training validates on (``val``, else ``test``)."""
        return "val" if "val" in self.splits else "test"

    def synthetic_kwargs(self, n: int, seed: int = 0) -> dict:
        """Arguments of :meth:`write_synthetic` for ``n`` training items."""
        if self._synthetic_kwargs is None:
            raise TaskError(f"task {self.name!r}: no synthetic data size rule")
        return self._synthetic_kwargs(n, seed)

    def demo_paths(self) -> dict[str, str]:
        """What ``scripts/demo --task <name>`` writes: ``{"data", "checkpoint", "out"}``."""
        root = f"runs/demo_{self.name}"
        arch = self.demo.get("arch", "model")
        return {"data": f"{root}/data", "checkpoint": f"{root}/{self.name}_{arch}_best.pt", "out": root}

    def write_synthetic(self, out: str | os.PathLike, **kwargs) -> Path:
        """Write the task's synthetic dataset under ``out`` (real file format)."""
        return self._synthetic(out, **kwargs)


# ----------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, Task] = {}


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Add ``task`` to the registry (every workflow and ``--task`` then knows it)."""
    if task.name in _REGISTRY and not replace:
        raise TaskError(f"task {task.name!r} is registered already (pass replace=True)")
    _REGISTRY[task.name] = task
    return task


def unregister_task(name: str) -> None:
    """Remove a task added with :func:`register_task` (tests)."""
    _REGISTRY.pop(name, None)


def get_task(name: str | Task) -> Task:
    """The :class:`Task` called ``name`` (a Task is returned as it is)."""
    if isinstance(name, Task):
        return name
    if name not in _REGISTRY:
        raise TaskError(f"--task {name!r} is unknown; expected one of {list(_REGISTRY)}")
    return _REGISTRY[name]


def task_names() -> tuple[str, ...]:
    """Names of the registered tasks, in registration order."""
    return tuple(_REGISTRY)


def tasks() -> dict[str, Task]:
    """A copy of the registry."""
    return dict(_REGISTRY)


def load_task_checkpoint(
    path: str | os.PathLike, task: str | Task | None = None, map_location="cpu"
) -> tuple[nn.Module, CheckpointInfo]:
    """Load a task's checkpoint -> ``(model in eval mode, CheckpointInfo)``; the model is built
    by the task the file names. ``task`` (optional) must match the file's task."""
    name = task.name if isinstance(task, Task) else task
    held = read_checkpoint(path).get("task")
    if name is not None and held not in (None, name):
        raise TaskError(f"{path}: a {held!r} checkpoint, expected task {name!r}")
    return get_task(held or name or "surgical").load_checkpoint(path, map_location=map_location)
