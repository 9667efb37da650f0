"""Single-label training (prostate, organ3d, alzheimer): cross-entropy on the sample's
``label``, AdamW or SGD, cosine schedule, BatchNorm recalibration, best epoch by validation
accuracy, written as a task checkpoint (:mod:`gcfeat.models.task_checkpoint`).

The multi-label loop (surgical, BCE, mAP) is :func:`gcfeat.training.fit`; both keep the exact
numerics they had as separate entry points (``gcfeat.training`` and ``gcfeat.tasks.train``).
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from gcfeat.models.task_checkpoint import save_task_checkpoint

__all__ = ["collate", "train_classifier", "predict", "recalibrate_batchnorm"]


def collate(samples: list[dict]) -> dict:
    """Stack tensor entries of equal shape (``image``, ``label``, ``labels``, ``gt_mask``);
    keep the rest as lists."""
    out = {}
    for key in samples[0]:
        vals = [s[key] for s in samples]
        if torch.is_tensor(vals[0]) and all(v.shape == vals[0].shape for v in vals):
            out[key] = torch.stack(vals)
        else:
            out[key] = vals
    return out


@torch.no_grad()
def predict(model: nn.Module, dataset, batch_size: int = 32, device="cpu",
            progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (N, K), labels (N,))`` over a dataset of dict samples with ``label``."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    logits, labels = [], []
    for batch in tqdm(loader, desc="predict", disable=None if progress else True, leave=False):
        logits.append(model(batch["image"].to(device)).float().cpu())
        labels.append(batch["label"])
    return torch.cat(logits), torch.cat(labels)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader, device="cpu") -> int:
    """Recompute every BatchNorm's running mean / variance as the plain average over the
    batches of ``loader`` (train-mode forwards, no gradients); returns the number of layers.

    Short runs need it: with momentum 0.1 the running statistics still carry their initial
    (0, 1) after a few dozen steps, and on mostly-zero volumes the first layers' true variance
    is ~1e-3, so eval-mode predictions collapse to one class while train-mode ones are right.
    """
    bns = [m for m in model.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    momenta = [m.momentum for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = mean over the batches
    model.train()
    for batch in loader:
        model(batch["image"].to(device))
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.train(was_training)
    return len(bns)


def train_classifier(model: nn.Module, train_set, val_set, *, task, arch: str,
                     out_dir: str | os.PathLike, epochs: int = 5, lr: float = 1e-3,
                     batch_size: int = 16, optimizer: str = "adamw", weight_decay: float = 1e-4,
                     seed: int = 0, device: str = "cpu", progress: bool = True,
                     recalibrate_bn: bool = True) -> dict:
    """Cross-entropy training of a single-label task; keeps the best epoch by val accuracy.

    ``recalibrate_bn``: after each epoch, BatchNorm statistics are recomputed over the training
    set (:func:`recalibrate_batchnorm`) before validation and the checkpoint.

    Returns ``{"checkpoint": Path, "history": [per-epoch dicts], "best_accuracy": float}``.
    """
    torch.manual_seed(seed)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay) if optimizer == "adamw"
           else torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, collate_fn=collate,
                        generator=gen, drop_last=len(train_set) % batch_size == 1)
    ckpt = Path(out_dir) / f"{task.name}_{arch}_best.pt"
    history, best = [], -math.inf
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        for batch in tqdm(loader, desc=f"epoch {epoch}/{epochs}", disable=None if progress else True,
                          leave=False):
            x, y = batch["image"].to(device), batch["label"].to(device)
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(y)
            count += len(y)
        sched.step()
        if recalibrate_bn:
            recalibrate_batchnorm(model, loader, device)
        logits, labels = predict(model, val_set, batch_size, device, progress)
        val_loss = float(nn.functional.cross_entropy(logits, labels))
        acc = float((logits.argmax(1) == labels).float().mean())
        row = {"epoch": epoch, "train_loss": total / max(count, 1), "val_loss": val_loss,
               "val_accuracy": acc, "seconds": time.perf_counter() - t0}
        history.append(row)
        tqdm.write(f"epoch {epoch}: train_loss {row['train_loss']:.4f} val_loss {val_loss:.4f} "
                   f"val_acc {acc:.4f} ({row['seconds']:.1f}s)")
        if acc > best:
            best = acc
            save_task_checkpoint(ckpt, model, task, arch, meta={
                "epoch": epoch, "val_accuracy": acc, "lr": lr, "epochs": epochs,
                "batch_size": batch_size, "seed": seed, "data": str(getattr(train_set, "root", ""))},
                input_size=tuple(train_set[0]["image"].shape[1:]))
    return {"checkpoint": ckpt, "history": history, "best_accuracy": best}
