"""What a training run optimises and how it scores validation: one :class:`Objective` per kind
of task.

- :data:`MULTILABEL` (``loss="bce"``): BCE-with-logits on the multi-hot ``labels`` (equal to the
  original's ``MultiLabelSoftMarginLoss``), sigmoid scores; validation mAP = mean over classes
  with a positive of the per-class average precision; the best epoch has the highest mAP (the
  lowest validation loss while no class has a positive).
- :data:`SINGLE_LABEL` (``loss="ce"``): cross-entropy on the class id ``label`` (``labels`` when
  a sample has no ``label``: ``(image, class id)`` tuples), softmax scores; validation accuracy
  (and ROC AUC of class 1 for two classes); the best epoch has the highest accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gcfeat.metrics.classification import average_precision, nanmean, roc_auc

__all__ = ["Objective", "MULTILABEL", "SINGLE_LABEL", "OBJECTIVES", "get_objective"]


@dataclass(frozen=True)
class Objective:
    """Loss, targets and validation metrics of one kind of task (see the module docstring).

    ``metric``: the history key the best epoch is chosen by; ``columns``: the CSV log's
    columns; ``per_class``: whether rows carry a per-class AP list (``ap``).
    """

    name: str
    metric: str
    columns: tuple[str, ...]
    per_class: bool

    def targets(self, batch: Mapping[str, Any], device: torch.device, pin: bool) -> torch.Tensor:
        """``(B, K)`` float multi-hot (bce) or ``(B,)`` int64 class ids (ce) on ``device``."""
        if self.name == "bce":
            return batch["labels"].to(device, non_blocking=pin).float()
        y = batch["label"] if "label" in batch else batch["labels"]
        return torch.as_tensor(y).to(device, non_blocking=pin).long().reshape(-1)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss over the batch."""
        if self.name == "bce":
            return nn.functional.binary_cross_entropy_with_logits(logits, targets)
        return nn.functional.cross_entropy(logits, targets)

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """Validation metrics of ``logits (N, K)`` against the targets (``ap``: per-class list)."""
        if self.name == "bce":
            ap = average_precision(logits, targets)
            return {"val_mAP": nanmean(ap), "ap": [float(a) for a in ap.cpu().tolist()]}
        out = {"val_accuracy": float((logits.argmax(1) == targets).float().mean())}
        if logits.shape[1] == 2:
            out["val_roc_auc"] = float(roc_auc(logits.softmax(1)[:, 1], targets))
        return out

    def score(self, row: Mapping[str, Any]) -> float:
        """What "best" maximises: ``row[metric]``, or ``-val_loss`` while the metric is NaN."""
        value = float(row[self.metric])
        return value if not math.isnan(value) else -float(row["val_loss"])


MULTILABEL = Objective(
    "bce", "val_mAP", ("epoch", "train_loss", "val_loss", "val_mAP", "lr", "seconds"), per_class=True
)
SINGLE_LABEL = Objective(
    "ce",
    "val_accuracy",
    ("epoch", "train_loss", "val_loss", "lr", "seconds", "val_accuracy"),
    per_class=False,
)
OBJECTIVES = {"bce": MULTILABEL, "ce": SINGLE_LABEL}


def get_objective(loss: str | Objective) -> Objective:
    """``"bce"`` / ``"ce"`` (or an :class:`Objective`) -> the objective."""
    if isinstance(loss, Objective):
        return loss
    if loss not in OBJECTIVES:
        raise ValueError(f"loss={loss!r}: expected one of {tuple(OBJECTIVES)}")
    return OBJECTIVES[loss]
