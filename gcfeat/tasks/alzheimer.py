"""The alzheimer task: 2D grayscale MRI slices from parquet, 4 dementia classes, small CNNs."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from gcfeat.data.alzheimer import ALZHEIMER_CLASSES, AlzheimerSlices
from gcfeat.data.mri_synthetic import write_alzheimer
from gcfeat.models.small_cnn import SMALL_CNNS, build_small_cnn
from gcfeat.tasks.base import Task


def _last_conv(model: nn.Module) -> nn.Module:
    """The CAM target: the CNN's last convolution."""
    return model.get_submodule("last_conv")


__all__ = ["ALZHEIMER"]


def _model(arch: str, **kw) -> nn.Module:
    return build_small_cnn(arch, num_classes=kw.pop("num_classes", 4), **kw)


def _dataset(root, split, **kw):
    return AlzheimerSlices(root, split, **kw)


def _synthetic(out, **kw) -> Path:
    return write_alzheimer(out, **kw)


ALZHEIMER = Task(
    "alzheimer",
    ALZHEIMER_CLASSES,
    "multiclass",
    2,
    (128, 128),
    1,
    "baseline_cnn",
    tuple(SMALL_CNNS),
    None,
    None,
    "grayscale uint8 / 255",
    ("train", "val", "test"),  # val: a stratified holdout of train.parquet (no val file)
    _model,
    _dataset,
    _last_conv,
    _synthetic,
    {"epochs": 6, "lr": 1e-3, "batch_size": 32, "optimizer": "adamw"},
    gt_name="ventricles",
    demo={
        "n": 200,
        "arch": "baseline_cnn",
        "epochs": 4,
        "batch_size": 32,
        "lr": 1e-3,
        "limit": 20,
        "n_steps": 129,
    },
    _synthetic_kwargs=lambda n, seed: {"n_train": n, "n_test": max(n // 4, 4), "seed": seed},
)
