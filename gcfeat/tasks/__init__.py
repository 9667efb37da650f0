"""Task registry: ``get_task(name)`` ties a dataset reader, a model family, classes and defaults.

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
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

__all__ = ["Task", "TASKS", "TASK_NAMES", "get_task", "data_file"]


@dataclass(frozen=True)
class Task:
    """Everything a CLI needs about one task (see the module docstring)."""

    name: str
    classes: tuple[str, ...]
    kind: str                       # "multilabel" | "multiclass" | "binary"
    spatial_dims: int               # 2 | 3
    input_size: tuple[int, ...]     # spatial size (H, W) or (D, H, W)
    in_channels: int
    default_arch: str
    archs: tuple[str, ...]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    intensity: str                  # one line: how intensities are scaled
    splits: tuple[str, ...]
    _model: Callable[..., nn.Module] = field(repr=False)
    _dataset: Callable[..., Any] = field(repr=False)
    _target: Callable[[nn.Module], nn.Module] = field(repr=False)
    _synthetic: Callable[..., Path] = field(repr=False)
    defaults: dict = field(default_factory=dict)  # training defaults: epochs, lr, batch_size, ...

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
            raise ValueError(f"--arch {arch!r} is not a {self.name} model; expected one of "
                             f"{list(self.archs)}")
        return self._model(arch, **kwargs)

    def build_dataset(self, root: str | os.PathLike, split: str = "train", **kwargs):
        """The Dataset of ``split`` under ``root`` (files written by the real source or by
        :meth:`write_synthetic`)."""
        if split not in self.splits:
            raise ValueError(f"split {split!r} is not a {self.name} split; expected one of "
                             f"{list(self.splits)}")
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
            raise ValueError(f"--layer {name!r}: the {self.name} model has no such module; its "
                             f"top-level modules: {[n for n, _ in model.named_children()]}"
                             ) from None

    def load_checkpoint(self, path: str | os.PathLike, map_location="cpu") -> tuple[nn.Module, dict]:
        """``(model in eval mode, info)`` from a checkpoint of this task: surgical through
        :func:`gcfeat.models.load_checkpoint`, the MRI tasks through
        :func:`gcfeat.tasks.train.load_task_checkpoint` (info is then a dict)."""
        if self.name == "surgical":
            from gcfeat.models import load_checkpoint

            model, info = load_checkpoint(path, map_location=map_location)
            return model.eval(), info
        from gcfeat.tasks.train import load_task_checkpoint

        return load_task_checkpoint(path, self, map_location=map_location)

    def write_synthetic(self, out: str | os.PathLike, **kwargs) -> Path:
        """Write the task's synthetic dataset under ``out`` (real file format)."""
        return self._synthetic(out, **kwargs)


# ----------------------------------------------------------------------------------- builders
def _resnet_target(model: nn.Module) -> nn.Module:
    return model.layer4[-1]


def _surgical_model(arch: str, **kw) -> nn.Module:
    from gcfeat.models import build_classifier
    from gcfeat.data.classes import SURGICAL_CLASSES

    return build_classifier(arch, num_classes=kw.pop("num_classes", len(SURGICAL_CLASSES)), **kw)


def _surgical_dataset(root, split, **kw):
    from gcfeat.data import build_dataset  # the surgical readers (MICCAI 2018 / Cholec80)

    return build_dataset(root, split=split, **kw)


def _surgical_synthetic(out, **kw) -> Path:
    from gcfeat.data.synthetic import write_miccai18  # the MICCAI 2018 layout

    return write_miccai18(out, **kw)


#: prostate arch names: resnet18 / resnet34, optional suffixes ``_nobn`` and ``_dropout``.
PROSTATE_ARCHS = tuple(f"resnet{d}{bn}{dp}" for d in (18, 34) for bn in ("", "_nobn")
                       for dp in ("", "_dropout"))


def _prostate_model(arch: str, dropout: float | None = None, **kw) -> nn.Module:
    from gcfeat.models import build_classifier

    base = arch.split("_")[0]
    p = dropout if dropout is not None else (0.3 if arch.endswith("_dropout") else 0.0)
    return build_classifier(base, num_classes=2, dropout=p, in_channels=3,
                            norm="none" if "_nobn" in arch else "batch", **kw)


def _prostate_dataset(root, split, **kw):
    from gcfeat.data.prostate import ProstateSlices

    return ProstateSlices(root, split, **kw)


def _prostate_synthetic(out, **kw) -> Path:
    from gcfeat.data.mri_synthetic import write_prostate

    return write_prostate(out, **kw)


#: organ3d models: the 3D ResNet-18 (widths 64..512) and a slim one (widths 16..128, same
#: depth, ~16x fewer FLOPs) for CPU demos.
ORGAN3D_ARCHS = {"resnet3d_18": (64, 128, 256, 512), "resnet3d_18_slim": (16, 32, 64, 128)}


def _organ3d_model(arch: str, **kw) -> nn.Module:
    from gcfeat.models.resnet3d import resnet3d_18

    return resnet3d_18(num_classes=kw.pop("num_classes", 11), in_channels=1,
                       small_input=kw.pop("small_input", True),
                       widths=kw.pop("widths", ORGAN3D_ARCHS[arch]), **kw)


def data_file(root: str | os.PathLike, name: str = "organmnist3d") -> Path:
    """organ3d's npz: ``root`` itself if it is a file, else ``root/<name>.npz`` (or the only
    ``*.npz`` in ``root`` that is not a ``_masks.npz``)."""
    root = Path(root)
    if root.is_file():
        return root
    if (root / f"{name}.npz").is_file():
        return root / f"{name}.npz"
    found = [p for p in sorted(root.glob("*.npz")) if not p.stem.endswith("_masks")]
    if len(found) == 1:
        return found[0]
    from gcfeat.data.errors import DataError

    raise DataError(f"{root}: expected {name}.npz (a MedMNIST 3D file) or exactly one .npz; "
                    f"found {[p.name for p in found]}")


def _organ3d_dataset(root, split, **kw):
    from gcfeat.data.medmnist import MedMNIST3D

    return MedMNIST3D(data_file(root), split, **kw)


def _organ3d_synthetic(out, **kw) -> Path:
    from gcfeat.data.mri_synthetic import write_organ3d

    return write_organ3d(out, **kw)


def _alzheimer_model(arch: str, **kw) -> nn.Module:
    from gcfeat.models.small_cnn import build_small_cnn

    return build_small_cnn(arch, num_classes=kw.pop("num_classes", 4), **kw)


def _alzheimer_dataset(root, split, **kw):
    from gcfeat.data.alzheimer import AlzheimerSlices

    return AlzheimerSlices(root, split, **kw)


def _alzheimer_synthetic(out, **kw) -> Path:
    from gcfeat.data.mri_synthetic import write_alzheimer

    return write_alzheimer(out, **kw)


def _build_registry() -> dict[str, Task]:
    from gcfeat.data.alzheimer import ALZHEIMER_CLASSES
    from gcfeat.data.classes import SURGICAL_CLASSES, SURGICAL_MEAN, SURGICAL_STD
    from gcfeat.data.medmnist import ORGAN3D_CLASSES
    from gcfeat.data.prostate import PROSTATE_CLASSES
    from gcfeat.models.small_cnn import SMALL_CNNS

    return {
        "surgical": Task(
            "surgical", SURGICAL_CLASSES, "multilabel", 2, (256, 320), 3, "resnet50",
            ("resnet50", "resnet18", "resnet34"), SURGICAL_MEAN, SURGICAL_STD,
            "RGB / 255 then mean/std normalisation", ("train", "val"),
            _surgical_model, _surgical_dataset, _resnet_target, _surgical_synthetic,
            {"epochs": 8, "lr": 1e-3, "batch_size": 16, "optimizer": "sgd"}),
        "prostate": Task(
            "prostate", PROSTATE_CLASSES, "binary", 2, (128, 128), 3, "resnet18", PROSTATE_ARCHS,
            None, None, "per-image percentiles 1/99 -> [0, 1] (MONAI semantics); gland 0/1",
            ("train", "val", "test"),
            _prostate_model, _prostate_dataset, _resnet_target, _prostate_synthetic,
            {"epochs": 6, "lr": 1e-3, "batch_size": 32, "optimizer": "adamw"}),
        "organ3d": Task(
            "organ3d", ORGAN3D_CLASSES, "multiclass", 3, (28, 28, 28), 1, "resnet3d_18",
            tuple(ORGAN3D_ARCHS), None, None, "uint8 / 255", ("train", "val", "test"),
            _organ3d_model, _organ3d_dataset, _resnet_target, _organ3d_synthetic,
            {"epochs": 6, "lr": 1e-3, "batch_size": 16, "optimizer": "adamw"}),
        "alzheimer": Task(
            "alzheimer", ALZHEIMER_CLASSES, "multiclass", 2, (128, 128), 1, "baseline_cnn",
            tuple(SMALL_CNNS), None, None, "grayscale uint8 / 255",
            ("train", "val", "test"),  # val: a stratified holdout of train.parquet (no val file)
            _alzheimer_model, _alzheimer_dataset, lambda m: m.last_conv, _alzheimer_synthetic,
            {"epochs": 6, "lr": 1e-3, "batch_size": 32, "optimizer": "adamw"}),
    }


TASK_NAMES: tuple[str, ...] = ("surgical", "prostate", "organ3d", "alzheimer")
_REGISTRY: dict[str, Task] | None = None


def get_task(name: str) -> Task:
    """The :class:`Task` called ``name`` (``surgical``, ``prostate``, ``organ3d``, ``alzheimer``)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _build_registry()
    if name not in _REGISTRY:
        raise ValueError(f"--task {name!r} is unknown; expected one of {list(TASK_NAMES)}")
    return _REGISTRY[name]


def __getattr__(name: str):  # TASKS is built on first use (keeps `import gcfeat.tasks` light)
    if name == "TASKS":
        get_task("surgical")
        return dict(_REGISTRY)
    raise AttributeError(name)
