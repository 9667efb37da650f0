"""Inference copies of a model with eval-mode BatchNorm folded into the preceding conv.

Used where a model runs many inference forwards without gradients to its batch norms: Score-CAM's
masked forwards and the extraction pipeline (CAM pass and M1 crops). On this CPU a ResNet50
layer4 forward of 224x224 crops took 0.84x the time folded and 0.58x folded + channels-last.
"""

from __future__ import annotations

import copy
import itertools

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fuse_conv_bn"]

_FMT_NDIM = {torch.channels_last: 4, torch.channels_last_3d: 5}
_CONV_BN = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}
#: ResNet stems / blocks whose forward is known to feed ``convN`` only into ``bnN``
#: (torchvision's ResNet, BasicBlock, Bottleneck and gcfeat's 3D ResNet, by class name+module).
_CONV_BN_BLOCKS = {("torchvision.models.resnet", n) for n in ("ResNet", "BasicBlock", "Bottleneck")}
_CONV_BN_BLOCKS |= {("gcfeat.models.resnet3d", n) for n in ("ResNet3d", "BasicBlock3d")}


def _has_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks)


def _fusable(conv: nn.Module, bn: nn.Module) -> bool:
    """Plain eval-mode conv followed by a plain eval-mode batch norm with running stats."""
    return (
        _CONV_BN.get(type(conv)) is type(bn)
        and not conv.training
        and not bn.training
        and bn.track_running_stats
        and bn.running_mean is not None
        and bn.running_var is not None
        and conv.out_channels == bn.num_features
        and not _has_hooks(conv)
        and not _has_hooks(bn)
    )


def _conv_bn_pairs(model: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """``(parent, conv_name, bn_name)`` for each Conv -> BatchNorm pair whose dataflow is known:
    consecutive children of an ``nn.Sequential``, and ``convN -> bnN`` in known ResNet blocks."""
    pairs = []
    for parent in model.modules():
        kids = parent._modules
        if type(parent) is nn.Sequential:
            names = list(kids)
            cands = zip(names, names[1:])
        elif (type(parent).__module__, type(parent).__name__) in _CONV_BN_BLOCKS:
            cands = [(f"conv{i}", f"bn{i}") for i in range(1, 4)]
        else:
            continue
        for c, b in cands:
            if kids.get(c) is not None and kids.get(b) is not None and _fusable(kids[c], kids[b]):
                pairs.append((parent, c, b))
    return pairs


@torch.no_grad()
def fuse_conv_bn(model: nn.Module, memory_format: torch.memory_format | None = None) -> tuple[nn.Module, int]:
    """Inference copy of ``model`` with eval-mode Conv -> BatchNorm pairs folded into the conv.

    Only pairs whose dataflow is known are folded (see :func:`_conv_bn_pairs`); the batch
    norms become ``nn.Identity``. The copy shares every other parameter and buffer with
    ``model`` (no copy; ``model`` itself is never modified), so it must be rebuilt when
    the model's weights change. The fused weights are stored in ``memory_format`` if given.
    Outputs equal ``model``'s up to float rounding.

    Returns:
        ``(copy, number of folded pairs)``, or ``(model, 0)`` when nothing can be folded.
    """
    if model.training or not _conv_bn_pairs(model):
        return model, 0
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    try:
        fused = copy.deepcopy(model, memo)
    except Exception:  # an attribute that cannot be copied: run the model as is
        return model, 0
    pairs = _conv_bn_pairs(fused)
    for parent, c, b in pairs:
        conv = fuse_conv_bn_eval(parent._modules[c], parent._modules[b])
        if _FMT_NDIM.get(memory_format) == conv.weight.ndim:  # oneDNN: match the input
            conv.weight = nn.Parameter(
                conv.weight.contiguous(memory_format=memory_format), requires_grad=False
            )
        parent._modules[c] = conv
        parent._modules[b] = nn.Identity()
    return fused, len(pairs)
