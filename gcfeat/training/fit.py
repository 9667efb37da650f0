"""Training API: :func:`fit`, the one training loop of every task.

It trains a classifier, validates each epoch, keeps the best and the last checkpoint, and
resumes. What differs between tasks is passed as small strategies, not as a second loop:

- the **objective** (:mod:`gcfeat.training.objectives`): ``loss="bce"`` multi-label (BCE,
  sigmoid, validation mAP; the surgical task) or ``loss="ce"`` single-label (cross-entropy on
  the class id, softmax, validation accuracy / ROC AUC; the MRI tasks);
- the **schedule** (cosine, one-cycle, plateau, none) and the optimizer (SGD, AdamW);
- **BatchNorm recalibration** after each epoch (``recalibrate_bn``; short single-label runs);
- the **seeding** (:class:`gcfeat.training.rng.Seeding`): re-seeded every epoch (resumable,
  the multi-label recipe) or once (the single-label recipe);
- the **checkpoint writer** (:class:`CheckpointWriter`): ``<out_dir>/<name>_best.pt`` (best
  epoch) and ``<name>_last.pt`` (everything needed to resume: weights, optimizer, scheduler,
  epoch, history, RNG states), both the one gcfeat format
  (:func:`gcfeat.models.checkpoint.save_checkpoint`, ``task`` set), readable with
  ``weights_only=True``.

Example::

    model = build_classifier("resnet50", num_classes=11)
    result = fit(model, train_set, val_set, epochs=8, lr=1e-3, out_dir="checkpoints",
                 name="miccai18_resnet50", classes=SURGICAL_CLASSES, arch="resnet50",
                 input_size=(256, 320), mean=SURGICAL_MEAN, std=SURGICAL_STD)
    print(result.best_score, result.checkpoint)
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from gcfeat.data.classes import SURGICAL_CLASSES
from gcfeat.metrics.classification import ap_table
from gcfeat.models.checkpoint import (
    CheckpointError,
    describe_state_dict,
    is_resnet2d,
    read_checkpoint,
    save_checkpoint,
)
from gcfeat.training.batchnorm import recalibrate_batchnorm
from gcfeat.training.collate import collate
from gcfeat.training.objectives import OBJECTIVES, Objective, get_objective
from gcfeat.training.rng import SEEDINGS, Seeding, rng_state, seed_everything, set_rng_state, worker_init

__all__ = [
    "fit",
    "TrainResult",
    "CheckpointWriter",
    "seed_everything",
    "OPTIMIZERS",
    "SCHEDULES",
    "LOSSES",
    "SEEDINGS",
    "LOSS_SUMS",
]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "onecycle", "plateau", "none")
LOSSES = tuple(OBJECTIVES)
#: How the epoch's training loss is summed: on the device (no host sync per batch; the
#: multi-label recipe) or as a Python float per batch (the single-label recipe).
LOSS_SUMS = ("device", "host")
CSV_COLUMNS = OBJECTIVES["bce"].columns


@dataclass
class TrainResult:
    """What :func:`fit` produced.

    ``history`` has one dict per epoch (``epoch`` 1-based, ``train_loss``, ``val_loss``, the
    objective's metrics (``val_mAP`` and ``ap`` (K floats), or ``val_accuracy``), ``lr``,
    ``seconds``); ``metric`` names the score the best epoch was chosen by and ``best_score``
    its value; ``per_class_ap`` is the best epoch's ``(K,)`` AP (NaN: no positives, or a
    single-label run); ``model`` is the trained model with the last epoch's weights (the best
    epoch's are in ``checkpoint``); ``start_epoch`` is the first epoch this call trained (> 1
    after a resume).
    """

    best_score: float
    best_epoch: int
    history: list[dict[str, Any]]
    checkpoint: Path
    last_checkpoint: Path | None
    log_csv: Path
    per_class_ap: torch.Tensor
    classes: tuple[str, ...]
    metric: str = "val_mAP"
    start_epoch: int = 1
    model: nn.Module | None = field(default=None, repr=False)

    @property
    def best_map(self) -> float:
        """``best_score`` under its multi-label name (the best validation mAP)."""
        return self.best_score


@dataclass
class FitOptions:
    """Every option of :func:`fit` (each a keyword of ``fit``), with its default.

    - ``epochs``: total epochs (a resumed run continues up to this number); ``batch_size``.
    - ``lr``, ``optimizer`` (``"sgd"``: momentum, Nesterov off; ``"adamw"``), ``weight_decay``,
      ``momentum``.
    - ``schedule``: ``"cosine"`` (to 0 over ``epochs``, stepped per epoch), ``"plateau"`` (x0.1
      when the validation loss stalls ``plateau_patience`` epochs, the original's recipe),
      ``"onecycle"`` (warm-up to ``lr`` over the first quarter of all steps, then cosine down;
      stepped per batch) or ``"none"``.
    - ``loss``: the objective, ``"bce"`` (multi-label) or ``"ce"`` (single-label), or an
      :class:`~gcfeat.training.objectives.Objective`.
    - ``recalibrate_bn``: after each epoch recompute the BatchNorm statistics over the training
      batches (:func:`~gcfeat.training.batchnorm.recalibrate_batchnorm`) before validating.
    - ``seed`` (``None``: not seeded) and ``seeding``: ``"per_epoch"`` or ``"once"``
      (:mod:`gcfeat.training.rng`); ``deterministic``: deterministic GPU kernels during the
      run (default: when ``seed`` is set).
    - ``loss_sum``: ``"device"`` or ``"host"``, how the epoch's training loss is summed.
    - ``augment_flip``: flip each training image left-right with probability 1/2 (on the
      device, from the seeded generator, so resumed runs stay identical).
    - ``device``: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:0"``, ...;
      ``num_workers``: DataLoader workers; ``channels_last``: channels-last memory format.
    - ``out_dir``, ``name``: checkpoints go to ``out_dir/<name>_best.pt`` and (``keep_last``)
      ``<name>_last.pt``; ``log_csv``: the CSV log (default ``out_dir/<name>_log.csv``).
    - ``classes``, ``arch``, ``input_size``, ``mean``, ``std``, ``task``: stored in the
      checkpoints. Defaults: ``classes`` from ``train_set.classes`` or the surgical list when
      K == 11; ``arch`` from the weights (required unless a torchvision ResNet);
      ``input_size`` from the first validation image; ``mean``/``std`` from the dataset's
      attributes of that name, else ``None``. ``meta``: extra checkpoint metadata.
    - ``resume``: continue from ``<name>_last.pt`` if it exists (else start at epoch 1).
    - ``progress``: tqdm bars; ``verbose``: the per-epoch line (and the AP table);
      ``on_epoch_end``: called with each history row after its checkpoints are written.
    """

    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    optimizer: str = "sgd"
    schedule: str = "cosine"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    plateau_patience: int = 2
    loss: str | Objective = "bce"
    recalibrate_bn: bool = False
    seed: int | None = 0
    seeding: str = "per_epoch"
    deterministic: bool | None = None
    loss_sum: str = "device"
    augment_flip: bool = False
    device: str | torch.device | None = "auto"
    num_workers: int = 0
    channels_last: bool = False
    out_dir: str | os.PathLike = "checkpoints"
    name: str = "model"
    keep_last: bool = True
    log_csv: str | os.PathLike | None = None
    classes: Sequence[str] | None = None
    arch: str | None = None
    input_size: Sequence[int] | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    task: str | None = None
    meta: Mapping[str, Any] | None = None
    resume: bool = False
    progress: bool = True
    verbose: bool = True
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None
    #: the model's ClassifierSpec (``build_classifier_with_spec``), stored in the checkpoints
    #: so that ``load_checkpoint`` rebuilds it; needed for any model but a ResNet / a task's own
    spec: Any = None

    def __post_init__(self) -> None:
        for key, allowed in (
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("loss_sum", LOSS_SUMS),
            ("seeding", SEEDINGS),
        ):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key}={getattr(self, key)!r}: expected one of {allowed}")
        self.loss = get_objective(self.loss)
        if int(self.epochs) < 1:
            raise ValueError(f"epochs={self.epochs}: expected at least 1")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size={self.batch_size}: expected at least 1")


def fit(model: nn.Module, train_set: Dataset, val_set: Dataset, **options: Any) -> TrainResult:
    """Train ``model`` on ``train_set``, validating on ``val_set`` after every epoch.

    Args:
        model: a classifier ``(B, C, *spatial) -> (B, K)`` logits.
        train_set, val_set: Datasets of sample dicts (``image (C, *spatial)``, ``labels (K,)``
            multi-hot float and / or ``label`` class id; see docs/DESIGN.md) or
            ``(image, label)`` tuples.
        **options: the fields of :class:`FitOptions` (epochs, lr, loss, schedule, ...).

    Returns:
        :class:`TrainResult`.
    """
    o = FitOptions(**options)
    if len(train_set) == 0:
        raise ValueError("train_set is empty: no samples to train on")
    if len(val_set) == 0:
        raise ValueError("val_set is empty: no samples to validate on")
    with _determinism(o.seed is not None if o.deterministic is None else o.deterministic):
        dev = _resolve_device(o.device)
        fields = _checkpoint_fields(model, train_set, val_set, o)
        writer = CheckpointWriter(
            Path(o.out_dir), o.name, fields, o.loss, o.keep_last, _base_meta(train_set, val_set, o)
        )
        model.to(dev)
        if o.channels_last:
            model.to(memory_format=torch.channels_last)
        opt = _make_optimizer(model, o)
        sched = _make_scheduler(opt, o, train_set)
        generator, train_loader, val_loader = _loaders(train_set, val_set, o, dev)
        rng = Seeding(o.seed, o.seeding)
        rng.start(generator)
        say = tqdm.write if o.verbose else (lambda *a, **k: None)
        state = _Progress([], -math.inf, 0, [math.nan] * len(fields["classes"]), 1)
        if o.resume:
            state = _resume(writer.last_path, model, opt, sched, state, o, fields, dev, say)
        run = _Run(model, train_set, train_loader, val_loader, opt, sched, rng, generator, dev, o)
        log_path = Path(o.log_csv) if o.log_csv is not None else Path(o.out_dir) / f"{o.name}_log.csv"
        start_epoch = state.start
        for epoch in range(state.start, int(o.epochs) + 1):
            row = run.epoch(epoch)
            state.history.append(row)
            improved = writer.write(model, opt, sched, state, row, dev)
            _write_csv(log_path, state.history, o.loss.columns)
            _report_epoch(
                say,
                row,
                epochs=o.epochs,
                improved=improved,
                classes=fields["classes"] if o.verbose and o.loss.per_class else None,
            )
            if o.on_epoch_end is not None:
                o.on_epoch_end(row)
        if state.start > int(o.epochs):
            say(
                f"{writer.last_path} already holds {state.start - 1} epochs; nothing left to "
                f"train for epochs={o.epochs}"
            )
        return _result(state, writer, log_path, o.loss, fields, start_epoch, model)


# ------------------------------------------------------------------- the seams of fit()
@dataclass
class _Progress:
    """What carries over between epochs (and through a resume)."""

    history: list[dict[str, Any]]
    best_score: float
    best_epoch: int
    best_ap: list[float]
    start: int


@contextlib.contextmanager
def _determinism(enabled: bool):
    """Deterministic kernels inside the block (CPU kernels already are); restored after."""
    if not enabled:
        yield
        return
    saved = (
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
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


def _num_outputs(model: nn.Module, arch: str | None) -> tuple[str, int]:
    """``(arch, K)``: from the weights of a torchvision ResNet, else ``arch`` and the
    out_features of the last ``Linear``."""
    state = model.state_dict()
    if is_resnet2d(state):
        desc = describe_state_dict(state)
        return arch or desc["arch"], desc["num_classes"]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if arch is None or not linears:
        raise ValueError(
            "arch: required for a model that is not a torchvision ResNet (and the model needs a Linear head)"
        )
    return arch, int(linears[-1].out_features)


def _checkpoint_fields(model, train_set, val_set, o: FitOptions) -> dict[str, Any]:
    """The metadata every checkpoint of the run stores (defaults in :class:`FitOptions`)."""
    arch, num_classes = _num_outputs(model, o.arch)
    classes = o.classes if o.classes is not None else getattr(train_set, "classes", None)
    if classes is None:
        surgical = num_classes == len(SURGICAL_CLASSES)
        classes = SURGICAL_CLASSES if surgical else [f"class_{i}" for i in range(num_classes)]
    classes = tuple(str(c) for c in classes)
    if len(classes) != num_classes:
        raise ValueError(f"classes: {len(classes)} names given, the model has {num_classes} outputs")
    input_size = o.input_size if o.input_size is not None else getattr(val_set, "size", None)
    if input_size is None:
        first = next(iter(val_set)) if isinstance(val_set, IterableDataset) else val_set[0]
        image = first["image"] if isinstance(first, Mapping) else first[0]
        input_size = tuple(int(s) for s in torch.as_tensor(image).shape[1:])
    mean = o.mean if o.mean is not None else getattr(train_set, "mean", None)
    std = o.std if o.std is not None else getattr(train_set, "std", None)
    dropout = o.spec.dropout if o.spec is not None else _head_dropout(model)
    return dict(
        classes=classes,
        arch=arch,
        input_size=input_size,
        mean=mean,
        std=std,
        dropout=dropout,
        task=o.task,
        spec=o.spec,
    )


def _base_meta(train_set, val_set, o: FitOptions) -> dict[str, Any]:
    """The training metadata every checkpoint of the run carries."""
    meta = {
        "epochs": int(o.epochs),
        "seed": o.seed,
        "optimizer": o.optimizer,
        "lr": float(o.lr),
        "schedule": o.schedule,
        "batch_size": int(o.batch_size),
        "weight_decay": float(o.weight_decay),
        "loss": o.loss.name,
        "train_size": len(train_set),
        "val_size": len(val_set),
        "data": str(getattr(train_set, "root", "")) or None,
    }
    meta.update(o.meta or {})
    return meta


def _make_optimizer(model: nn.Module, o: FitOptions):
    params = [p for p in model.parameters() if p.requires_grad]
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)


def _batches_per_epoch(dataset: Dataset, batch_size: int) -> int:
    # The training loop skips a lone last sample (BatchNorm), so count only batches of >= 2.
    full, rest = divmod(len(dataset), int(batch_size))
    return full + (1 if rest >= 2 else 0)


def _make_scheduler(opt, o: FitOptions, train_set):
    if o.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(o.epochs))
    if o.schedule == "onecycle":
        steps = max(1, int(o.epochs) * _batches_per_epoch(train_set, o.batch_size))
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.lr, total_steps=steps, pct_start=0.25)
    if o.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=0.1, patience=o.plateau_patience
        )
    return None


def _resume(
    last_path: Path, model, opt, sched, state: _Progress, o: FitOptions, fields, dev, say
) -> _Progress:
    """The run's state from ``last_path`` (weights, optimizer, scheduler, history, RNGs)."""
    if not last_path.exists():
        say(f"resume: no {last_path} yet, starting at epoch 1")
        return state
    raw = read_checkpoint(last_path)
    if "train_state" not in raw or "epoch" not in raw:
        raise CheckpointError(
            f"resume: {last_path} is not a resumable gcfeat checkpoint (no epoch/train_state)"
        )
    classes, arch = fields["classes"], fields["arch"]
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
        if o.schedule == "cosine":
            sched.T_max = int(o.epochs)  # a resumed run may extend the epoch count
    saved = raw["train_state"]
    state = _Progress(
        [dict(h) for h in saved["history"]],
        float(saved["best_map"]),
        int(saved["best_epoch"]),
        list(saved["best_ap"]),
        int(raw["epoch"]) + 1,
    )
    if "rng" in raw:
        set_rng_state(raw["rng"], dev)
    say(
        f"resuming from {last_path} at epoch {state.start}/{o.epochs} "
        f"(best score {state.best_score:.4f} at epoch {state.best_epoch})"
    )
    return state


def _loaders(train_set, val_set, o: FitOptions, dev):
    """``(generator, train_loader, val_loader)``; the generator drives the shuffling.

    A map-style training set whose last batch would hold one sample drops it (BatchNorm cannot
    train on a batch of 1, nor the recalibration pass average one)."""
    generator = torch.Generator()
    pin = dev.type == "cuda"
    iterable = isinstance(train_set, IterableDataset)
    if iterable and hasattr(train_set, "shuffle"):
        train_set.shuffle = True  # e.g. Cholec80: shuffles its video order per epoch
    drop_last = not iterable and len(train_set) % int(o.batch_size) == 1
    train_loader = DataLoader(
        train_set,
        batch_size=o.batch_size,
        shuffle=not iterable,
        num_workers=o.num_workers,
        collate_fn=collate,
        generator=generator,
        worker_init_fn=worker_init,
        pin_memory=pin,
        drop_last=drop_last,
    )
    val_loader = DataLoader(
        val_set,
        batch_size=o.batch_size,
        shuffle=False,
        num_workers=o.num_workers,
        collate_fn=collate,
        worker_init_fn=worker_init,
        pin_memory=pin,
    )
    return generator, train_loader, val_loader


@dataclass
class _Run:
    """One epoch of :func:`fit`: train, (recalibrate BatchNorm), validate, step the schedule."""

    model: nn.Module
    train_set: Dataset
    train_loader: DataLoader
    val_loader: DataLoader
    opt: torch.optim.Optimizer
    sched: Any
    rng: Seeding
    generator: torch.Generator
    dev: torch.device
    o: FitOptions

    def epoch(self, epoch: int) -> dict[str, Any]:
        """The epoch's history row."""
        o, t0 = self.o, time.perf_counter()
        self.rng.epoch(epoch, self.generator)
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        lr_now = self.opt.param_groups[0]["lr"]
        bars = dict(disable=None if o.progress else True, leave=False)
        train_loss = self.train(desc=f"epoch {epoch}/{o.epochs} train", bars=bars)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"epoch {epoch}: training loss is {train_loss}; lower lr={o.lr}")
        if o.recalibrate_bn:
            recalibrate_batchnorm(self.model, self.train_loader, self.dev)
        val_loss, metrics = self.validate(desc=f"epoch {epoch}/{o.epochs} val", bars=bars)
        if isinstance(self.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.sched.step(val_loss)
        elif self.sched is not None and o.schedule != "onecycle":
            self.sched.step()
        ap = metrics.pop("ap", None)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            **metrics,
            "lr": float(lr_now),
            "seconds": time.perf_counter() - t0,
        }
        if ap is not None:
            row["ap"] = ap
        return row

    def batch(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, targets)`` on the device."""
        pin = self.dev.type == "cuda"
        x = batch["image"].to(self.dev, non_blocking=pin)
        if self.o.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.o.loss.targets(batch, self.dev, pin)

    def train(self, desc: str, bars: dict) -> float:
        """One pass over the training batches; the mean training loss."""
        model, opt, sched, o = self.model, self.opt, self.sched, self.o
        model.train()
        host = o.loss_sum == "host"
        total, count = (0.0 if host else torch.zeros((), device=self.dev)), 0
        for batch in tqdm(self.train_loader, desc=desc, **bars):
            x, y = self.batch(batch)
            if x.shape[0] < 2:
                continue  # a lone last sample: BatchNorm cannot train on a batch of 1
            if o.augment_flip:
                flip = torch.rand(x.shape[0], device=x.device) < 0.5
                x = torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)
            opt.zero_grad(set_to_none=True)
            batch_loss = o.loss.loss(model(x), y)
            batch_loss.backward()
            opt.step()
            if o.schedule == "onecycle" and sched.last_epoch + 1 < sched.total_steps:
                sched.step()  # guarded: an IterableDataset may yield a few extra batches
            total += (float(batch_loss.detach()) if host else batch_loss.detach()) * x.shape[0]
            count += x.shape[0]
        return float(total) / max(count, 1)

    @torch.no_grad()
    def validate(self, desc: str, bars: dict) -> tuple[float, dict[str, Any]]:
        """``(val_loss, the objective's metrics)`` over the validation set."""
        self.model.eval()
        logits, targets = [], []
        for batch in tqdm(self.val_loader, desc=desc, **bars):
            x, y = self.batch(batch)
            logits.append(self.model(x).float())
            targets.append(y)
        logits_t, targets_t = torch.cat(logits), torch.cat(targets)
        val_loss = float(self.o.loss.loss(logits_t, targets_t))
        return val_loss, self.o.loss.metrics(logits_t, targets_t)


@dataclass
class CheckpointWriter:
    """Writes a run's checkpoints in the one gcfeat format: ``<name>_best.pt`` when an epoch
    improves the objective's score, and (``keep_last``) the resumable ``<name>_last.pt`` after
    every epoch. ``fields``: classes, arch, input_size, mean, std, dropout, task."""

    out_dir: Path
    name: str
    fields: dict[str, Any]
    objective: Objective
    keep_last: bool = True
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def best_path(self) -> Path:
        return self.out_dir / f"{self.name}_best.pt"

    @property
    def last_path(self) -> Path:
        return self.out_dir / f"{self.name}_last.pt"

    def _score_meta(self, row: Mapping[str, Any]) -> dict[str, Any]:
        if self.objective.per_class:
            return {"best_mAP": row["val_mAP"], "per_class_AP": row["ap"]}
        return {self.objective.metric: row[self.objective.metric]}

    def write(self, model, opt, sched, state: _Progress, row: dict, dev) -> bool:
        """The best checkpoint when ``row``'s epoch improved, the last one always; whether it
        improved (updates ``state``)."""
        epoch, score = row["epoch"], self.objective.score(row)
        improved = state.best_epoch == 0 or score > state.best_score
        if improved:
            state.best_score, state.best_epoch = score, epoch
            state.best_ap = row.get("ap", state.best_ap)
            save_checkpoint(
                self.best_path,
                model,
                **self.fields,
                meta={**self.meta, "epoch": epoch, **self._score_meta(row), "val_loss": row["val_loss"]},
            )
        if self.keep_last:
            best_row = state.history[state.best_epoch - 1]
            save_checkpoint(
                self.last_path,
                model,
                **self.fields,
                meta={
                    **self.meta,
                    "epoch": epoch,
                    **self._score_meta(best_row),
                    "best_epoch": state.best_epoch,
                },
                optimizer=opt,
                scheduler=sched,
                epoch=epoch,
                extra={
                    "train_state": {
                        "history": state.history,
                        "best_map": state.best_score,
                        "best_epoch": state.best_epoch,
                        "best_ap": state.best_ap,
                    },
                    "rng": rng_state(dev),
                },
            )
        return improved


def _result(
    state: _Progress,
    writer: CheckpointWriter,
    log_path: Path,
    objective: Objective,
    fields: dict,
    start_epoch: int,
    model: nn.Module,
) -> TrainResult:
    history, best_epoch = state.history, state.best_epoch
    best = history[best_epoch - 1][objective.metric] if 0 < best_epoch <= len(history) else math.nan
    return TrainResult(
        best_score=float(best),
        best_epoch=best_epoch,
        history=history,
        checkpoint=writer.best_path,
        last_checkpoint=writer.last_path if writer.keep_last else None,
        log_csv=log_path,
        per_class_ap=torch.tensor(state.best_ap, dtype=torch.float64),
        classes=fields["classes"],
        metric=objective.metric,
        start_epoch=start_epoch,
        model=model,
    )


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


def _report_epoch(say, row: dict, *, epochs, improved: bool, classes) -> None:
    """The per-epoch line (and the AP table when ``classes`` is given)."""
    scores = "".join(
        f"  {label} {row[key]:.4f}"
        for key, label in (("val_mAP", "val mAP"), ("val_accuracy", "val_acc"), ("val_roc_auc", "val_auc"))
        if key in row
    )
    say(
        f"epoch {row['epoch']}/{epochs}  train_loss {row['train_loss']:.4f}  "
        f"val_loss {row['val_loss']:.4f}{scores}  "
        f"lr {row['lr']:.3g}  {row['seconds']:.1f} s" + ("  [best]" if improved else "")
    )
    if classes is not None:
        say(ap_table(row["ap"], classes))
