"""What a CAM explains: pytorch-grad-cam's target callables, and how gcfeat reads them.

A target maps one image's model output (``(N,)`` logits, or ``(K, H, W)`` for a segmentation
model) to the scalar whose gradient is explained. gcfeat's engine explains raw logits of
class indices in one batched pass (``classes=``); a list of targets that are all exactly
``ClassifierOutputTarget`` (gcfeat's or pytorch-grad-cam's class) is read as those indices
and keeps that speed. Any other target (softmax, binary, raw scores, segmentation, a lambda,
a subclass) is called on each image's output and differentiated as pytorch-grad-cam does:
``sum_i target_i(output_i)``, one backward for the batch. gcfeat never guesses from a
``category`` attribute alone: ``ClassifierOutputSoftmaxTarget(k)`` has one too, and reading it
as a logit target gave the logit map (the bug this module fixes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ClassifierOutputTarget",
    "ClassifierOutputSoftmaxTarget",
    "BinaryClassifierOutputTarget",
    "SoftmaxOutputTarget",
    "RawScoresOutputTarget",
    "SemanticSegmentationTarget",
    "plain_classes",
    "target_scores",
]


class ClassifierOutputTarget:
    """The raw logit of ``category`` (same as pytorch-grad-cam's)."""

    def __init__(self, category: int):
        self.category = category

    def __call__(self, model_output: Tensor) -> Tensor:
        if model_output.ndim == 1:
            return model_output[self.category]
        return model_output[:, self.category]

    def __repr__(self) -> str:
        return f"ClassifierOutputTarget({self.category})"


class ClassifierOutputSoftmaxTarget:
    """The softmax probability of ``category``: ``softmax(z)_k``."""

    def __init__(self, category: int):
        self.category = category

    def __call__(self, model_output: Tensor) -> Tensor:
        return torch.softmax(model_output, dim=-1)[..., self.category]

    def __repr__(self) -> str:
        return f"ClassifierOutputSoftmaxTarget({self.category})"


class BinaryClassifierOutputTarget:
    """A one-logit binary classifier: ``z`` for ``category == 1``, ``-z`` otherwise."""

    def __init__(self, category: int):
        self.category = category

    def __call__(self, model_output: Tensor) -> Tensor:
        return model_output * (1 if self.category == 1 else -1)


class SoftmaxOutputTarget:
    """All softmax probabilities (summed by the engine)."""

    def __call__(self, model_output: Tensor) -> Tensor:
        return torch.softmax(model_output, dim=-1)


class RawScoresOutputTarget:
    """All raw outputs (summed by the engine)."""

    def __call__(self, model_output: Tensor) -> Tensor:
        return model_output


class SemanticSegmentationTarget:
    """Sum of ``category``'s scores over a binary ``mask`` ``(H, W)`` (numpy or tensor) of a
    segmentation output ``(K, H, W)``."""

    def __init__(self, category: int, mask):
        self.category = category
        self.mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask)

    def __call__(self, model_output: Tensor) -> Tensor:
        return (model_output[self.category] * self.mask.to(model_output.device)).sum()


def _plain_types() -> tuple[type, ...]:
    types: tuple[type, ...] = (ClassifierOutputTarget,)
    try:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget as Pgc

        types += (Pgc,)
    except ImportError:
        pass
    return types


def _index(category) -> int | None:
    if isinstance(category, (int, np.integer)) and not isinstance(category, bool):
        return int(category)
    if (
        isinstance(category, Tensor)
        and category.numel() == 1
        and not (category.is_floating_point() or category.dtype == torch.bool)
    ):
        return int(category)
    return None


def plain_classes(targets: Sequence[Callable]) -> list[int] | None:
    """The class indices when every target is exactly a ``ClassifierOutputTarget`` with an
    integer category (no subclass: it may override ``__call__``), else None."""
    types = _plain_types()
    out = []
    for t in targets:
        k = _index(getattr(t, "category", None)) if type(t) in types else None
        if k is None:
            return None
        out.append(k)
    return out


def target_scores(targets: Sequence[Callable], outputs: Tensor) -> Tensor:
    """``(B,)`` scores ``target_i(outputs[i])``, each summed to a scalar (pytorch-grad-cam
    sums them into one loss; summing per image keeps the images apart)."""
    return torch.stack([t(o).sum() for t, o in zip(targets, outputs)])
