"""Sample selection: a class-balanced subset of a labelled dataset."""

from __future__ import annotations

import torch

__all__ = ["balanced_subset"]


def balanced_subset(labels: torch.Tensor, limit: int, seed: int | None = 0) -> torch.Tensor:
    """Indices ``(min(limit, N),)`` of a class-balanced subset of ``labels (N,)`` (class ids).

    Round-robin over the classes present (ascending id): the first sample of each class, then
    the second of each, ... ; a class that runs out drops out of the rotation. Each class's
    samples are taken in dataset order, or in a ``seed``-ed permutation of it (``seed=None``:
    dataset order). Deterministic for a given ``seed``; the indices come in round-robin order,
    so any prefix is balanced too.
    """
    if limit < 0:
        raise ValueError(f"limit: expected a non-negative number of samples, found {limit}")
    labels = torch.as_tensor(labels).long().flatten()
    n = labels.numel()
    perm = (
        torch.arange(n) if seed is None else torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    )
    order = perm[torch.sort(labels[perm], stable=True).indices]  # by class, then perm order
    cls = labels[order]
    first = torch.searchsorted(cls, cls, side="left")  # class start in `order`
    rank = torch.arange(n) - first  # position within class
    rr = torch.sort(rank * (int(cls.max()) + 1 if n else 1) + cls, stable=True).indices
    return order[rr][:limit]
