"""Train a task's classifier: ``python -m gcfeat.tasks.train --task organ3d --data DIR``.

Single-label tasks (prostate, organ3d, alzheimer) train here with cross-entropy on the sample's
``label`` (a small loop: AdamW or SGD, cosine schedule, best epoch by validation accuracy); the
surgical task is handed to :func:`gcfeat.training.fit` (multi-label BCE).

Checkpoint (``<out>/<task>_<arch>_best.pt``, read with ``torch.load(weights_only=True)``)::

    {"format": "gcfeat-task-checkpoint", "task": "organ3d", "arch": "resnet3d_18",
     "classes": [...], "input_size": [28, 28, 28], "state_dict": {...}, "meta": {...}}

``--synthetic`` first writes the task's synthetic data into ``--data`` when it is empty.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from gcfeat.models.checkpoint import CheckpointError, check_finite_state, read_torch_file
from gcfeat.tasks import TASK_NAMES, Task, get_task

__all__ = ["collate", "train_classifier", "predict", "recalibrate_batchnorm", "save_task_checkpoint",
           "load_task_checkpoint", "main"]

FORMAT = "gcfeat-task-checkpoint"


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


def save_task_checkpoint(path: str | os.PathLike, model: nn.Module, task: Task, arch: str,
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


def load_task_checkpoint(path: str | os.PathLike, task: str | Task | None = None,
                         map_location="cpu") -> tuple[nn.Module, dict]:
    """Read a task checkpoint -> ``(model in eval mode, info dict without the weights)``.

    ``task`` (optional) must match the file's task; a mismatch raises ``ValueError``.
    """
    path = Path(path)
    blob = read_torch_file(path)          # missing / empty / truncated / pickled code: named
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: not a gcfeat task checkpoint (expected a "
                              f"dict with format={FORMAT!r}; surgical checkpoints load with "
                              "gcfeat.models.load_checkpoint)")
    name = task.name if isinstance(task, Task) else task
    if name is not None and blob.get("task") != name:
        raise CheckpointError(f"checkpoint {path}: a {blob.get('task')!r} checkpoint, expected "
                              f"task {name!r}")
    try:
        t = get_task(blob["task"])
        state = dict(blob["state_dict"])
        model = t.build_model(blob["arch"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: malformed task checkpoint ({type(e).__name__}: "
                              f"{e}); expected task, arch and state_dict entries") from None
    held = [str(c) for c in blob.get("classes") or []]
    if held and len(held) != t.num_classes:
        raise CheckpointError(f"checkpoint {path}: {len(held)} classes {held}, but task {t.name} "
                              f"has {t.num_classes} classes {list(t.classes)}")
    check_finite_state(state, path)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        sizes = re.findall(r"size mismatch for ([\w.]+)", str(e))
        what = f"wrong shape: {', '.join(sizes[:4])}" if sizes else str(e).splitlines()[0][:200]
        raise CheckpointError(f"checkpoint {path}: weights do not fit a {t.name} {blob['arch']} "
                              f"with {t.num_classes} classes ({what})") from None
    model.to(map_location)
    model.eval()
    info = {k: v for k, v in blob.items() if k != "state_dict"}
    return model, info


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


def train_classifier(model: nn.Module, train_set, val_set, *, task: Task, arch: str,
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


def _val_split(task: Task) -> str:
    return "val" if "val" in task.splits else "test"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m gcfeat.tasks.train",
        description="Train a task's classifier (single-label MRI tasks: cross-entropy, best "
                    "epoch by validation accuracy; surgical: gcfeat.training.fit).")
    p.add_argument("--task", required=True, choices=TASK_NAMES)
    p.add_argument("--data", required=True, help="dataset folder (organ3d: folder or .npz)")
    p.add_argument("--synthetic", action="store_true",
                   help="write the task's synthetic data into --data first if it is missing")
    p.add_argument("--n", type=int, default=None,
                   help="with --synthetic: training volumes / cases / rows (task default if unset)")
    p.add_argument("--arch", default=None, help="model (default: the task's default_arch)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default=None)
    p.add_argument("--balance", action="store_true",
                   help="prostate: subsample negative training slices to the positives' count")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default="checkpoints", help="checkpoint folder")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    task = get_task(a.task)
    d = task.defaults
    epochs, lr = a.epochs or d["epochs"], a.lr or d["lr"]
    bs, opt = a.batch_size or d["batch_size"], a.optimizer or d["optimizer"]
    arch = a.arch or task.default_arch
    data = Path(a.data)
    if a.synthetic and not (data.exists() and any(data.iterdir())):
        kw = {}
        if a.n:
            kw = {"organ3d": {"n_train": a.n, "n_val": max(a.n // 6, 11), "n_test": max(a.n // 3, 11)},
                  "prostate": {"n_cases": a.n}, "alzheimer": {"n_train": a.n, "n_test": max(a.n // 4, 4)},
                  }.get(task.name, {})
        task.write_synthetic(data, **kw)
        print(f"wrote synthetic {task.name} data to {data}")
    if task.name == "surgical":
        from gcfeat.training import fit

        r = fit(task.build_model(arch), task.build_dataset(data, "train"),
                task.build_dataset(data, "val"), epochs=epochs, lr=lr, batch_size=bs,
                optimizer=opt, out_dir=a.out, name=f"surgical_{arch}", arch=arch, seed=a.seed,
                classes=task.classes, mean=task.mean, std=task.std)
        print(f"best mAP {r.best_map:.4f} -> {r.checkpoint}")
        return 0
    extra = {"balance": True, "seed": a.seed} if (task.name == "prostate" and a.balance) else {}
    train_set = task.build_dataset(data, "train", **extra)
    val_set = task.build_dataset(data, _val_split(task))
    print(f"{task.name}: {len(train_set)} training / {len(val_set)} validation samples, "
          f"model {arch}")
    r = train_classifier(task.build_model(arch), train_set, val_set, task=task, arch=arch,
                         out_dir=a.out, epochs=epochs, lr=lr, batch_size=bs, optimizer=opt,
                         seed=a.seed)
    print(f"best validation accuracy {r['best_accuracy']:.4f} -> {r['checkpoint']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
