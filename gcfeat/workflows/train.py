"""Train a task's classifier (``gcfeat train``, ``python -m gcfeat.tasks.train``).

Every task trains with the one loop, :func:`gcfeat.training.fit`: multi-label tasks (surgical)
with its multi-label objective (BCE, mAP, re-seeded every epoch, resumable), single-label tasks
with the single-label recipe (:func:`gcfeat.training.single_label_options`: cross-entropy,
BatchNorm recalibration, seeded once, best epoch by validation accuracy). Every task's
checkpoint is the one gcfeat format. Unset options take the task's ``defaults``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gcfeat import data as data_stage  # attribute lookups at call time (tests patch them)
from gcfeat.models import build_classifier_with_spec
from gcfeat.tasks import Task, get_task
from gcfeat.tasks.surgical import SURGICAL
from gcfeat.training import fit, seed_everything, single_label_options

__all__ = ["TrainOutcome", "write_synthetic_if_missing", "train", "surgical_datasets", "train_surgical"]


@dataclass
class TrainOutcome:
    """What :func:`train` produced: the best checkpoint, its validation score (``metric``:
    ``"mAP"`` for multi-label, ``"accuracy"`` for single-label) and the per-epoch history."""

    task: str
    arch: str
    checkpoint: Path
    metric: str
    best_score: float
    history: list[dict[str, Any]] = field(default_factory=list)
    train_samples: int = 0
    val_samples: int = 0
    wrote_synthetic: bool = False


def write_synthetic_if_missing(task: str | Task, data: str | os.PathLike, n: int | None = None) -> bool:
    """Write the task's synthetic data into ``data`` when it is missing or empty (``n``:
    training items, else the writer's default); True when it wrote."""
    t = get_task(task)
    data = Path(data)
    if data.exists() and any(data.iterdir()):
        return False
    kw = {}
    if n:
        kw = t.synthetic_kwargs(n, 0)
        kw.pop("seed", None)  # the writer's own default seed, as the CLI always used
    t.write_synthetic(data, **kw)
    return True


def train(
    task: str | Task,
    data: str | os.PathLike,
    *,
    arch: str | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    optimizer: str | None = None,
    seed: int = 0,
    out: str | os.PathLike = "checkpoints",
    balance: bool = False,
    synthetic: bool = False,
    n: int | None = None,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> TrainOutcome:
    """Train ``task``'s classifier on ``data`` into ``out/<task>_<arch>_best.pt``.

    ``synthetic``: write the task's synthetic data first when ``data`` is empty (``n`` items).
    ``balance``: prostate only, subsample negative training slices. ``say`` prints the
    progress lines (what was written, the sample counts) as they happen. The generators are
    seeded from ``seed`` before the model is built, so its initial weights (and the run) depend
    on ``seed`` only, not on what the process drew before.
    """
    t = get_task(task)
    d = t.defaults
    epochs, lr = epochs or d["epochs"], lr or d["lr"]
    bs, opt = batch_size or d["batch_size"], optimizer or d["optimizer"]
    arch = arch or t.default_arch
    wrote = synthetic and write_synthetic_if_missing(t, data, n)
    if wrote:
        say(f"wrote synthetic {t.name} data to {data}")
    if t.kind == "multilabel":
        train_set, val_set = t.build_dataset(data, "train"), t.build_dataset(data, "val")
        seed_everything(seed)
        r = fit(
            t.build_model(arch),
            train_set,
            val_set,
            epochs=epochs,
            lr=lr,
            batch_size=bs,
            optimizer=opt,
            out_dir=out,
            name=f"{t.name}_{arch}",
            arch=arch,
            seed=seed,
            classes=t.classes,
            mean=t.mean,
            std=t.std,
            task=t.name,
        )
        return TrainOutcome(
            t.name, arch, r.checkpoint, "mAP", r.best_score, r.history, len(train_set), len(val_set), wrote
        )
    extra = {"balance": True, "seed": seed} if balance else {}
    train_set = t.build_dataset(data, "train", **extra)
    val_set = t.build_dataset(data, t.val_split)
    say(f"{t.name}: {len(train_set)} training / {len(val_set)} validation samples, model {arch}")
    seed_everything(seed)
    r = fit(
        t.build_model(arch),
        train_set,
        val_set,
        **single_label_options(task=t, arch=arch, seed=seed),
        out_dir=out,
        epochs=epochs,
        lr=lr,
        batch_size=bs,
        optimizer=opt,
        device="cpu",
        progress=progress,
    )
    return TrainOutcome(
        t.name, arch, r.checkpoint, "accuracy", r.best_score, r.history, len(train_set), len(val_set), wrote
    )


def surgical_datasets(
    data: str | os.PathLike,
    layout: str = "auto",
    size: Sequence[int] = SURGICAL.input_size,
    mean=SURGICAL.mean,
    std=SURGICAL.std,
):
    """``(layout, train_set, val_set)`` of a surgical folder (layout detected when ``auto``)."""
    layout = data_stage.detect_layout(data) if layout == "auto" else layout
    kw = dict(size=size, mean=mean, std=std)
    return (
        layout,
        data_stage.build_dataset(data, layout, "train", **kw),
        data_stage.build_dataset(data, layout, "val", **kw),
    )


def train_surgical(
    train_set,
    val_set,
    *,
    arch: str = "resnet50",
    size: Sequence[int] = SURGICAL.input_size,
    mean=SURGICAL.mean,
    std=SURGICAL.std,
    dropout: float = 0.0,
    weights: str | None = None,
    seed: int = 0,
    name: str = "model",
    log: str | None = None,
    workers: int = 2,
    quiet: bool = False,
    meta: dict | None = None,
    **fit_options,
):
    """The full surgical recipe of ``gcfeat train``: seed, a fresh classifier (``arch``: a
    ResNet, any torchvision name or ``timm:NAME``, from scratch or a local ``weights`` file,
    :func:`gcfeat.models.build_classifier_with_spec`), then :func:`gcfeat.training.fit` with
    every option it takes (schedule, momentum, resume, ...); the checkpoints store the
    model's ``ClassifierSpec``. Returns fit's :class:`~gcfeat.training.TrainResult`."""
    seed_everything(seed)
    model, spec = build_classifier_with_spec(
        arch, num_classes=SURGICAL.num_classes, dropout=dropout, weights=weights
    )
    return fit(
        model,
        train_set,
        val_set,
        num_workers=workers,
        seed=seed,
        name=name,
        spec=spec,
        classes=SURGICAL.classes,
        task=SURGICAL.name,
        arch=arch,
        input_size=size,
        mean=mean,
        std=std,
        meta=meta,
        log_csv=log,
        progress=not quiet,
        verbose=not quiet,
        **fit_options,
    )
