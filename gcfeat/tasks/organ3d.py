"""The organ3d task: OrganMNIST3D-style 28^3 volumes, 11 organs, 3D ResNet."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from gcfeat.data.errors import DataError
from gcfeat.data.medmnist import ORGAN3D_CLASSES, MedMNIST3D
from gcfeat.data.mri_synthetic import write_organ3d
from gcfeat.models.resnet3d import resnet3d_18
from gcfeat.tasks.base import Task


def _last_block(model: nn.Module) -> nn.Module:
    """The CAM target: the last residual block of ``layer4``."""
    return model.get_submodule("layer4")[-1]  # type: ignore[index]  # a Sequential of blocks


__all__ = ["ORGAN3D", "ORGAN3D_ARCHS", "data_file"]

#: organ3d models: the 3D ResNet-18 (widths 64..512) and a slim one (widths 16..128, same
#: depth, ~16x fewer FLOPs) for CPU demos.
ORGAN3D_ARCHS = {"resnet3d_18": (64, 128, 256, 512), "resnet3d_18_slim": (16, 32, 64, 128)}


def _model(arch: str, **kw) -> nn.Module:
    return resnet3d_18(
        num_classes=kw.pop("num_classes", 11),
        in_channels=1,
        small_input=kw.pop("small_input", True),
        widths=kw.pop("widths", ORGAN3D_ARCHS[arch]),
        **kw,
    )


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
    raise DataError(
        f"{root}: expected {name}.npz (a MedMNIST 3D file) or exactly one .npz; "
        f"found {[p.name for p in found]}"
    )


def _dataset(root, split, **kw):
    return MedMNIST3D(data_file(root), split, **kw)


def _synthetic(out, **kw) -> Path:
    return write_organ3d(out, **kw)


def _synthetic_kwargs(n: int, seed: int) -> dict:
    # balanced over 11 classes: at least one volume per class per split
    return {"n_train": n, "n_val": max(n // 6, 11), "n_test": max(n // 3, 11), "seed": seed}


ORGAN3D = Task(
    "organ3d",
    ORGAN3D_CLASSES,
    "multiclass",
    3,
    (28, 28, 28),
    1,
    "resnet3d_18",
    tuple(ORGAN3D_ARCHS),
    None,
    None,
    "uint8 / 255",
    ("train", "val", "test"),
    _model,
    _dataset,
    _last_block,
    _synthetic,
    {"epochs": 6, "lr": 1e-3, "batch_size": 16, "optimizer": "adamw"},
    gt_name="organ",
    # 3D convolutions are slow on CPU (the slim ResNet: ~0.75 s per volume per training step,
    # ~75 ms per forward on 2 cores), so organ3d trains on 6 volumes per class and draws
    # 33-point curves on 6 test volumes; `--n 330 --limit 22 --n-steps 129` is the README run.
    demo={
        "n": 66,
        "arch": "resnet3d_18_slim",
        "epochs": 4,
        "batch_size": 8,
        "lr": 2e-3,
        "limit": 6,
        "n_steps": 32,
    },
    _synthetic_kwargs=_synthetic_kwargs,
)
