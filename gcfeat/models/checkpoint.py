"""Classifier checkpoints: save with their metadata, load every form safely.

A gcfeat checkpoint is a plain dict (tensors, str, numbers, lists, dicts only, so that
``torch.load(path, weights_only=True)`` reads it), the same for every task::

    {"format": "gcfeat-checkpoint", "version": 1,
     "state_dict": {...},                      # keys as the model has them (fc.1.* with dropout)
     "task": "surgical" | "organ3d" | ... | None,  # the task whose builder makes the model
     "arch": "resnet50", "num_classes": 11, "classes": ["bipolar_forceps", ...],
     "input_size": [256, 320], "mean": [...], "std": [...], "dropout": 0.0,
     "in_channels": 3, "norm": "batch",
     "meta": {"epochs": 8, "best_mAP": 0.97, "seed": 0, "data": "...", "gcfeat_version": ...,
              "time": "2024-...", ...},
     # optional, for resuming: "epoch", "optimizer_state_dict", "scheduler_state_dict", ...}

:func:`load_checkpoint` also reads the original system's forms: a bare state dict (often with
``module.`` prefixes from DataParallel, and ``fc.1.*`` keys for the dropout head) and the
resume dict ``{epoch, model_state_dict, optimizer_state_dict, best_epoch, best_mAP, info_list}``.
The single-label task checkpoints written before the one format
(``{"format": "gcfeat-task-checkpoint", "task", "arch", "classes", "input_size", "state_dict",
"meta"}``) load too. Models that are not torchvision ResNets (3D ResNets, the small CNNs) are
built by their task (``build``; :meth:`gcfeat.tasks.Task.load_checkpoint`).
For bare forms the architecture and class count are inferred from the keys and shapes; 11 outputs
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gcfeat.data.classes import (
    MICCAI18_CLASSES_9,
    SURGICAL_CLASSES,
    SURGICAL_INPUT_SIZE,
    SURGICAL_MEAN,
    SURGICAL_STD,
)
from gcfeat.errors import GcfeatError
from gcfeat.models.resnet import (
    ARCHS,
    DEFAULT_HEAD_DROPOUT,
    _summary,
    build_classifier,
    remap_head_keys,
)
from gcfeat.models.torch_files import (  # noqa: F401  (public here as before)
    FORMAT,
    NUMPY_SCALAR_DTYPES,
    TASK_FORMAT,
    CheckpointError,
    _short,
    _strip_module,
    infer_arch,
    read_torch_file,
    unwrap_state_dict,
)
from gcfeat.models.zoo import ClassifierSpec

VERSION = 1

#: Top-level keys :func:`save_checkpoint` writes itself; ``extra`` may not override them.
_RESERVED = frozenset(
    {
        "format",
        "version",
        "state_dict",
        "task",
        "arch",
        "num_classes",
        "classes",
        "input_size",
        "mean",
        "std",
        "dropout",
        "in_channels",
        "norm",
        "meta",
        "epoch",
        "optimizer_state_dict",
        "scheduler_state_dict",
        "spec",
    }
)


@dataclass
class CheckpointInfo:
    """What a checkpoint file holds besides the weights.

    One record for every task. ``form`` is ``"gcfeat"`` (the one format), ``"state_dict"``
    (bare, original ``*_best_checkpoint.pth.tar``), ``"resume"`` (original ``{epoch,
    model_state_dict, ...}``) or ``"task"`` (the single-label task checkpoint of earlier gcfeat,
    :mod:`gcfeat.models.task_checkpoint`). For the bare forms ``input_size``/``mean``/``std``
    are the surgical defaults when K is 11 or 9 (the original's class lists), else ``None``.
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
    #: the task the file was written for (None: a plain ResNet file of no task)
    task: str | None = None
    #: the file's own header as stored (format, task, arch, classes, input_size, meta, ...;
    #: not the weights or the resume state), for mapping-style access
    stored: dict[str, Any] = field(default_factory=dict, repr=False)
    #: what rebuilds the model (any torchvision / timm backbone; None for files without one)
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


def describe_state_dict(
    state: Mapping[str, torch.Tensor], path: str | os.PathLike = "<state>"
) -> dict[str, Any]:
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
        raise CheckpointError(
            f"checkpoint {path}: {arch} weights without a head (no fc.weight or fc.1.weight)"
        )
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
    raise CheckpointError(
        f"save_checkpoint: {where} has a {type(key).__name__} key {key!r}; expected str or int keys"
    )


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
    task: str | None = None,
    optimizer: torch.optim.Optimizer | Mapping | None = None,
    scheduler: Any = None,
    epoch: int | None = None,
    extra: Mapping[str, Any] | None = None,
    spec: ClassifierSpec | Mapping | None = None,
) -> Path:
    """Write ``model``'s weights and metadata as a gcfeat checkpoint, atomically (every task).

    Args:
        path: destination (``.pt``); parent folders are created.
        model: the classifier (a ``DataParallel`` wrapper is unwrapped).
        classes: K class names, in output order.
        arch: the model name (``"resnet50"``, ``"resnet3d_18_slim"``, ``"baseline_cnn"``, ...);
            checked against the weights when they are a torchvision ResNet's.
        input_size: spatial size the model was trained at; mean/std: the input normalisation
            (``None`` when the reader scales intensities itself).
        dropout: the head's dropout rate.
        meta: training metadata (epochs, best score, seed, data path, ...); ``gcfeat_version``
            and ``time`` are added.
        task: the task that builds the model (``"organ3d"``; None for a plain ResNet file).
        optimizer, scheduler, epoch: resume state (``optimizer_state_dict``,
            ``scheduler_state_dict``, ``epoch``), optional.
        extra: further top-level entries (plain types), e.g. RNG states.
        spec: the model's :class:`~gcfeat.models.zoo.ClassifierSpec` (or its dict), stored as
            ``"spec"`` so that :func:`load_checkpoint` rebuilds any torchvision / timm
            backbone (ResNet files load from their keys without one).

    Returns:
        the path written.
    """
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    state = _strip_module({k: v.detach().cpu() for k, v in model.state_dict().items()})
    ckpt = _header(
        path,
        model,
        state,
        classes=classes,
        arch=arch,
        input_size=input_size,
        mean=mean,
        std=std,
        dropout=dropout,
        meta=meta,
        task=task,
    )
    if spec is not None:
        spec = _spec(spec, path)
        if spec.arch != arch or spec.num_classes != ckpt["num_classes"]:
            raise CheckpointError(
                f"save_checkpoint {path}: spec {spec.arch} with "
                f"{spec.num_classes} classes, but arch={arch!r} with "
                f"{ckpt['num_classes']} outputs"
            )
        ckpt["spec"] = _plain(spec.to_dict(), "spec")
    ckpt.update(_resume_entries(optimizer, scheduler, epoch, extra))
    return _write_atomic(Path(path), ckpt)


def _spec(spec: ClassifierSpec | Mapping, path) -> ClassifierSpec:
    """A :class:`~gcfeat.models.zoo.ClassifierSpec` from itself or its ``to_dict()``."""
    if isinstance(spec, ClassifierSpec):
        return spec
    try:
        return ClassifierSpec.from_dict(spec)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint {path}: malformed spec {spec!r} ({e}); expected ClassifierSpec.to_dict()'s entries"
        ) from None


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
    parts = [
        s
        for s in (
            _summary("missing", list(result.missing_keys)),
            _summary("unexpected", list(result.unexpected_keys)),
        )
        if s
    ]
    if parts:
        raise CheckpointError(f"{fits}: " + "; ".join(parts))
    return model


def is_resnet2d(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state`` holds a torchvision (2D) ResNet (3D ResNets share its key names)."""
    conv1 = state.get("conv1.weight")
    return infer_arch(state) is not None and (conv1 is None or conv1.dim() == 4)


def _describe_model(model: nn.Module, state: Mapping[str, torch.Tensor], path) -> dict[str, Any]:
    """:func:`describe_state_dict` for torchvision ResNets; for any other model the arch is
    the caller's and K the out_features of its last ``Linear``."""
    if is_resnet2d(state):
        return describe_state_dict(state, path)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if not linears:
        raise CheckpointError(f"save_checkpoint {path}: the model has no Linear head")
    norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return {
        "arch": None,
        "num_classes": int(linears[-1].out_features),
        "dropout_head": False,
        "in_channels": int(convs[0].in_channels) if convs else 0,
        "norm": "batch" if norm else "none",
    }


def _header(
    path, model, state, *, classes, arch, input_size, mean, std, dropout, meta, task
) -> dict[str, Any]:
    """The checkpoint dict without the resume entries (layout in the module docstring)."""
    from gcfeat import __version__

    desc = _describe_model(model, state, path)
    # a task's own arch names (prostate's "resnet18_nobn") are the task's to check
    if desc["arch"] is not None and arch in ARCHS and desc["arch"] != arch:
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
    return {
        "format": FORMAT,
        "version": VERSION,
        "state_dict": state,
        "task": None if task is None else str(task),
        "arch": str(arch),
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


def _resume_entries(optimizer, scheduler, epoch, extra) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if epoch is not None:
        out["epoch"] = int(epoch)
    if optimizer is not None:
        sd = optimizer.state_dict() if hasattr(optimizer, "state_dict") else optimizer
        out["optimizer_state_dict"] = _plain(sd, "optimizer")
    if scheduler is not None:
        sd = scheduler.state_dict() if hasattr(scheduler, "state_dict") else scheduler
        out["scheduler_state_dict"] = _plain(sd, "scheduler")
    for key, value in (extra or {}).items():
        if key in _RESERVED:
            raise CheckpointError(f"save_checkpoint: extra key {key!r} is reserved")
        out[key] = _plain(value, key)
    return out


def _write_atomic(path: Path, ckpt: Mapping[str, Any]) -> Path:
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

#: ``(arch, task) -> fresh model`` for weights that are not a torchvision ResNet's (the task's
#: model builder; :meth:`gcfeat.tasks.Task.load_checkpoint` passes it).
ModelBuilder = Callable[[str, "str | None"], nn.Module]


@dataclass
class _File:
    """A read checkpoint: its weights, form and metadata header (empty for bare forms)."""

    raw: Any
    state: dict[str, torch.Tensor]
    form: str
    header: dict[str, Any]


def _read(path: str | os.PathLike) -> _File:
    """Safe read (missing / empty / truncated / pickled-code files refused) -> :class:`_File`;
    the old task checkpoint (``gcfeat-task-checkpoint``) is form ``"task"``."""
    raw = read_torch_file(path)
    if isinstance(raw, Mapping) and raw.get("format") == TASK_FORMAT:
        state = raw.get("state_dict")
        if not isinstance(state, Mapping) or not state:
            raise CheckpointError(f"checkpoint {path}: the task form holds no state dict")
        state, form = unwrap_state_dict({"state_dict": state}, path)[0], "task"
    else:
        state, form = unwrap_state_dict(raw, path)
    header = {k: v for k, v in raw.items() if k != "state_dict"} if form in ("gcfeat", "task") else {}
    if form == "gcfeat" and int(raw.get("version", 0)) > VERSION:
        raise CheckpointError(
            f"checkpoint {path}: format version {raw['version']} was written by a newer gcfeat; "
            f"this one reads version <= {VERSION}"
        )
    check_finite_state(state, path)
    return _File(raw, state, form, header)


def _check_request(
    path, f: _File, held_arch: str, held_k: int, *, task, arch, num_classes, classes
) -> list[str]:
    """Compare the file with what the caller asked for; the class names to use."""
    if arch is not None and arch != held_arch:
        raise CheckpointError(f"checkpoint {path}: holds {held_arch} weights, asked for {arch}")
    held_classes = [str(c) for c in f.header.get("classes") or []]
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
        return held_classes
    if classes is not None:
        return classes
    return list(original) if original else [f"class_{i}" for i in range(held_k)]


def _load_weights(path, model: nn.Module, state, held_arch: str, held_k: int) -> None:
    """``model.load_state_dict(state)``; missing / unexpected / mis-shaped keys are summarised in
    a :class:`CheckpointError` (BatchNorm step counters may be missing: very old files)."""
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
        parts = [
            s
            for s in (_summary("missing", missing), _summary("unexpected", list(result.unexpected_keys)))
            if s
        ]
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit a {held_arch} with {held_k} classes: " + "; ".join(parts)
        )


def _resnet_from_file(path, f: _File, desc: dict, dropout: float | None) -> tuple[nn.Module, float]:
    """The torchvision ResNet of ``f`` (weights loaded; head form per ``dropout``)."""
    if dropout is None:
        if desc["dropout_head"]:
            dropout = float(f.header.get("dropout") or 0.0) or DEFAULT_HEAD_DROPOUT
        else:
            dropout = 0.0
    # Built on the meta device (no random init: every value comes from the file), then
    # materialised on the CPU; whatever the file lacks is an error below.
    with torch.device("meta"):
        model = build_classifier(
            desc["arch"],
            desc["num_classes"],
            dropout=dropout,
            in_channels=desc["in_channels"],
            norm=desc["norm"],
        )
    model.to_empty(device="cpu")
    with torch.no_grad():  # very old files lack the BatchNorm step counters: they start at 0
        for name, buf in model.named_buffers():
            if name.endswith("num_batches_tracked"):
                buf.zero_()
    state = remap_head_keys(f.state, dropout > 0)
    _load_weights(path, model, state, desc["arch"], desc["num_classes"])
    return model, float(dropout)


def _model_from_file(
    path, f: _File, build: ModelBuilder | None, dropout: float | None
) -> tuple[nn.Module, str, int, dict, float]:
    """``(model, arch, K, description, dropout)``: a torchvision ResNet whose file names no other
    arch is rebuilt from its keys; anything else by ``build(arch, task)``."""
    header_arch = f.header.get("arch")
    resnet = is_resnet2d(f.state) and header_arch in (None, *ARCHS)
    if resnet:
        desc = describe_state_dict(f.state, path)
        if header_arch not in (None, desc["arch"]):
            raise CheckpointError(
                f"checkpoint {path}: header says {header_arch} but the weights are {desc['arch']}"
            )
        model, dropout = _resnet_from_file(path, f, desc, dropout)
        return model, desc["arch"], desc["num_classes"], desc, dropout
    if f.header.get("spec") is not None:  # any torchvision / timm backbone
        spec = _spec(f.header["spec"], path)
        model = _build_from_spec(spec, f.state, path)
        desc = {"in_channels": spec.in_channels, "norm": str(spec.options.get("norm", "")), "spec": spec}
        return model, spec.arch, spec.num_classes, desc, spec.dropout
    if header_arch is None:
        describe_state_dict(f.state, path)  # raises: not ResNet weights
    task = f.header.get("task")
    if build is None:
        raise CheckpointError(
            f"checkpoint {path}: holds a {header_arch} model of task {task!r}; load it with "
            f"gcfeat.tasks.get_task({task!r}).load_checkpoint(path)"
        )
    model = build(str(header_arch), task)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    held_k = int(linears[-1].out_features) if linears else len(f.header.get("classes") or [])
    _load_weights(path, model, f.state, str(header_arch), held_k)
    desc = {"in_channels": int(f.header.get("in_channels") or 0), "norm": str(f.header.get("norm") or "")}
    return model, str(header_arch), held_k, desc, 0.0


def load_checkpoint(
    path: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    arch: str | None = None,
    num_classes: int | None = None,
    dropout: float | None = None,
    task: str | None = None,
    build: ModelBuilder | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[nn.Module, CheckpointInfo]:
    """Build the classifier a checkpoint holds and load its weights (model in eval mode).

    One loader for every task and every form: the gcfeat checkpoint (any task), the old
    single-label task checkpoint (``gcfeat-task-checkpoint``), a bare state dict (``module.``
    prefixes and ``fc.1.*`` dropout-head keys accepted) and the original resume dict
    (``model_state_dict``). Every file goes through the same checks: safe read (missing, empty,
    truncated and pickled-code files are refused), finite weights, task, arch and class count.

    Args:
        path: the checkpoint file.
        classes: expected class names; a different count (or, for files that list names,
            different names) is an error. For bare files they name the outputs.
        arch: expected architecture; a different one is an error.
        num_classes: expected K; a different one is an error.
        dropout: ResNet head dropout; ``None`` keeps the file's head form. ``0.0`` on a
            ``fc.1.*`` file gives a plain ``Linear`` head (same weights), ``> 0`` wraps a plain one.
        task: expected task; a file written for another task is an error.
        build: ``(arch, task) -> model`` for models that are not torchvision ResNets (the
            task's builder; :meth:`gcfeat.tasks.Task.load_checkpoint` passes it).
        map_location: device the model is moved to.

    Returns:
        ``(model, info)``.

    Raises:
        CheckpointError: missing/corrupt/unsafe file, non-finite weights, or a mismatch; the
            message says what the file holds and what was asked.
    """
    f = _read(path)
    if task is not None and f.header.get("task") not in (None, task):
        raise CheckpointError(f"checkpoint {path}: a {f.header['task']!r} checkpoint, expected task {task!r}")
    model, held_arch, held_k, desc, dropout = _model_from_file(path, f, build, dropout)
    final_classes = _check_request(
        path, f, held_arch, held_k, task=task, arch=arch, num_classes=num_classes, classes=classes
    )
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    model.eval()
    return model, _info(path, f, held_arch, held_k, final_classes, desc, dropout)


def _info(path, f: _File, arch: str, k: int, classes, desc: dict, dropout: float) -> CheckpointInfo:
    """The :class:`CheckpointInfo` of a loaded file (the bare surgical forms get the original
    input size and normalisation)."""
    h, bare = f.header, f.form in ("state_dict", "resume")
    surgical = bare and k in ORIGINAL_CLASSES
    input_size = h.get("input_size") or (list(SURGICAL_INPUT_SIZE) if surgical else None)
    mean = h.get("mean") or (list(SURGICAL_MEAN) if surgical else None)
    std = h.get("std") or (list(SURGICAL_STD) if surgical else None)
    _check_normalisation(mean, std, path)
    if f.form == "resume":
        meta = {
            key: _numpy_to_python(f.raw[key]) for key in ("epoch", "best_epoch", "best_mAP") if key in f.raw
        }
    else:
        meta = dict(h.get("meta") or {})
    epoch = f.raw.get("epoch") if isinstance(f.raw.get("epoch"), int) else meta.get("epoch")
    stored = {
        key: v
        for key, v in h.items()
        if key not in ("optimizer_state_dict", "scheduler_state_dict", "train_state", "rng")
    }
    return CheckpointInfo(
        path=str(path),
        form=f.form,
        arch=arch,
        num_classes=k,
        classes=tuple(classes),
        dropout=float(dropout),
        input_size=tuple(int(s) for s in input_size) if input_size else None,
        mean=tuple(float(m) for m in mean) if mean else None,
        std=tuple(float(s) for s in std) if std else None,
        in_channels=desc["in_channels"],
        norm=desc["norm"],
        epoch=epoch,
        meta=meta,
        task=h.get("task"),
        stored=stored,
        spec=desc.get("spec"),
    )


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
        raise CheckpointError(
            f"checkpoint {path}: non-finite weights (NaN or inf) in "
            f"{', '.join(bad[:3])}{more}; expected finite numbers (was the "
            f"training diverging?)"
        )


def _check_normalisation(mean, std, path) -> None:
    """A ``std`` of zero (or NaN / inf anywhere) would turn every normalised frame into inf."""
    try:
        m = [float(v) for v in mean or ()]
        sd = [float(v) for v in std or ()]
    except (TypeError, ValueError):
        raise CheckpointError(
            f"checkpoint {path}: mean {mean!r} / std {std!r} are not numbers; expected one per channel"
        ) from None
    if not all(math.isfinite(v) for v in m + sd) or any(v <= 0 for v in sd):
        raise CheckpointError(
            f"checkpoint {path}: normalisation mean {m} / std {sd}; expected "
            f"finite values and std > 0 for every channel"
        )


def check_dataset_classes(
    held: Sequence[str], wanted: Sequence[str], path: str | os.PathLike, data: str | os.PathLike, job: str
) -> None:
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
            f"same classes"
        )
