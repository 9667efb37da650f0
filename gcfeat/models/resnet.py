"""ResNet classifiers: torchvision ResNet18/34/50 with a multi-label head, never downloaded.

The head is ``fc = Linear(features, K)`` or, with dropout, ``fc = Sequential(Dropout(p),
Linear(features, K))`` (state-dict keys ``fc.1.weight``/``fc.1.bias``, the original's form).
The module names ``layer2``, ``layer3``, ``layer4`` and ``fc`` are kept: CAM methods and the
feature extractors hook them.

Example::

    >>> model = build_classifier("resnet18", num_classes=11, dropout=0.2)
    >>> model(torch.zeros(2, 3, 256, 320)).shape
    torch.Size([2, 11])
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import torch
from torch import nn
from torchvision.models import ResNet, resnet18, resnet34, resnet50

from gcfeat.models.torch_files import CheckpointError, infer_arch, read_torch_file, unwrap_state_dict

#: Supported architectures -> (torchvision builder, feature width before ``fc``).
ARCHS: dict[str, tuple[Callable[..., ResNet], int]] = {
    "resnet18": (resnet18, 512),
    "resnet34": (resnet34, 512),
    "resnet50": (resnet50, 2048),
}
NORMS = ("batch", "none")

#: Dropout of a ``fc.1.*`` head whose rate the file does not record (the original used 0.2).
DEFAULT_HEAD_DROPOUT = 0.2


def _no_norm(num_features: int) -> nn.Module:
    return nn.Identity()


def build_classifier(
    arch: str = "resnet50",
    num_classes: int = 11,
    dropout: float = 0.0,
    weights: str | os.PathLike | None = None,
    in_channels: int = 3,
    norm: str = "batch",
) -> ResNet:
    """A torchvision ResNet with a ``num_classes``-way head; no weights are ever downloaded.

    Args:
        arch: ``"resnet50"`` (default), ``"resnet18"`` or ``"resnet34"``.
        num_classes: K, the number of outputs (logits) of ``fc``.
        dropout: p > 0 makes ``fc = Sequential(Dropout(p), Linear)``.
        weights: path of a local ImageNet state dict (torchvision's ``resnet50-*.pth``), read
            with ``torch.load(weights_only=True)``. ``fc`` is kept from the file only when its
            shape fits; ``conv1`` is averaged over RGB when ``in_channels != 3``.
        in_channels: input channels of ``conv1`` (MRI tasks use 1 or 3).
        norm: ``"batch"`` (BatchNorm2d) or ``"none"`` (every norm layer is an ``Identity``).

    Returns:
        the model (train mode); input ``(B, in_channels, H, W)`` -> logits ``(B, K)``.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r}: unknown architecture, expected one of {sorted(ARCHS)}")
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r}: expected one of {NORMS}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes={num_classes}: expected a positive class count")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout={dropout}: expected a probability in [0, 1)")
    if int(in_channels) < 1:
        raise ValueError(f"in_channels={in_channels}: expected a positive channel count")
    builder, width = ARCHS[arch]
    kwargs = {"norm_layer": _no_norm} if norm == "none" else {}
    model = builder(weights=None, **kwargs)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.fc = make_head(width, num_classes, dropout)
    if weights is not None:
        load_imagenet_weights(model, weights, arch=arch)
    return model


def make_head(in_features: int, num_classes: int, dropout: float = 0.0) -> nn.Module:
    """``Linear(in_features, K)``, or ``Sequential(Dropout(p), Linear)`` when ``dropout > 0``."""
    linear = nn.Linear(in_features, num_classes)
    return nn.Sequential(nn.Dropout(dropout), linear) if dropout > 0 else linear


def head_linear(model: nn.Module) -> nn.Linear:
    """The final ``Linear`` of ``model.fc`` (plain or behind a ``Dropout``)."""
    fc = model.fc
    return fc[-1] if isinstance(fc, nn.Sequential) else fc


def remap_head_keys(state: Mapping[str, torch.Tensor], dropout_head: bool) -> dict[str, torch.Tensor]:
    """Rename ``fc.weight``/``fc.bias`` <-> ``fc.1.weight``/``fc.1.bias`` to fit the head form."""
    out = {}
    for key, value in state.items():
        if dropout_head and key in ("fc.weight", "fc.bias"):
            key = "fc.1." + key[3:]
        elif not dropout_head and key in ("fc.1.weight", "fc.1.bias"):
            key = "fc." + key[5:]
        out[key] = value
    return out


def load_imagenet_weights(model: ResNet, path: str | os.PathLike, *, arch: str) -> None:
    """Copy a local ImageNet state dict into ``model`` (in place).

    Keys whose shape differs from the model are skipped for ``fc`` (another class count); an
    RGB ``conv1`` is averaged (and repeated) for another channel count. Norm-layer keys are
    ignored when the model was built with ``norm="none"``. Anything else missing is an error.
    """
    raw = read_torch_file(path, what="ImageNet weights file")
    state, _ = unwrap_state_dict(raw, path)
    held = infer_arch(state)
    if held is not None and held != arch:
        raise CheckpointError(f"ImageNet weights file {path}: holds {held} weights, asked for {arch}")
    dropout_head = isinstance(model.fc, nn.Sequential)
    state = remap_head_keys(state, dropout_head)
    own = model.state_dict()
    usable, skipped = {}, []
    for key, value in state.items():
        if key not in own:
            continue  # e.g. BatchNorm statistics when norm="none"
        target = own[key]
        if key == "conv1.weight" and value.shape != target.shape and value.dim() == 4:
            c = target.shape[1]
            value = value.mean(1, keepdim=True).repeat(1, c, 1, 1) * (3.0 / c)
        if value.shape != target.shape:
            skipped.append(key)
            continue
        usable[key] = value
    missing = [k for k in own if k not in usable and k not in skipped and not k.startswith("fc.")]
    bad = [k for k in skipped if not k.startswith("fc.")]
    if missing or bad:
        raise CheckpointError(
            f"ImageNet weights file {path}: does not fit a {arch}: "
            + _summary("missing", missing)
            + ("; " if missing and bad else "")
            + _summary("wrong shape", bad)
        )
    model.load_state_dict(usable, strict=False)


def _summary(kind: str, keys: list[str], show: int = 4) -> str:
    if not keys:
        return ""
    more = f", ... {len(keys) - show} more" if len(keys) > show else ""
    return f"{len(keys)} {kind} key(s) ({', '.join(keys[:show])}{more})"
