"""Classifier checkpoints: save with their metadata, load every form safely.

A gcfeat checkpoint is a plain dict (tensors, str, numbers, lists, dicts only, so that
``torch.load(path, weights_only=True)`` reads it)::

    {"format": "gcfeat-checkpoint", "version": 1,
     "state_dict": {...},                      # keys as the model has them (fc.1.* with dropout)
     "arch": "resnet50", "num_classes": 11, "classes": ["bipolar_forceps", ...],
     "input_size": [256, 320], "mean": [...], "std": [...], "dropout": 0.0,
     "in_channels": 3, "norm": "batch",
     "spec": {"arch", "num_classes", "head", "dropout", "in_channels", "options"},  # optional
     "meta": {"epochs": 8, "best_mAP": 0.97, "seed": 0, "data": "...", "gcfeat_version": ...,
              "time": "2024-...", ...},
     # optional, for resuming: "epoch", "optimizer_state_dict", "scheduler_state_dict", ...}

:func:`load_checkpoint` also reads the original system's forms: a bare state dict (often with
``module.`` prefixes from DataParallel, and ``fc.1.*`` keys for the dropout head) and the
resume dict ``{epoch, model_state_dict, optimizer_state_dict, best_epoch, best_mAP, info_list}``.
For those the architecture and class count are inferred from the keys and shapes; 11 outputs
get :data:`~gcfeat.data.classes.SURGICAL_CLASSES`, 9 outputs (the original GC-A / GC-B models)
:data:`~gcfeat.data.classes.MICCAI18_CLASSES_9` (8 tools, tissue at index 8).

Files are always read with ``weights_only=True``: a file that pickles functions or arbitrary
objects is refused, never executed. The original resume dict holds ``np.float64`` values
(``best_mAP`` and the ``info_list`` rows come from ``np.nanmean`` / ``np.mean``); exactly that
numpy scalar type is allowed while reading (:data:`NUMPY_SCALAR_DTYPES`, through
``torch.serialization.safe_globals``: numpy's scalar constructor and ``numpy.dtype`` wrapped so
that any other dtype is refused), and its values come back as Python floats.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gcfeat.errors import GcfeatError
from gcfeat.data.classes import MICCAI18_CLASSES_9, SURGICAL_CLASSES, SURGICAL_MEAN, SURGICAL_STD
from gcfeat.models.torch_files import (  # noqa: F401  (public here as before)
    FORMAT,
    CheckpointError,
    _short,
    _strip_module,
    infer_arch,
    NUMPY_SCALAR_DTYPES,
    read_torch_file,
    unwrap_state_dict,
)
from gcfeat.models.resnet import (
    ARCHS,
    DEFAULT_HEAD_DROPOUT,
    _summary,
    build_classifier,
    remap_head_keys,
)
from gcfeat.models.zoo import ClassifierSpec

VERSION = 1

#: Input size the surgical classifier was trained at, (H, W) (facts §1).
SURGICAL_INPUT_SIZE: tuple[int, int] = (256, 320)

#: Top-level keys :func:`save_checkpoint` writes itself; ``extra`` may not override them.
_RESERVED = frozenset({
    "format", "version", "state_dict", "arch", "num_classes", "classes", "input_size", "mean",
    "std", "dropout", "in_channels", "norm", "meta", "epoch", "optimizer_state_dict",
    "scheduler_state_dict", "spec",
})


@dataclass
class CheckpointInfo:
    """What a checkpoint file holds besides the weights.

    One record for every task. ``form`` is ``"gcfeat"``, ``"state_dict"`` (bare, original
    ``*_best_checkpoint.pth.tar``), ``"resume"`` (original ``{epoch, model_state_dict, ...}``) or
    ``"task"`` (the single-label task checkpoint, :mod:`gcfeat.models.task_checkpoint`). For the
    bare forms ``input_size``/``mean``/``std`` are the surgical defaults when K is 11 or 9 (the
    original's class lists), else ``None``.
    """

    path: str
    form: str
    arch: str
    num_classes: int
    classes: tuple[str, ...]
    dropout: float
    input_size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    in_channels: int = 3
    norm: str = "batch"
    epoch: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: the task of a task checkpoint (``form`` ``"task"``; :mod:`gcfeat.models.task_checkpoint`)
    task: str | None = None
    #: the file's own metadata as stored (task checkpoints: format, task, arch, classes,
    #: input_size, meta), for mapping-style access
    stored: dict[str, Any] = field(default_factory=dict, repr=False)
    #: what rebuilds the model (any backbone; None for ResNet files written without one)
    spec: ClassifierSpec | None = None

    def __getitem__(self, key: str) -> Any:
        """Mapping-style access (``info["arch"]``): the value as stored in the file when it has
        one (lists stay lists), else the attribute."""
        if key in self.stored:
            return self.stored[key]
        if key in self.__dataclass_fields__:
            return getattr(self, key)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


# --------------------------------------------------------------------------------- reading

#: Class names of original (bare / resume) checkpoints by their number of outputs.
ORIGINAL_CLASSES: dict[int, tuple[str, ...]] = {
    len(SURGICAL_CLASSES): SURGICAL_CLASSES,
    len(MICCAI18_CLASSES_9): MICCAI18_CLASSES_9,
}


def _numpy_to_python(value: Any) -> Any:
    """numpy scalars inside plain containers -> Python numbers (so metadata stays plain)."""
    if isinstance(value, dict):
        return {k: _numpy_to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_numpy_to_python(v) for v in value)
    item = getattr(value, "item", None)
    if item is not None and not isinstance(value, torch.Tensor) and type(value).__module__ == "numpy":
        return item()
    return value


def describe_state_dict(state: Mapping[str, torch.Tensor], path: str | os.PathLike = "<state>") -> dict[str, Any]:
    """``arch``, ``num_classes``, ``dropout_head``, ``in_channels``, ``norm`` of a ResNet state."""
    arch = infer_arch(state)
    if arch is None:
        keys = list(state)[:5]
        raise CheckpointError(
            f"checkpoint {path}: does not hold ResNet weights (first keys {keys}), expected a "
            f"torchvision {'/'.join(ARCHS)} state dict"
        )
    if arch not in ARCHS:
        raise CheckpointError(f"checkpoint {path}: holds {arch} weights, expected one of {sorted(ARCHS)}")
    if "fc.1.weight" in state:
        fc, dropout_head = state["fc.1.weight"], True
    elif "fc.weight" in state:
        fc, dropout_head = state["fc.weight"], False
    else:
        raise CheckpointError(f"checkpoint {path}: {arch} weights without a head (no fc.weight or fc.1.weight)")
    return {
        "arch": arch,
        "num_classes": int(fc.shape[0]),
        "dropout_head": dropout_head,
        "in_channels": int(state["conv1.weight"].shape[1]) if "conv1.weight" in state else 3,
        "norm": "batch" if "bn1.weight" in state else "none",
    }


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw dict of a checkpoint (safe load), e.g. to resume an optimizer."""
    raw = read_torch_file(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"checkpoint {path}: holds a {type(raw).__name__}, expected a dict")
    return raw


# ------------------------------------------------------------ any backbone: the ClassifierSpec


def describe_model(state: Mapping[str, torch.Tensor], spec: ClassifierSpec | Mapping | None,
                   path: str | os.PathLike = "<state>") -> dict[str, Any]:
    """:func:`describe_state_dict`'s fields of any classifier, and its ``spec``.

    A ResNet (no spec, or a ``resnet18/34/50`` spec) is described from its keys as before; any
    other model by its :class:`~gcfeat.models.zoo.ClassifierSpec` (``spec``: the spec or its
    ``to_dict()``, as a checkpoint's ``"spec"`` entry holds it), checked against the head's
    weights. The returned ``"spec"`` is the spec (None for a ResNet given none).
    """
    if spec is not None and not isinstance(spec, ClassifierSpec):
        try:
            spec = ClassifierSpec.from_dict(spec)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint {path}: malformed spec {spec!r} ({e}); expected "
                                  f"ClassifierSpec.to_dict()'s entries") from None
    if spec is None or spec.arch in ARCHS:
        desc = describe_state_dict(state, path)
        if spec is not None and spec.arch != desc["arch"]:
            raise CheckpointError(f"checkpoint {path}: spec says {spec.arch} but the weights "
                                  f"are {desc['arch']}")
        return {**desc, "spec": spec}
    keys = [f"{spec.head}.weight", f"{spec.head}.1.weight"]
    weight = next((state[k] for k in keys if k in state), None)
    if weight is None or weight.ndim != 2 or int(weight.shape[0]) != spec.num_classes:
        found = None if weight is None else tuple(weight.shape)
        raise CheckpointError(f"checkpoint {path}: {spec.arch} weights without a "
                              f"{spec.num_classes}-way head {spec.head} (found {found})")
    return {"arch": spec.arch, "num_classes": spec.num_classes,
            "dropout_head": spec.dropout > 0, "in_channels": spec.in_channels,
            "norm": str(spec.options.get("norm", "")), "spec": spec}


def _build_from_spec(spec: ClassifierSpec, state: Mapping[str, torch.Tensor], path) -> nn.Module:
    """A spec'd (non-ResNet) model holding ``state`` exactly (every key, every shape).

    Built on the CPU with the global RNG state restored afterwards, not on the meta device:
    some models hold non-persistent buffers (timm Swin's relative position index) that only
    their constructor fills."""
    check_finite_state(state, path)
    try:
        with torch.random.fork_rng(devices=[]):
            model = spec.build()
    except GcfeatError as e:
        raise CheckpointError(f"checkpoint {path}: cannot rebuild {spec.arch}: {e}") from None
    fits = f"checkpoint {path}: weights do not fit a {spec.arch} with {spec.num_classes} classes"
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        sizes = re.findall(r"size mismatch for ([\w.]+)", str(e))
        raise CheckpointError(f"{fits}: {_summary('wrong shape', sizes) or _short(e)}") from None
    parts = [s for s in (_summary("missing", list(result.missing_keys)),
                         _summary("unexpected", list(result.unexpected_keys))) if s]
    if parts:
        raise CheckpointError(f"{fits}: " + "; ".join(parts))
    return model


# --------------------------------------------------------------------------------- saving


def _plain(value: Any, where: str) -> Any:
    """``value`` as types ``weights_only=True`` reads (numpy -> python/tensor, Path -> str)."""
    if value is None or isinstance(value, torch.Tensor):
        return value
    for kind in (bool, int, float, str):  # subclasses (e.g. TorchVersion) are not loadable
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {_plain_key(k, where): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    try:  # numpy scalars and arrays without importing numpy here
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return torch.from_numpy(value.copy())
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, torch.device):
        return str(value)
    raise CheckpointError(
        f"save_checkpoint: {where} is a {type(value).__name__}; only tensors, numbers, strings, "
        "lists and dicts can be stored (so the file loads with weights_only=True)"
    )


def _plain_key(key: Any, where: str) -> Any:
    # int keys matter: an optimizer's state is keyed by parameter index.
    if isinstance(key, (str, int, float, bool)) or key is None:
        return _plain(key, where)
    raise CheckpointError(f"save_checkpoint: {where} has a {type(key).__name__} key {key!r}; expected str or int keys")


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    classes: Sequence[str],
    arch: str,
    input_size: Sequence[int] | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    dropout: float = 0.0,
    meta: Mapping[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | Mapping | None = None,
    scheduler: Any = None,
    epoch: int | None = None,
    extra: Mapping[str, Any] | None = None,
    spec: ClassifierSpec | Mapping | None = None,
) -> Path:
    """Write ``model``'s weights and metadata as a gcfeat checkpoint, atomically.

    Args:
        path: destination (``.pt``); parent folders are created.
        model: the classifier (a ``DataParallel`` wrapper is unwrapped).
        classes: K class names, in output order.
        arch: ``"resnet50"`` / ``"resnet18"`` / ``"resnet34"``; checked against the weights.
        input_size: (H, W) the model was trained at; mean/std: the input normalisation.
        dropout: the head's dropout rate.
        meta: training metadata (epochs, best mAP, seed, data path, ...); ``gcfeat_version``
            and ``time`` are added.
        optimizer, scheduler, epoch: resume state (``optimizer_state_dict``,
            ``scheduler_state_dict``, ``epoch``), optional.
        extra: further top-level entries (plain types), e.g. RNG states.
        spec: the model's :class:`~gcfeat.models.zoo.ClassifierSpec` (or its dict), stored as
            ``"spec"`` so that :func:`load_checkpoint` rebuilds it; required for anything but
            ``resnet18/34/50`` (see :func:`describe_model`).

    Returns:
        the path written.
    """
    from gcfeat import __version__

    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    state = _strip_module({k: v.detach().cpu() for k, v in model.state_dict().items()})
    desc = describe_model(state, spec, path)
    if desc["arch"] != arch:
        raise CheckpointError(f"save_checkpoint {path}: arch={arch!r} but the model is a {desc['arch']}")
    classes = [str(c) for c in classes]
    if len(classes) != desc["num_classes"]:
        raise CheckpointError(
            f"save_checkpoint {path}: {len(classes)} class names given, the model has "
            f"{desc['num_classes']} outputs"
        )
    info_meta = {
        "gcfeat_version": __version__,
        "torch_version": torch.__version__,
        "time": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    info_meta.update(meta or {})
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "state_dict": state,
        "arch": arch,
        "num_classes": desc["num_classes"],
        "classes": classes,
        "input_size": [int(s) for s in input_size] if input_size is not None else None,
        "mean": [float(m) for m in mean] if mean is not None else None,
        "std": [float(s) for s in std] if std is not None else None,
        "dropout": float(dropout),
        "in_channels": desc["in_channels"],
        "norm": desc["norm"],
        "meta": _plain(info_meta, "meta"),
    }
    if desc["spec"] is not None:
        ckpt["spec"] = _plain(desc["spec"].to_dict(), "spec")
    if epoch is not None:
        ckpt["epoch"] = int(epoch)
    if optimizer is not None:
        sd = optimizer.state_dict() if hasattr(optimizer, "state_dict") else optimizer
        ckpt["optimizer_state_dict"] = _plain(sd, "optimizer")
    if scheduler is not None:
        sd = scheduler.state_dict() if hasattr(scheduler, "state_dict") else scheduler
        ckpt["scheduler_state_dict"] = _plain(sd, "scheduler")
    for key, value in (extra or {}).items():
        if key in _RESERVED:
            raise CheckpointError(f"save_checkpoint: extra key {key!r} is reserved")
        ckpt[key] = _plain(value, key)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# --------------------------------------------------------------------------------- loading


def load_checkpoint(
    path: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    arch: str | None = None,
    num_classes: int | None = None,
    dropout: float | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[nn.Module, CheckpointInfo]:
    """Build the classifier a checkpoint holds and load its weights (model in eval mode).

    Args:
        path: a gcfeat checkpoint, a bare state dict (``module.`` prefixes and ``fc.1.*``
            dropout-head keys accepted) or an original resume dict (``model_state_dict``).
        classes: expected class names; a different count (or, for gcfeat files, different
            names) is an error. For bare files they name the outputs.
        arch: expected architecture; a different one is an error.
        num_classes: expected K; a different one is an error.
        dropout: head dropout; ``None`` keeps the file's head form. ``0.0`` on a ``fc.1.*``
            file gives a plain ``Linear`` head (same weights), ``> 0`` on a plain head wraps it.
            A file with a non-ResNet ``"spec"`` is rebuilt as its spec says
            (``ClassifierSpec.from_dict(raw["spec"]).build()``, every key loaded strictly);
            ``dropout`` does not change its head.
        map_location: device the model is moved to.

    Returns:
        ``(model, info)``.

    Raises:
        CheckpointError: missing/corrupt/unsafe file, or a mismatch; the message says what the
            file holds and what was asked.
    """
    raw = read_torch_file(path)
    state, form = unwrap_state_dict(raw, path)
    desc = describe_model(state, raw.get("spec") if form == "gcfeat" else None, path)
    held_arch, held_k = desc["arch"], desc["num_classes"]
    header = raw if form == "gcfeat" else {}
    if form == "gcfeat" and int(raw.get("version", 0)) > VERSION:
        raise CheckpointError(
            f"checkpoint {path}: format version {raw['version']} was written by a newer gcfeat; "
            f"this one reads version <= {VERSION}"
        )
    if form == "gcfeat" and header.get("arch") not in (None, held_arch):
        raise CheckpointError(
            f"checkpoint {path}: header says {header['arch']} but the weights are {held_arch}"
        )

    if arch is not None and arch != held_arch:
        raise CheckpointError(f"checkpoint {path}: holds {held_arch} weights, asked for {arch}")
    held_classes = [str(c) for c in header.get("classes") or []]
    if held_classes and len(held_classes) != held_k:
        raise CheckpointError(
            f"checkpoint {path}: lists {len(held_classes)} classes but its head has {held_k} outputs"
        )
    original = ORIGINAL_CLASSES.get(held_k)
    shown = held_classes or (list(original) if original else None)
    if num_classes is not None and int(num_classes) != held_k:
        raise CheckpointError(
            f"checkpoint {path}: has {held_k} classes{_names(shown)}, asked for {num_classes}"
        )
    if classes is not None:
        classes = [str(c) for c in classes]
        if len(classes) != held_k:
            raise CheckpointError(
                f"checkpoint {path}: has {held_k} classes{_names(shown)}, asked for "
                f"{len(classes)}{_names(classes)}"
            )
        if held_classes and classes != held_classes:
            raise CheckpointError(
                f"checkpoint {path}: has classes {held_classes}, asked for {classes} "
                "(same count, different names or order)"
            )
    if held_classes:
        final_classes = held_classes
    elif classes is not None:
        final_classes = classes
    elif original:
        final_classes = list(original)
    else:
        final_classes = [f"class_{i}" for i in range(held_k)]

    if desc["spec"] is not None and desc["arch"] not in ARCHS:   # any other backbone
        model, dropout = _build_from_spec(desc["spec"], state, path), desc["spec"].dropout
    else:
        if dropout is None:
            if desc["dropout_head"]:
                dropout = float(header.get("dropout") or 0.0) or DEFAULT_HEAD_DROPOUT
            else:
                dropout = 0.0
        model = _build_resnet(state, desc, dropout, path)
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    model.eval()

    surgical = held_k in ORIGINAL_CLASSES
    input_size = header.get("input_size") or (list(SURGICAL_INPUT_SIZE) if surgical and form != "gcfeat" else None)
    mean = header.get("mean") or (list(SURGICAL_MEAN) if surgical and form != "gcfeat" else None)
    std = header.get("std") or (list(SURGICAL_STD) if surgical and form != "gcfeat" else None)
    _check_normalisation(mean, std, path)
    if form == "resume":
        meta = {k: _numpy_to_python(raw[k]) for k in ("epoch", "best_epoch", "best_mAP")
                if k in raw}
    else:
        meta = dict(header.get("meta") or {})
    epoch = raw.get("epoch") if isinstance(raw.get("epoch"), int) else None
    info = CheckpointInfo(
        path=str(path),
        form=form,
        arch=held_arch,
        num_classes=held_k,
        classes=tuple(final_classes),
        dropout=float(dropout),
        input_size=tuple(int(s) for s in input_size) if input_size else None,
        mean=tuple(float(m) for m in mean) if mean else None,
        std=tuple(float(s) for s in std) if std else None,
        in_channels=desc["in_channels"],
        norm=desc["norm"],
        epoch=epoch,
        meta=meta,
        spec=desc["spec"],
    )
    return model, info


def _build_resnet(state, desc: dict, dropout: float, path) -> nn.Module:
    """The ResNet of ``desc`` holding ``state`` (every key but BatchNorm step counters)."""
    held_arch, held_k = desc["arch"], desc["num_classes"]
    # Built on the meta device (no random init: every value comes from the file), then
    # materialised on the CPU; whatever the file lacks is an error below.
    with torch.device("meta"):
        model = build_classifier(
            held_arch, held_k, dropout=dropout, in_channels=desc["in_channels"], norm=desc["norm"]
        )
    model.to_empty(device="cpu")
    with torch.no_grad():  # very old files lack the BatchNorm step counters: they start at 0
        for name, buf in model.named_buffers():
            if name.endswith("num_batches_tracked"):
                buf.zero_()
    check_finite_state(state, path)
    state = remap_head_keys(state, dropout > 0)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        sizes = re.findall(r"size mismatch for ([\w.]+)", str(e))
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit a {held_arch} with {held_k} classes: "
            f"{_summary('wrong shape', sizes) or _short(e)}"
        ) from None
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        parts = [s for s in (_summary("missing", missing),
                             _summary("unexpected", list(result.unexpected_keys))) if s]
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit a {held_arch} with {held_k} classes: "
            + "; ".join(parts)
        )
    return model


def _names(names: Sequence[str] | None, show: int = 12) -> str:
    if not names:
        return ""
    more = ", ..." if len(names) > show else ""
    return " [" + ", ".join(names[:show]) + more + "]"


# --------------------------------------------------------------------------------- checks


def check_finite_state(state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` naming the file and the tensors that hold NaN or inf.

    A diverged training run saves such weights; loading them would only surface later as NaN
    heatmaps (or a crash inside the CAM's checks), far from the cause.
    """
    bad = []
    for name, t in state.items():
        if t.is_floating_point() or t.is_complex():
            n = int((~torch.isfinite(t)).sum())
            if n:
                bad.append(f"{name} ({n} of {t.numel()} values)")
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise CheckpointError(f"checkpoint {path}: non-finite weights (NaN or inf) in "
                              f"{', '.join(bad[:3])}{more}; expected finite numbers (was the "
                              f"training diverging?)")


def _check_normalisation(mean, std, path) -> None:
    """A ``std`` of zero (or NaN / inf anywhere) would turn every normalised frame into inf."""
    try:
        m = [float(v) for v in mean or ()]
        sd = [float(v) for v in std or ()]
    except (TypeError, ValueError):
        raise CheckpointError(f"checkpoint {path}: mean {mean!r} / std {std!r} are not "
                              f"numbers; expected one per channel") from None
    if not all(math.isfinite(v) for v in m + sd) or any(v <= 0 for v in sd):
        raise CheckpointError(f"checkpoint {path}: normalisation mean {m} / std {sd}; expected "
                              f"finite values and std > 0 for every channel")


def check_dataset_classes(held: Sequence[str], wanted: Sequence[str], path: str | os.PathLike,
                          data: str | os.PathLike, job: str) -> None:
    """Raise :class:`CheckpointError` when a checkpoint's classes are not the dataset's.

    Jobs that score the model against labels (``tune``, ``evaluate``, a resumed ``train``) need
    output k to mean the dataset's class k; a different count (or names, when the checkpoint
    lists them) is an error naming the checkpoint, the dataset and both class lists.
    """
    held, wanted = [str(c) for c in held], [str(c) for c in wanted]
    generic = all(re.fullmatch(r"class_\d+", c) for c in held)
    if len(held) != len(wanted) or (not generic and held != wanted):
        raise CheckpointError(
            f"checkpoint {path}: {len(held)} classes{_names(held)}, but the {job} data {data} "
            f"has {len(wanted)} classes{_names(wanted)}; expected a checkpoint trained on the "
            f"same classes")
