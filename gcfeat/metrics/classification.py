"""Classification metrics in torch: per-class AP / mAP for multi-label outputs, and accuracy,
precision, recall, ROC AUC for binary and multiclass tasks.

Inputs may be torch tensors or numpy arrays (or nested lists); torch inputs give torch outputs
on the same device, numpy/list inputs give numpy outputs. Scalars are Python floats.

Average precision follows the step-wise definition (as ``sklearn.metrics.average_precision_score``):

.. math::  \\mathrm{AP} = \\sum_n (R_n - R_{n-1})\\, P_n

over the distinct score thresholds in decreasing order (tied scores form one threshold).
ROC AUC uses the rank (Mann-Whitney) formula with average ranks for ties:

.. math::  \\mathrm{AUC} = \\frac{\\sum_{i \\in pos} r_i - P(P+1)/2}{P\\,N}

Example::

    >>> ap = average_precision(torch.sigmoid(logits), labels)    # (K,), NaN: no positives
    >>> print(ap_table(ap, SURGICAL_CLASSES))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def _as_tensor(x: Any, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, bool]:
    """(tensor, was_torch)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(dtype), True
    return torch.as_tensor(np.asarray(x), dtype=dtype), False


def _out(t: torch.Tensor, was_torch: bool):
    return t if was_torch else t.cpu().numpy()


def _tie_groups(sorted_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For columns sorted along dim 0: ``end`` (N, K) bool marks the last element of each run
    of equal values; ``gid`` (N, K) int64 numbers the runs 0, 1, ... per column."""
    end = torch.ones_like(sorted_values, dtype=torch.bool)
    end[:-1] = sorted_values[:-1] != sorted_values[1:]
    gid = end.long().cumsum(0) - end.long()
    return end, gid


def average_precision(scores, targets):
    """Per-class average precision of multi-label scores.

    Args:
        scores: ``(N, K)`` (or ``(N,)``) scores, any monotone scale (logits or probabilities).
        targets: same shape, 0/1 ground truth.

    Returns:
        ``(K,)`` float64 AP per class (a 0-d value for 1D input); NaN for classes with no
        positive sample (AP is undefined there).
    """
    s, was_torch = _as_tensor(scores)
    t, _ = _as_tensor(targets)
    t = t.to(s.device)
    if s.shape != t.shape:
        raise ValueError(
            f"average_precision: scores {tuple(s.shape)} and targets {tuple(t.shape)} differ in shape"
        )
    squeeze = s.dim() == 1
    if squeeze:
        s, t = s[:, None], t[:, None]
    if s.dim() != 2:
        raise ValueError(f"average_precision: expected (N, K) scores, got {tuple(s.shape)}")
    n, k = s.shape
    if n == 0:
        ap = torch.full((k,), math.nan, dtype=torch.float64, device=s.device)
        return _out(ap[0] if squeeze else ap, was_torch)
    s_sorted, order = s.sort(dim=0, descending=True, stable=True)
    t_sorted = t.gather(0, order)
    tp = t_sorted.cumsum(0)
    precision = tp / torch.arange(1, n + 1, dtype=s.dtype, device=s.device)[:, None]
    end, gid = _tie_groups(s_sorted)
    # Every positive in a tie group is credited with the precision at the group's end.
    group_prec = torch.zeros_like(precision).scatter_reduce_(
        0, gid, torch.where(end, precision, torch.zeros_like(precision)), reduce="amax"
    )
    positives = t.sum(0)
    ap = (t_sorted * group_prec.gather(0, gid)).sum(0) / positives
    ap = torch.where(positives > 0, ap, torch.full_like(ap, math.nan))
    return _out(ap[0] if squeeze else ap, was_torch)


def mean_average_precision(scores, targets) -> float:
    """Mean of :func:`average_precision` over classes with at least one positive (NaN if none)."""
    ap = average_precision(scores, targets)
    return nanmean(ap)


def nanmean(values) -> float:
    """Mean of the finite entries (NaN when there are none)."""
    v, _ = _as_tensor(values)
    v = v.reshape(-1)
    v = v[~torch.isnan(v)]
    return float(v.mean()) if v.numel() else math.nan


def ap_table(ap, classes: Sequence[str], *, title: str | None = None, digits: int = 3) -> str:
    """A fixed-width text table of per-class AP with the mAP underneath.

    Args:
        ap: ``(K,)`` per-class AP (NaN: no positives, shown as ``-``).
        classes: K class names.
    """
    values = [float(a) for a in _as_tensor(ap)[0].reshape(-1).tolist()]
    if len(values) != len(classes):
        raise ValueError(f"ap_table: {len(values)} AP values for {len(classes)} class names")
    width = max([len("class"), len("mAP")] + [len(str(c)) for c in classes])
    lines = [title] if title else []
    lines.append(f"{'class':<{width}}  {'AP':>{digits + 2}}")
    lines.append("-" * (width + digits + 4))
    for name, a in zip(classes, values):
        cell = "-" if math.isnan(a) else f"{a:.{digits}f}"
        lines.append(f"{str(name):<{width}}  {cell:>{digits + 2}}")
    lines.append("-" * (width + digits + 4))
    m = nanmean(torch.tensor(values)) if values else math.nan
    n = sum(not math.isnan(a) for a in values)
    cell = "-" if math.isnan(m) else f"{m:.{digits}f}"
    lines.append(f"{'mAP':<{width}}  {cell:>{digits + 2}}  ({n}/{len(values)} classes with positives)")
    return "\n".join(lines)


# ----------------------------------------------------------------- binary / multiclass metrics


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks along dim 0 of ``(N, K)``, ties get their average rank."""
    n = x.shape[0]
    x_sorted, order = x.sort(dim=0, stable=True)
    end, gid = _tie_groups(x_sorted)
    pos = torch.arange(n, dtype=torch.float64, device=x.device)[:, None].expand_as(x_sorted).contiguous()
    first = torch.full_like(pos, float(n)).scatter_reduce_(0, gid, pos, reduce="amin")
    last = torch.zeros_like(pos).scatter_reduce_(0, gid, pos, reduce="amax")
    rank_sorted = (first.gather(0, gid) + last.gather(0, gid)) / 2 + 1
    return torch.empty_like(rank_sorted).scatter_(0, order, rank_sorted)


def roc_auc_per_class(scores, targets):
    """One-vs-rest ROC AUC per column.

    Args:
        scores: ``(N, K)`` scores; targets: ``(N, K)`` 0/1.

    Returns:
        ``(K,)`` float64; NaN where a column has no positive or no negative.
    """
    s, was_torch = _as_tensor(scores)
    t, _ = _as_tensor(targets)
    t = t.to(s.device)
    if s.shape != t.shape or s.dim() != 2:
        raise ValueError(
            f"roc_auc_per_class: expected (N, K) scores and targets, got {tuple(s.shape)} and {tuple(t.shape)}"
        )
    ranks = _average_ranks(s)
    p = t.sum(0)
    q = (1 - t).sum(0)
    auc = ((ranks * t).sum(0) - p * (p + 1) / 2) / (p * q)
    auc = torch.where((p > 0) & (q > 0), auc, torch.full_like(auc, math.nan))
    return _out(auc, was_torch)


def roc_auc(scores, targets) -> float:
    """ROC AUC of a binary or multiclass classifier.

    Args:
        scores: ``(N,)`` positive-class scores (binary), ``(N, 2)`` (binary, column 1 used), or
            ``(N, C)`` class scores (multiclass: macro mean of one-vs-rest AUCs).
        targets: ``(N,)`` integer labels (0/1 for binary), or ``(N, K)`` multi-hot (macro mean
            over columns with both classes present).

    Returns:
        the AUC (NaN when undefined, e.g. only one class present).
    """
    s, _ = _as_tensor(scores)
    t, _ = _as_tensor(targets)
    t = t.to(s.device)
    if s.dim() == 2 and s.shape[1] == 2 and t.dim() == 1:
        s = s[:, 1]
    if s.dim() == 1:
        if t.dim() != 1 or t.shape[0] != s.shape[0]:
            raise ValueError(f"roc_auc: scores {tuple(s.shape)} need targets (N,), got {tuple(t.shape)}")
        return float(roc_auc_per_class(s[:, None], t[:, None])[0])
    if t.dim() == 1:
        t = _one_hot(t, s.shape[1])
    return nanmean(roc_auc_per_class(s, t))


def _one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    lab = labels.long()
    if lab.numel() and (lab.min() < 0 or lab.max() >= num_classes):
        raise ValueError(f"labels outside 0..{num_classes - 1}: found {int(lab.min())}..{int(lab.max())}")
    return torch.nn.functional.one_hot(lab, num_classes).to(torch.float64)


def _labels(preds: torch.Tensor) -> torch.Tensor:
    """Class ids from ``(N,)`` ids or ``(N, C)`` scores (argmax)."""
    return preds.argmax(1) if preds.dim() == 2 else preds.round().long()


def _confusion(p: torch.Tensor, t: torch.Tensor, num_classes: int | None) -> torch.Tensor:
    c = num_classes or (p.shape[1] if p.dim() == 2 else None)
    p = _labels(p)
    t = t.to(p.device).long()
    if c is None:
        c = int(max(p.max(), t.max())) + 1 if p.numel() else 1
    if p.numel() and (min(p.min(), t.min()) < 0 or max(p.max(), t.max()) >= c):
        raise ValueError(f"class ids outside 0..{c - 1}")
    return torch.bincount(t * c + p, minlength=c * c).reshape(c, c)


def confusion_matrix(preds, targets, num_classes: int | None = None):
    """``(C, C)`` int64 counts, rows = true class, columns = predicted class.

    Args:
        preds: ``(N,)`` predicted ids or ``(N, C)`` scores (argmax); targets: ``(N,)`` ids.
    """
    p, was_torch = _as_tensor(preds)
    t, _ = _as_tensor(targets)
    return _out(_confusion(p, t, num_classes), was_torch)


def accuracy(preds, targets) -> float:
    """Fraction of correct predictions; preds ``(N,)`` ids or ``(N, C)`` scores."""
    p, _ = _as_tensor(preds)
    t, _ = _as_tensor(targets)
    p = _labels(p)
    return float((p == t.to(p.device).long()).double().mean()) if p.numel() else math.nan


def precision_recall(
    preds, targets, *, average: str = "binary", num_classes: int | None = None
) -> tuple[float, float]:
    """Precision and recall.

    Args:
        preds: ``(N,)`` predicted ids or ``(N, C)`` scores (argmax); targets: ``(N,)`` ids.
        average: ``"binary"``: of class 1 (ids in {0, 1}); ``"macro"``: unweighted mean over
            classes. A class never predicted has precision 0 (sklearn's ``zero_division=0``).
    """
    p, _ = _as_tensor(preds)
    t, _ = _as_tensor(targets)
    if average == "binary":
        num_classes = num_classes or 2
    cm = _confusion(p, t, num_classes).double()
    tp = cm.diagonal()
    predicted = cm.sum(0)
    actual = cm.sum(1)
    prec = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    rec = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
    if average == "binary":
        if cm.shape[0] != 2:
            raise ValueError(f"precision_recall: average='binary' needs 2 classes, found {cm.shape[0]}")
        return float(prec[1]), float(rec[1])
    if average == "macro":
        return float(prec.mean()), float(rec.mean())
    raise ValueError(f"precision_recall: average={average!r}, expected 'binary' or 'macro'")


def precision(preds, targets, *, average: str = "binary") -> float:
    """See :func:`precision_recall`."""
    return precision_recall(preds, targets, average=average)[0]


def recall(preds, targets, *, average: str = "binary") -> float:
    """See :func:`precision_recall`."""
    return precision_recall(preds, targets, average=average)[1]


def binary_metrics(probs, targets, *, threshold: float = 0.5) -> dict[str, float]:
    """accuracy / precision / recall at ``threshold`` and ROC AUC of a binary classifier.

    Args:
        probs: ``(N,)`` positive-class probabilities (or ``(N, 2)`` softmax outputs).
        targets: ``(N,)`` 0/1.
    """
    p, _ = _as_tensor(probs)
    if p.dim() == 2 and p.shape[1] == 2:
        p = p[:, 1]
    preds = (p > threshold).long()
    t, _ = _as_tensor(targets)
    prec, rec = precision_recall(preds, t.long(), average="binary", num_classes=2)
    return {"accuracy": accuracy(preds, t), "precision": prec, "recall": rec, "roc_auc": roc_auc(p, t)}


def multiclass_metrics(scores, targets) -> dict[str, float]:
    """accuracy (argmax), macro precision / recall, macro one-vs-rest ROC AUC.

    Args:
        scores: ``(N, C)`` class scores or probabilities; targets: ``(N,)`` class ids.
    """
    s, _ = _as_tensor(scores)
    t, _ = _as_tensor(targets)
    prec, rec = precision_recall(s, t.long(), average="macro", num_classes=s.shape[1])
    return {"accuracy": accuracy(s, t), "precision": prec, "recall": rec, "roc_auc": roc_auc(s, t)}
