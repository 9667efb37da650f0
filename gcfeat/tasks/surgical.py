"""The surgical task: MICCAI 2018 / Cholec80 frames, 11 classes, multi-label ResNet (or any
torchvision / timm classifier, ``gcfeat train --arch``)."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from gcfeat.data import build_dataset
from gcfeat.data.classes import SURGICAL_CLASSES, SURGICAL_INPUT_SIZE, SURGICAL_MEAN, SURGICAL_STD
from gcfeat.data.synthetic import write_miccai18
from gcfeat.models import build_classifier, find_levels, load_checkpoint
from gcfeat.tasks.base import Task

__all__ = ["SURGICAL"]


def _model(arch: str, **kw) -> nn.Module:
    return build_classifier(arch, num_classes=kw.pop("num_classes", len(SURGICAL_CLASSES)), **kw)


def _dataset(root, split, **kw):
    return build_dataset(root, split=split, **kw)  # the MICCAI 2018 / Cholec80 readers


def _synthetic(out, **kw) -> Path:
    write_miccai18(out, **kw)  # the MICCAI 2018 layout (returns its summary)
    return Path(out)


def _target(model: nn.Module) -> nn.Module:
    """``layer4[-1]`` of a ResNet, else the last feature level (:func:`find_levels`: ConvNeXt /
    EfficientNet ``features.7``, a ViT its last block's norm, reshaped by the CAM engine)."""
    if isinstance(getattr(model, "layer4", None), nn.Sequential):
        return model.get_submodule("layer4")[-1]  # type: ignore[index]  # a Sequential
    return find_levels(model)[-1].module


def _load(path: str | os.PathLike, task: Task, map_location="cpu"):
    """Every surgical form: gcfeat, bare / ``module.`` / ``fc.1`` state dicts, resume dicts."""
    # no class count asked: the original 9-class models (MICCAI18_CLASSES_9) load too
    model, info = load_checkpoint(path, task=task.name, map_location=map_location)
    return model.eval(), info


SURGICAL = Task(
    "surgical",
    SURGICAL_CLASSES,
    "multilabel",
    2,
    SURGICAL_INPUT_SIZE,
    3,
    "resnet50",
    ("resnet50", "resnet18", "resnet34"),
    SURGICAL_MEAN,
    SURGICAL_STD,
    "RGB / 255 then mean/std normalisation",
    ("train", "val"),
    _model,
    _dataset,
    _target,
    _synthetic,
    {"epochs": 8, "lr": 1e-3, "batch_size": 16, "optimizer": "sgd"},
    layer="layer4",
    class_modes={SURGICAL_CLASSES.index("tissue"): "union"},
    ground_truth="boxes",
    eval_split="val",
    demo={
        "arch": "resnet18",
        "epochs": 5,
        "batch_size": 32,
        "lr": 2e-3,
        "videos": 10,
        "frames": 150,
        "size": (128, 160),
    },
    _load=_load,
)
