"""The prostate task: 2D slices of NIfTI cases (gland, ADC, T2W), lesion yes / no."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from gcfeat.data.mri_synthetic import write_prostate
from gcfeat.data.prostate import PROSTATE_CLASSES, ProstateSlices
from gcfeat.models import build_classifier
from gcfeat.tasks.base import Task


def _last_block(model: nn.Module) -> nn.Module:
    """The CAM target: the last residual block of ``layer4``."""
    return model.get_submodule("layer4")[-1]  # type: ignore[index]  # a Sequential of blocks


__all__ = ["PROSTATE", "PROSTATE_ARCHS"]

#: prostate arch names: resnet18 / resnet34, optional suffixes ``_nobn`` and ``_dropout``.
PROSTATE_ARCHS = tuple(
    f"resnet{d}{bn}{dp}" for d in (18, 34) for bn in ("", "_nobn") for dp in ("", "_dropout")
)


def _model(arch: str, dropout: float | None = None, **kw) -> nn.Module:
    base = arch.split("_")[0]
    p = dropout if dropout is not None else (0.3 if arch.endswith("_dropout") else 0.0)
    return build_classifier(
        base, num_classes=2, dropout=p, in_channels=3, norm="none" if "_nobn" in arch else "batch", **kw
    )


def _dataset(root, split, **kw):
    return ProstateSlices(root, split, **kw)


def _synthetic(out, **kw) -> Path:
    return write_prostate(out, **kw)


PROSTATE = Task(
    "prostate",
    PROSTATE_CLASSES,
    "binary",
    2,
    (128, 128),
    3,
    "resnet18",
    PROSTATE_ARCHS,
    None,
    None,
    "per-image percentiles 1/99 -> [0, 1] (MONAI semantics); gland 0/1",
    ("train", "val", "test"),
    _model,
    _dataset,
    _last_block,
    _synthetic,
    {"epochs": 6, "lr": 1e-3, "batch_size": 32, "optimizer": "adamw"},
    gt_name="lesion",
    display_channel=2,
    deletion_baseline="mean",
    # 24 cases -> 67 test slices, 17 with a lesion: 16 balanced samples put 8 lesion slices
    # in the pointing game / IoU (negative slices have an empty mask: curves only)
    demo={"n": 24, "arch": "resnet18", "epochs": 4, "batch_size": 16, "lr": 1e-3, "limit": 16, "n_steps": 64},
    _synthetic_kwargs=lambda n, seed: {"n_cases": n, "seed": seed},
)
