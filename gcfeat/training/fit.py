"""Training API: :func:`fit` trains a classifier, validates each epoch, keeps the best and the
last checkpoint, and resumes.

Multi-label (the surgical task) uses BCE-with-logits, which equals the original's
``MultiLabelSoftMarginLoss``; single-label tasks may pass ``loss="ce"`` (integer labels).
Each epoch is validated with per-class average precision; the best epoch by validation mAP
(classes without positives skipped) is written to ``<out_dir>/<name>_best.pt`` as a gcfeat
checkpoint, and ``<out_dir>/<name>_last.pt`` holds everything needed to resume (weights,
optimizer, scheduler, epoch, history, RNG states), all readable with ``weights_only=True``.

Repeatability: with ``seed`` set, the python / numpy / torch generators and the DataLoader's
shuffling are re-seeded from ``seed + epoch`` at the start of every epoch, so a run that is
interrupted and resumed gives the same weights as one that was not (on the same device).

Example::

    model = build_classifier("resnet50", num_classes=11)
    result = fit(model, train_set, val_set, epochs=8, lr=1e-3, out_dir="checkpoints",
                 name="miccai18_resnet50", classes=SURGICAL_CLASSES, arch="resnet50",
                 input_size=(256, 320), mean=SURGICAL_MEAN, std=SURGICAL_STD)
    print(result.best_map, result.checkpoint)
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from gcfeat.data import collate
from gcfeat.data.classes import SURGICAL_CLASSES
from gcfeat.metrics.classification import accuracy, ap_table, average_precision, nanmean
from gcfeat.models.checkpoint import (
    CheckpointError,
    describe_model,
    read_checkpoint,
    save_checkpoint,
)

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "onecycle", "plateau", "none")
LOSSES = ("bce", "ce")
CSV_COLUMNS = ("epoch", "train_loss", "val_loss", "val_mAP", "lr", "seconds")


@dataclass
class TrainResult:
    """What :func:`fit` produced.

    ``history`` has one dict per epoch (``epoch`` 1-based, ``train_loss``, ``val_loss``,
    ``val_mAP``, ``lr``, ``seconds``, ``ap`` (K floats), ``val_accuracy`` for ``loss="ce"``);
    ``per_class_ap`` is the best epoch's ``(K,)`` AP (NaN: no positives); ``model`` is the
    trained model with the last epoch's weights (the best epoch's are in ``checkpoint``);
    ``start_epoch`` is the first epoch this call trained (> 1 after a resume).
    """

    best_map: float
    best_epoch: int
    history: list[dict[str, Any]]
    checkpoint: Path
    last_checkpoint: Path
    log_csv: Path
    per_class_ap: torch.Tensor
    classes: tuple[str, ...]
    start_epoch: int = 1
    model: nn.Module | None = field(default=None, repr=False)


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; derive numpy/python seeds from it.
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def _rng_state(device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@contextlib.contextmanager
def _determinism(enabled: bool):
    """Deterministic kernels inside the block (CPU kernels already are); restored after."""
    if not enabled:
        yield
        return
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _head_dropout(model: nn.Module) -> float:
    fc = getattr(model, "fc", None)
    if isinstance(fc, nn.Sequential):
        for m in fc:
            if isinstance(m, nn.Dropout):
                return float(m.p)
    return 0.0


def _batches_per_epoch(dataset: Dataset, batch_size: int) -> int:
    # The training loop skips a lone last sample (BatchNorm), so count only batches of >= 2.
    n = len(dataset)
    full, rest = divmod(n, int(batch_size))
    return full + (1 if rest >= 2 else 0)


def _write_csv(path: Path, history: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for row in history:
            w.writerow([_fmt(row.get(c)) for c in columns])
    os.replace(tmp, path)


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return v


def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    *,
    epochs: int = 10,
    batch_size: int = 16,
    lr: float = 1e-3,
    optimizer: str = "sgd",
    schedule: str = "cosine",
    weight_decay: float = 1e-4,
    momentum: float = 0.9,
    num_workers: int = 0,
    device: str | torch.device | None = "auto",
    seed: int | None = 0,
    out_dir: str | os.PathLike = "checkpoints",
    name: str = "model",
    classes: Sequence[str] | None = None,
    arch: str | None = None,
    input_size: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    meta: Mapping[str, Any] | None = None,
    resume: bool = False,
    log_csv: str | os.PathLike | None = None,
    loss: str = "bce",
    plateau_patience: int = 2,
    progress: bool = True,
    verbose: bool = True,
    channels_last: bool = False,
    augment_flip: bool = False,
    deterministic: bool | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    spec: Any = None,
) -> TrainResult:
    """Train ``model`` on ``train_set``, validating on ``val_set`` after every epoch.

    Args:
        model: a classifier ``(B, C, H, W) -> (B, K)`` logits (e.g. ``build_classifier``).
        train_set, val_set: Datasets of sample dicts (``image (C, H, W)``, ``labels (K,)``
            multi-hot float; see docs/DESIGN.md) or ``(image, label)`` tuples.
        epochs: total epochs (a resumed run continues up to this number).
        optimizer: ``"sgd"`` (momentum, Nesterov off) or ``"adamw"``; ``lr``,
            ``weight_decay`` and ``momentum`` as usual.
        schedule: ``"cosine"`` (to 0 over ``epochs``, stepped per epoch), ``"plateau"``
            (x0.1 when the validation loss stalls ``plateau_patience`` epochs, the original's
            recipe), ``"onecycle"`` (warm-up to ``lr`` over the first quarter of all steps, then
            cosine down; stepped per batch: the fastest from-scratch recipe for short runs) or
            ``"none"``.
        augment_flip: flip each training image left-right with probability 1/2 (on the device,
            from the seeded generator, so resumed runs stay identical).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:0"``, ...
        seed: makes the run repeatable (see module docstring); ``None``: not seeded.
        out_dir, name: checkpoints go to ``out_dir/<name>_best.pt`` and ``<name>_last.pt``.
        classes, arch, input_size, mean, std: stored in the checkpoints. Defaults: ``classes``
            from ``train_set.classes`` or the surgical list when K == 11; ``arch`` from the
            weights; ``input_size`` from the first validation image; ``mean``/``std`` from the
            dataset's attributes of that name, else ``None``.
        meta: extra training metadata for the checkpoints (e.g. ``{"data": root}``).
        resume: continue from ``<name>_last.pt`` if it exists (else start at epoch 1).
        log_csv: CSV log path (default ``out_dir/<name>_log.csv``), rewritten each epoch.
        loss: ``"bce"`` (multi-label) or ``"ce"`` (single-label, ``labels`` are class ids).
        progress: tqdm bars; verbose: print the per-epoch line and AP table.
        channels_last: use the channels-last memory format (faster convolutions on GPU).
        deterministic: deterministic GPU kernels during the run (cuDNN, ``torch.
            use_deterministic_algorithms`` in warn-only mode); default: when ``seed`` is set.
        on_epoch_end: called with the epoch's history row after its checkpoints are written.
        spec: the model's :class:`~gcfeat.models.zoo.ClassifierSpec` (from
            ``build_classifier_with_spec``), stored in the checkpoints so that
            ``load_checkpoint`` rebuilds it; needed for any model but a ResNet.

    Returns:
        :class:`TrainResult`.
    """
    if deterministic is None:
        deterministic = seed is not None
    _check_arguments(train_set, val_set, optimizer=optimizer, schedule=schedule, loss=loss,
                     epochs=epochs, batch_size=batch_size)
    with _determinism(deterministic):
        dev = _resolve_device(device)
        ckpt_kwargs = _checkpoint_fields(model, train_set, val_set, classes=classes, arch=arch,
                                         input_size=input_size, mean=mean, std=std,
                                         spec=spec)
        classes, arch = ckpt_kwargs["classes"], ckpt_kwargs["arch"]
        out_dir = Path(out_dir)
        best_path = out_dir / f"{name}_best.pt"
        last_path = out_dir / f"{name}_last.pt"
        log_path = Path(log_csv) if log_csv is not None else out_dir / f"{name}_log.csv"
        say = tqdm.write if verbose else (lambda *a, **k: None)

        model.to(dev)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        opt = _make_optimizer(model, optimizer, lr=lr, momentum=momentum,
                              weight_decay=weight_decay)
        sched = _make_scheduler(opt, schedule, epochs=epochs, lr=lr, train_set=train_set,
                                batch_size=batch_size, plateau_patience=plateau_patience)
        criterion = nn.BCEWithLogitsLoss() if loss == "bce" else nn.CrossEntropyLoss()
        state = _Progress([], -math.inf, 0, [math.nan] * len(classes), 1)
        if resume:
            state = _resume(last_path, model, opt, sched, state, schedule=schedule,
                            epochs=epochs, classes=classes, arch=arch, dev=dev, say=say)
        start_epoch = state.start
        generator, train_loader, val_loader = _loaders(
            train_set, val_set, batch_size=batch_size, num_workers=num_workers, seed=seed, dev=dev)
        base_meta = {
            "epochs": int(epochs), "seed": seed, "optimizer": optimizer, "lr": float(lr),
            "schedule": schedule, "batch_size": int(batch_size), "weight_decay": float(weight_decay),
            "loss": loss, "train_size": len(train_set), "val_size": len(val_set),
            "data": str(getattr(train_set, "root", "")) or None,
        }
        base_meta.update(meta or {})
        columns = CSV_COLUMNS + (("val_accuracy",) if loss == "ce" else ())
        to_device = partial(_to_device, dev=dev, pin=dev.type == "cuda",
                            channels_last=channels_last, loss=loss)
        bars = dict(disable=None if progress else True, leave=False)
        for epoch in range(state.start, int(epochs) + 1):
            t0 = time.perf_counter()
            if seed is not None:
                seed_everything(seed + epoch)
                generator.manual_seed(seed + epoch)
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
            row = _run_epoch(model, train_loader, val_loader, opt, sched, criterion, to_device,
                             epoch=epoch, epochs=epochs, schedule=schedule, loss=loss, lr=lr,
                             augment_flip=augment_flip, num_classes=len(classes), bars=bars,
                             dev=dev, t0=t0)
            state.history.append(row)
            improved = _save_epoch(model, opt, sched, state, row, best_path=best_path,
                                   last_path=last_path, ckpt_kwargs=ckpt_kwargs,
                                   base_meta=base_meta, dev=dev)
            _write_csv(log_path, state.history, columns)
            _report_epoch(say, row, epochs=epochs, loss=loss, improved=improved,
                          classes=classes if verbose else None)
            if on_epoch_end is not None:
                on_epoch_end(row)

        if state.start > int(epochs):
            say(f"{last_path} already holds {state.start - 1} epochs; nothing left to train for epochs={epochs}")
        history, best_epoch = state.history, state.best_epoch
        best_map_value = history[best_epoch - 1]["val_mAP"] if 0 < best_epoch <= len(history) else math.nan
        return TrainResult(
            best_map=float(best_map_value),
            best_epoch=best_epoch,
            history=history,
            checkpoint=best_path,
            last_checkpoint=last_path,
            log_csv=log_path,
            per_class_ap=torch.tensor(state.best_ap, dtype=torch.float64),
            classes=classes,
            start_epoch=start_epoch,
            model=model,
        )


# ------------------------------------------------------------------- the seams of fit()
@dataclass
class _Progress:
    """What carries over between epochs (and through a resume)."""

    history: list[dict[str, Any]]
    best_map: float
    best_epoch: int
    best_ap: list[float]
    start: int


def _check_arguments(train_set, val_set, *, optimizer, schedule, loss, epochs, batch_size) -> None:
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r}: expected one of {OPTIMIZERS}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r}: expected one of {SCHEDULES}")
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r}: expected one of {LOSSES}")
    if int(epochs) < 1:
        raise ValueError(f"epochs={epochs}: expected at least 1")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size}: expected at least 1")
    if len(train_set) == 0:
        raise ValueError("train_set is empty: no samples to train on")
    if len(val_set) == 0:
        raise ValueError("val_set is empty: no samples to validate on")


def _checkpoint_fields(model, train_set, val_set, *, classes, arch, input_size, mean,
                       std, spec=None) -> dict[str, Any]:
    """The metadata every checkpoint of the run stores (defaults in :func:`fit`'s docstring)."""
    desc = describe_model(model.state_dict(), spec)
    arch = arch or desc["arch"]
    num_classes = desc["num_classes"]
    if classes is None:
        classes = getattr(train_set, "classes", None)
    if classes is None:
        surgical = num_classes == len(SURGICAL_CLASSES)
        classes = SURGICAL_CLASSES if surgical else [f"class_{i}" for i in range(num_classes)]
    classes = tuple(str(c) for c in classes)
    if len(classes) != num_classes:
        raise ValueError(f"classes: {len(classes)} names given, the model has {num_classes} outputs")
    if input_size is None:
        input_size = getattr(val_set, "size", None)
    if input_size is None:
        first = next(iter(val_set)) if isinstance(val_set, IterableDataset) else val_set[0]
        image = first["image"] if isinstance(first, Mapping) else first[0]
        input_size = tuple(int(s) for s in torch.as_tensor(image).shape[1:])
    mean = mean if mean is not None else getattr(train_set, "mean", None)
    std = std if std is not None else getattr(train_set, "std", None)
    spec = desc["spec"]
    return dict(classes=classes, arch=arch, input_size=input_size, mean=mean, std=std,
                dropout=spec.dropout if spec is not None else _head_dropout(model), spec=spec)


def _make_optimizer(model: nn.Module, optimizer: str, *, lr, momentum, weight_decay):
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _make_scheduler(opt, schedule: str, *, epochs, lr, train_set, batch_size, plateau_patience):
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(epochs))
    if schedule == "onecycle":
        steps = max(1, int(epochs) * _batches_per_epoch(train_set, batch_size))
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                   pct_start=0.25)
    if schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=0.1, patience=plateau_patience)
    return None


def _resume(last_path: Path, model, opt, sched, state: _Progress, *, schedule, epochs, classes,
            arch, dev, say) -> _Progress:
    """The run's state from ``last_path`` (weights, optimizer, scheduler, history, RNGs)."""
    if not last_path.exists():
        say(f"resume: no {last_path} yet, starting at epoch 1")
        return state
    raw = read_checkpoint(last_path)
    if "train_state" not in raw or "epoch" not in raw:
        raise CheckpointError(
            f"resume: {last_path} is not a resumable gcfeat checkpoint (no epoch/train_state)")
    if list(raw.get("classes") or []) != list(classes) or raw.get("arch") != arch:
        raise CheckpointError(
            f"resume: {last_path} holds {raw.get('arch')} with "
            f"{len(raw.get('classes') or [])} classes {raw.get('classes')}, this run "
            f"(data) is {arch} with {len(classes)} classes {list(classes)}"
        )
    try:
        model.load_state_dict(raw["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"resume: {last_path} does not fit the model: {str(e)[:300]}") from None
    opt.load_state_dict(raw["optimizer_state_dict"])
    if sched is not None and raw.get("scheduler_state_dict") is not None:
        sched.load_state_dict(raw["scheduler_state_dict"])
        if schedule == "cosine":
            sched.T_max = int(epochs)  # a resumed run may extend the epoch count
    saved = raw["train_state"]
    state = _Progress([dict(h) for h in saved["history"]], float(saved["best_map"]),
                      int(saved["best_epoch"]), list(saved["best_ap"]), int(raw["epoch"]) + 1)
    if "rng" in raw:
        _set_rng_state(raw["rng"], dev)
    say(f"resuming from {last_path} at epoch {state.start}/{epochs} "
        f"(best mAP {state.best_map:.4f} at epoch {state.best_epoch})")
    return state


def _loaders(train_set, val_set, *, batch_size, num_workers, seed, dev):
    """``(generator, train_loader, val_loader)``; the generator drives the shuffling."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    pin = dev.type == "cuda"
    iterable = isinstance(train_set, IterableDataset)
    if iterable and hasattr(train_set, "shuffle"):
        train_set.shuffle = True  # e.g. Cholec80: shuffles its video order per epoch
    train_loader = DataLoader(
        train_set, batch_size=batch_size, shuffle=not iterable, num_workers=num_workers,
        collate_fn=collate, generator=generator, worker_init_fn=_worker_init, pin_memory=pin,
    )
    val_loader = DataLoader(
        val_set, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate,
        worker_init_fn=_worker_init, pin_memory=pin,
    )
    return generator, train_loader, val_loader


def _to_device(batch: Mapping[str, Any], *, dev, pin, channels_last, loss
               ) -> tuple[torch.Tensor, torch.Tensor]:
    x = batch["image"].to(dev, non_blocking=pin)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    y = batch["labels"].to(dev, non_blocking=pin)
    y = y.float() if loss == "bce" else y.long().reshape(-1)
    return x, y


def _train_epoch(model, loader, opt, sched, criterion, to_device, *, schedule, augment_flip,
                 desc, bars, dev) -> float:
    """One pass over the training batches; the mean training loss."""
    model.train()
    total, count = torch.zeros((), device=dev), 0
    for batch in tqdm(loader, desc=desc, **bars):
        x, y = to_device(batch)
        if x.shape[0] < 2:
            continue  # a lone last sample: BatchNorm cannot train on a batch of 1
        if augment_flip:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)
        opt.zero_grad(set_to_none=True)
        batch_loss = criterion(model(x), y)
        batch_loss.backward()
        opt.step()
        if schedule == "onecycle" and sched.last_epoch + 1 < sched.total_steps:
            sched.step()  # guarded: an IterableDataset may yield a few extra batches
        total += batch_loss.detach() * x.shape[0]
        count += x.shape[0]
    return float(total) / max(count, 1)


@torch.no_grad()
def _validate(model, loader, criterion, to_device, *, loss, num_classes, desc, bars):
    """``(val_loss, val_mAP, per-class AP list, accuracy or None)`` over the validation set."""
    model.eval()
    logits, targets = [], []
    for batch in tqdm(loader, desc=desc, **bars):
        x, y = to_device(batch)
        logits.append(model(x).float())
        targets.append(y)
    logits_t, targets_t = torch.cat(logits), torch.cat(targets)
    val_loss = float(criterion(logits_t, targets_t))
    if loss == "bce":
        ap = average_precision(logits_t, targets_t)
    else:
        onehot = nn.functional.one_hot(targets_t, num_classes)
        ap = average_precision(logits_t.softmax(1), onehot)
    acc = accuracy(logits_t, targets_t) if loss == "ce" else None
    return val_loss, nanmean(ap), [float(a) for a in ap.cpu().tolist()], acc


def _save_epoch(model, opt, sched, state: _Progress, row: dict, *, best_path, last_path,
                ckpt_kwargs, base_meta, dev) -> bool:
    """The best checkpoint when the epoch improved, the resumable last one always; whether it
    improved."""
    epoch, val_map, val_loss = row["epoch"], row["val_mAP"], row["val_loss"]
    score = val_map if not math.isnan(val_map) else -val_loss
    improved = state.best_epoch == 0 or score > state.best_map
    if improved:
        state.best_map, state.best_epoch, state.best_ap = score, epoch, row["ap"]
        save_checkpoint(
            best_path, model, **ckpt_kwargs,
            meta={**base_meta, "epoch": epoch, "best_mAP": val_map, "val_loss": val_loss,
                  "per_class_AP": row["ap"]},
        )
    save_checkpoint(
        last_path, model, **ckpt_kwargs,
        meta={**base_meta, "epoch": epoch, "best_mAP": state.history[state.best_epoch - 1]["val_mAP"],
              "best_epoch": state.best_epoch},
        optimizer=opt, scheduler=sched, epoch=epoch,
        extra={
            "train_state": {"history": state.history, "best_map": state.best_map,
                            "best_epoch": state.best_epoch, "best_ap": state.best_ap},
            "rng": _rng_state(dev),
        },
    )
    return improved


def _run_epoch(model, train_loader, val_loader, opt, sched, criterion, to_device, *, epoch,
               epochs, schedule, loss, lr, augment_flip, num_classes, bars, dev, t0) -> dict:
    """Train one epoch, validate, step the per-epoch schedule; the epoch's history row."""
    lr_now = opt.param_groups[0]["lr"]
    train_loss = _train_epoch(model, train_loader, opt, sched, criterion, to_device,
                              schedule=schedule, augment_flip=augment_flip,
                              desc=f"epoch {epoch}/{epochs} train", bars=bars, dev=dev)
    if not math.isfinite(train_loss):
        raise FloatingPointError(f"epoch {epoch}: training loss is {train_loss}; lower lr={lr}")
    val_loss, val_map, ap_list, accuracy_ = _validate(
        model, val_loader, criterion, to_device, loss=loss, num_classes=num_classes,
        desc=f"epoch {epoch}/{epochs} val", bars=bars)
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        sched.step(val_loss)
    elif sched is not None and schedule != "onecycle":
        sched.step()
    row: dict[str, Any] = {
        "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_mAP": val_map,
        "lr": float(lr_now), "seconds": time.perf_counter() - t0, "ap": ap_list,
    }
    if loss == "ce":
        row["val_accuracy"] = accuracy_
    return row


def _report_epoch(say, row: dict, *, epochs, loss, improved: bool, classes) -> None:
    """The per-epoch line (and the AP table when ``classes`` is given)."""
    extra = f"  val_acc {row['val_accuracy']:.4f}" if loss == "ce" else ""
    say(
        f"epoch {row['epoch']}/{epochs}  train_loss {row['train_loss']:.4f}  "
        f"val_loss {row['val_loss']:.4f}  val mAP {row['val_mAP']:.4f}{extra}  "
        f"lr {row['lr']:.3g}  {row['seconds']:.1f} s" + ("  [best]" if improved else "")
    )
    if classes is not None:
        say(ap_table(row["ap"], classes))
