"""Task registry: `get_task(name)` ties a dataset reader, a model family, classes and defaults.

Every CLI takes ``--task surgical|prostate|organ3d|alzheimer`` (default ``surgical``) and reads
all it needs from the :class:`Task`::

    task = get_task(args.task)
    model = task.build_model(args.arch)                  # default arch: task.default_arch
    train_set = task.build_dataset(args.data, "train")   # dict samples (docs/DESIGN.md)
    target = task.target_layer(model)                    # the CAM target module
    model, info = task.load_checkpoint(args.checkpoint)  # trained model, eval mode
    task.write_synthetic("data/organ3d")                 # the task's synthetic data

=========  ==========  ==  =================  ==========================================
task       kind        D   input              models (default first)
=========  ==========  ==  =================  ==========================================
surgical   multilabel  2   (3, 256, 320)      resnet50, resnet18, resnet34 (ImageNet norm.)
prostate   binary      2   (3, 128, 128)      resnet18[_nobn][_dropout], resnet34[...]
organ3d    multiclass  3   (1, 28, 28, 28)    resnet3d_18, resnet3d_18_slim (CPU demos)
alzheimer  multiclass  2   (1, 128, 128)      baseline_cnn and its variants (small_cnn)
=========  ==========  ==  =================  ==========================================

``binary`` tasks use a 2-way softmax head (class 1 = positive), so single-label tasks share
``activation == "softmax"``; multilabel uses the sigmoid. Sample dicts of the MRI tasks carry
``image``, ``label`` (int64 class id), ``labels`` (one-hot float32 ``(K,)``), ``video``,
``frame_index`` and ``gt_mask`` (bool, the planted cause / lesion) for localisation.
Intensity handling: surgical normalises with ``mean``/``std``; the MRI tasks have
``mean = std = None`` and scale inside the reader (prostate: per-image percentiles; organ3d and
alzheimer: uint8 / 255), so zero is "no signal" for deletion.

A fifth task is a :class:`Task` passed to :func:`register_task` (see CONTRIBUTING.md); the
workflows (:mod:`gcfeat.workflows`) then run it like the built-in ones.
"""

from __future__ import annotations

from gcfeat.tasks.alzheimer import ALZHEIMER
from gcfeat.tasks.base import (
    Task,
    TaskError,
    get_task,
    load_task_checkpoint,
    register_task,
    task_names,
    tasks,
    unregister_task,
)
from gcfeat.tasks.organ3d import ORGAN3D, data_file
from gcfeat.tasks.prostate import PROSTATE
from gcfeat.tasks.surgical import SURGICAL

__all__ = [
    "Task",
    "TaskError",
    "TASK_NAMES",
    "get_task",
    "register_task",
    "unregister_task",
    "task_names",
    "tasks",
    "load_task_checkpoint",
    "data_file",
]

for _t in (SURGICAL, PROSTATE, ORGAN3D, ALZHEIMER):
    register_task(_t)

#: The built-in tasks (``--task`` choices of the CLIs; :func:`task_names` adds registered ones).
TASK_NAMES: tuple[str, ...] = ("surgical", "prostate", "organ3d", "alzheimer")
