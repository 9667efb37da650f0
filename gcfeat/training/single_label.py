"""Single-label helpers: :func:`predict` over a dataset, and :func:`train_classifier`, the
single-label recipe of :func:`gcfeat.training.fit` under its former name.

The recipe (prostate, organ3d, alzheimer): cross-entropy on the sample's ``label``, AdamW or
SGD, cosine schedule, BatchNorm recalibration after every epoch, the torch and shuffling
generators seeded once, best epoch by validation accuracy, the gcfeat checkpoint
``<out_dir>/<task>_<arch>_best.pt`` (``task`` set).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from gcfeat.training.batchnorm import recalibrate_batchnorm
from gcfeat.training.collate import collate
from gcfeat.training.fit import fit

__all__ = ["collate", "train_classifier", "predict", "recalibrate_batchnorm", "single_label_options"]


@torch.no_grad()
def predict(
    model: nn.Module, dataset, batch_size: int = 32, device="cpu", progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (N, K), labels (N,))`` over a dataset of dict samples with ``label``."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    logits, labels = [], []
    for batch in tqdm(loader, desc="predict", disable=None if progress else True, leave=False):
        logits.append(model(batch["image"].to(device)).float().cpu())
        labels.append(batch["label"])
    return torch.cat(logits), torch.cat(labels)


def single_label_options(*, task, arch: str, seed: int = 0) -> dict[str, Any]:
    """The :func:`~gcfeat.training.fit` options of the single-label recipe (module docstring)
    for ``task`` (a :class:`~gcfeat.tasks.Task`) and ``arch``."""
    return dict(
        loss="ce",
        schedule="cosine",
        recalibrate_bn=True,
        seeding="once",
        loss_sum="host",
        seed=seed,
        name=f"{task.name}_{arch}",
        task=task.name,
        arch=arch,
        classes=task.classes,
        mean=task.mean,
        std=task.std,
    )


def train_classifier(
    model: nn.Module,
    train_set,
    val_set,
    *,
    task,
    arch: str,
    out_dir: str | os.PathLike,
    epochs: int = 5,
    lr: float = 1e-3,
    batch_size: int = 16,
    optimizer: str = "adamw",
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    recalibrate_bn: bool = True,
) -> dict:
    """:func:`~gcfeat.training.fit` with the single-label recipe (module docstring).

    Returns ``{"checkpoint": Path, "history": [per-epoch dicts], "best_accuracy": float}``.
    """
    opts = single_label_options(task=task, arch=arch, seed=seed)
    r = fit(
        model,
        train_set,
        val_set,
        **{**opts, "recalibrate_bn": recalibrate_bn},
        out_dir=out_dir,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        optimizer=optimizer,
        weight_decay=weight_decay,
        device=device,
        progress=progress,
    )
    return {"checkpoint": r.checkpoint, "history": r.history, "best_accuracy": r.best_score}
