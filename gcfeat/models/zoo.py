"""Classifiers of any family: torchvision names and ``timm:NAME``, with a ``K``-way head.

``build_classifier(arch, num_classes)`` makes the network from scratch (never downloads) or
from a local weights file; :class:`ClassifierSpec` records what a checkpoint needs to rebuild
it (architecture string, class count, head path, dropout, builder options).

- ``resnet18`` / ``resnet34`` / ``resnet50``: :func:`gcfeat.models.resnet.build_classifier`,
  unchanged (``fc`` head, ``Sequential(Dropout, Linear)`` with dropout, ``in_channels``,
  ``norm``; the same random numbers for the same seed).
- any other torchvision classifier (``torchvision.models.list_models()``: ``convnext_tiny``,
  ``efficientnet_b0``, ``efficientnet_v2_s``, ``regnet_x_400mf``, ``densenet121``,
  ``mobilenet_v3_small``, ``swin_t``, ``vit_b_16``, ``resnext50_32x4d``, ...): built with
  ``num_classes=K`` (torchvision's own head and init); builder options pass through
  (``image_size=32`` for a ViT).
- ``timm:NAME`` (needs the optional extra ``timm``): ``timm.create_model(NAME,
  pretrained=False, num_classes=K, in_chans=in_channels)``.

The head is the ``Linear`` producing the logits (``fc``, ``classifier.2``, ``heads.head``,
``head.fc``, ...). With ``dropout > 0`` it becomes ``Sequential(Dropout(p), Linear)`` at the
same path. A weights file (a state dict, possibly wrapped or ``module.``-prefixed) fills
everything but a head of another class count; anything else missing is a ``CheckpointError``.

Example::

    >>> model, spec = build_classifier_with_spec("convnext_tiny", num_classes=11)
    >>> spec.head, spec.to_dict()["arch"]
    ('classifier.2', 'convnext_tiny')
    >>> same = spec.build()                       # another model of the same shape
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from gcfeat.errors import GcfeatError
from gcfeat.models import resnet as _resnet
from gcfeat.models.torch_files import CheckpointError, read_torch_file, unwrap_state_dict

__all__ = [
    "ClassifierSpec",
    "ZooError",
    "build_classifier",
    "build_classifier_with_spec",
    "check_arch",
    "find_head",
    "is_timm_arch",
]

TIMM_PREFIX = "timm:"


class ZooError(GcfeatError):
    """An architecture name or option gcfeat cannot build."""


@dataclass(frozen=True)
class ClassifierSpec:
    """What rebuilds a classifier: store :meth:`to_dict` in a checkpoint.

    Attributes:
        arch: ``"resnet50"``, a torchvision name, or ``"timm:NAME"``.
        num_classes: K, outputs of the head.
        head: qualified name of the head module (``"fc"``, ``"classifier.2"``).
        dropout: p of the ``Dropout`` gcfeat put before the head Linear (0: none).
        in_channels: input channels.
        options: extra builder options (``{"image_size": 32}`` for a small ViT; ResNets:
            ``{"norm": "batch"}``).
    """

    arch: str
    num_classes: int
    head: str
    dropout: float = 0.0
    in_channels: int = 3
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ClassifierSpec:
        return cls(
            str(d["arch"]),
            int(d["num_classes"]),
            str(d["head"]),
            float(d.get("dropout", 0.0)),
            int(d.get("in_channels", 3)),
            dict(d.get("options", {})),
        )

    def build(self, weights: str | os.PathLike | None = None) -> nn.Module:
        """A fresh model of this spec (random init, or ``weights``)."""
        return build_classifier(
            self.arch,
            self.num_classes,
            weights=weights,
            dropout=self.dropout,
            in_channels=self.in_channels,
            **self.options,
        )


def is_timm_arch(arch: str) -> bool:
    return arch.startswith(TIMM_PREFIX)


def check_arch(arch: str) -> str:
    """``arch`` when gcfeat can build it (``resnet18/34/50``, a torchvision classifier name,
    ``timm:NAME`` of an installed timm), else a :class:`ZooError` naming what is known; cheap
    (no model is built), for command lines to refuse a typo before loading data."""
    if arch in _resnet.ARCHS:
        return arch
    if is_timm_arch(arch):
        try:
            import timm
        except ImportError as e:
            raise ZooError(f"--arch {arch}: timm is not installed (pip install 'gcfeat[timm]')") from e
        name = arch[len(TIMM_PREFIX) :]
        if not timm.is_model(name):
            raise ZooError(f"--arch {arch}: timm has no model {name!r} (timm.list_models())")
        return arch
    _torchvision_builder(arch)
    return arch


def find_head(model: nn.Module) -> tuple[str, nn.Linear]:
    """``(name, Linear)`` of the head: timm's ``get_classifier()``, else the last ``Linear``
    registered in the model (torchvision classifiers end with their head)."""
    get = getattr(model, "get_classifier", None)
    target = get() if callable(get) else None
    last = None
    for name, m in model.named_modules():
        if target is not None and m is target and isinstance(m, nn.Linear):
            return name, m
        if isinstance(m, nn.Linear):
            last = (name, m)
    if last is None:
        raise ZooError(f"{type(model).__name__}: no Linear head found")
    return last


def _torchvision_builder(arch: str):
    import torchvision.models as tvm

    if arch not in tvm.list_models(module=tvm):
        raise ZooError(
            f"arch={arch!r}: not resnet18/34/50, a torchvision classifier (see "
            f"torchvision.models.list_models(), e.g. efficientnet_b0, "
            f"convnext_tiny) nor 'timm:NAME'"
        )
    return lambda **kw: tvm.get_model(arch, weights=None, **kw)


def _timm_create(name: str, num_classes: int, in_channels: int, options: dict) -> nn.Module:
    try:
        import timm
    except ImportError as e:
        raise ZooError(f"arch='timm:{name}': timm is not installed (pip install 'gcfeat[timm]')") from e
    try:
        return timm.create_model(
            name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **options
        )
    except RuntimeError as e:  # timm: "Unknown model (NAME)"
        raise ZooError(f"arch='timm:{name}': {e}") from None


def _set_head(model: nn.Module, name: str, head: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, head)


def _load_weights(model: nn.Module, path, head: str, arch: str) -> None:
    """Fill ``model`` from a local state dict; a head of another shape is skipped."""
    state, _ = unwrap_state_dict(read_torch_file(path, what="weights file"), path)
    own = model.state_dict()
    lin = head + ".1." if isinstance(model.get_submodule(head), nn.Sequential) else head + "."
    usable, bad = {}, []
    for key, value in state.items():
        if key.startswith(head + ".") and not key.startswith(lin):
            key = lin + key[len(head) + 1 :]  # fc.weight <-> fc.1.weight
        if key not in own:
            continue
        if own[key].shape != value.shape:
            if not key.startswith(lin):
                bad.append(key)
            continue
        usable[key] = value
    missing = [
        k for k in own if k not in usable and not k.startswith(lin) and not k.endswith("num_batches_tracked")
    ]
    if missing or bad:
        raise CheckpointError(
            f"weights file {path}: does not fit a {arch}: "
            f"{len(missing)} missing key(s) {missing[:4]}, "
            f"{len(bad)} of the wrong shape {bad[:4]}"
        )
    model.load_state_dict(usable, strict=False)


def build_classifier_with_spec(
    arch: str = "resnet50",
    num_classes: int = 11,
    dropout: float = 0.0,
    weights: str | os.PathLike | None = None,
    in_channels: int = 3,
    **options,
) -> tuple[nn.Module, ClassifierSpec]:
    """A ``num_classes``-way classifier of ``arch`` and its :class:`ClassifierSpec`.

    Args:
        arch: ``resnet18/34/50`` (gcfeat's builder), a torchvision name, or ``timm:NAME``.
        num_classes: K.
        weights: a local state-dict file (never downloads); the head is kept only when its
            shape fits.
        dropout: p > 0 puts ``Dropout(p)`` before the head Linear.
        in_channels: input channels (ResNets and timm; other torchvision models take 3).
        **options: builder options (ResNets: ``norm``; torchvision: e.g. ``image_size``;
            timm: ``create_model`` keywords).

    Returns:
        ``(model, spec)``; the model is in train mode.
    """
    if int(num_classes) < 1:
        raise ZooError(f"num_classes={num_classes}: expected a positive class count")
    if not 0.0 <= float(dropout) < 1.0:
        raise ZooError(f"dropout={dropout}: expected a probability in [0, 1)")
    if arch in _resnet.ARCHS:
        model = _resnet.build_classifier(
            arch, num_classes, dropout=dropout, weights=weights, in_channels=in_channels, **options
        )
        return model, ClassifierSpec(
            arch, int(num_classes), "fc", float(dropout), int(in_channels), dict(options)
        )
    if is_timm_arch(arch):
        model = _timm_create(arch[len(TIMM_PREFIX) :], num_classes, in_channels, options)
    else:
        if in_channels != 3:
            raise ZooError(
                f"in_channels={in_channels}: torchvision's {arch} takes 3 input "
                f"channels; use a ResNet or a timm model (in_chans)"
            )
        try:
            model = _torchvision_builder(arch)(num_classes=int(num_classes), **options)
        except TypeError as e:
            raise ZooError(f"arch={arch!r}: bad builder options {options}: {e}") from None
    head, linear = find_head(model)
    if linear.out_features != int(num_classes):
        raise ZooError(
            f"arch={arch!r}: the last Linear ({head}) has {linear.out_features} "
            f"outputs, expected {num_classes}; not a plain classifier"
        )
    if dropout > 0:
        _set_head(model, head, nn.Sequential(nn.Dropout(dropout), linear))
    if weights is not None:
        _load_weights(model, weights, head, arch)
    return model, ClassifierSpec(
        arch, int(num_classes), head, float(dropout), int(in_channels), dict(options)
    )


def build_classifier(
    arch: str = "resnet50",
    num_classes: int = 11,
    dropout: float = 0.0,
    weights: str | os.PathLike | None = None,
    in_channels: int = 3,
    **options,
) -> nn.Module:
    """The model of :func:`build_classifier_with_spec` (same arguments; positional order as
    :func:`gcfeat.models.resnet.build_classifier`, whose ``norm`` is an option here)."""
    return build_classifier_with_spec(
        arch, num_classes, weights=weights, dropout=dropout, in_channels=in_channels, **options
    )[0]
