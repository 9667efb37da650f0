"""Pure box operations on tensors, 2D and 3D alike (like ``torchvision.ops``).

Boxes are ``(M, 2 * d)`` tensors of ``lo, hi`` corners with **exclusive** ends: 2D boxes are
``x1, y1, x2, y2`` (``d = 2``), 3D boxes are ``z1, y1, x1, z2, y2, x2`` (``d = 3``). A box's
area (volume) is therefore ``prod(hi - lo)``, with no ``+ 1``: the box ``[0, 0, 1, 1]`` covers
exactly one pixel.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["box_area", "box_iou", "pairwise_box_iou", "box_union", "points_in_boxes"]


def _split(boxes: Tensor) -> tuple[Tensor, Tensor]:
    if boxes.ndim < 1 or boxes.shape[-1] not in (4, 6):
        raise ValueError(f"boxes: expected shape (..., 4) or (..., 6), got {tuple(boxes.shape)}")
    d = boxes.shape[-1] // 2
    return boxes[..., :d], boxes[..., d:]


def box_area(boxes: Tensor) -> Tensor:
    """Area (2D) or volume (3D) of exclusive-end boxes.

    Args:
        boxes: ``(..., 4)`` or ``(..., 6)``.

    Returns:
        ``(...)`` in the box dtype; degenerate boxes (``hi <= lo``) have area 0.
    """
    lo, hi = _split(boxes)
    return (hi - lo).clamp(min=0).prod(-1)


def _inter_union(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    lo_a, hi_a = _split(a)
    lo_b, hi_b = _split(b)
    inter = (torch.minimum(hi_a, hi_b) - torch.maximum(lo_a, lo_b)).clamp(min=0).prod(-1)
    union = box_area(a) + box_area(b) - inter
    return inter, union


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union of every pair, like ``torchvision.ops.box_iou`` (any dim).

    Args:
        boxes1: ``(N, 4)`` or ``(N, 6)``.
        boxes2: ``(M, 4)`` or ``(M, 6)`` (same width as ``boxes1``).

    Returns:
        ``(N, M)`` float IoU in [0, 1]; a pair whose union is empty has IoU 0.
    """
    if boxes1.shape[-1] != boxes2.shape[-1]:
        raise ValueError(f"box_iou: boxes of width {boxes1.shape[-1]} and {boxes2.shape[-1]}")
    inter, union = _inter_union(boxes1[:, None].float(), boxes2[None, :].float())
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def pairwise_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of row ``i`` of ``boxes1`` with row ``i`` of ``boxes2`` (elementwise, not all pairs).

    Args:
        boxes1, boxes2: ``(P, 4)`` or ``(P, 6)``.

    Returns:
        ``(P,)`` float IoU.
    """
    inter, union = _inter_union(boxes1.float(), boxes2.float())
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def box_union(boxes: Tensor, group: Tensor, num_groups: int) -> Tensor:
    """Smallest box around all boxes of each group (a scatter of min/max by group id).

    Args:
        boxes: ``(M, 2d)``.
        group: ``(M,)`` int64 group id in ``[0, num_groups)``.
        num_groups: G.

    Returns:
        ``(G, 2d)``; a group with no box gets ``lo = +inf, hi = -inf`` (float) so callers can
        tell it apart.
    """
    d = boxes.shape[-1] // 2
    b = boxes.float()
    idx = group[:, None].expand(-1, d)
    lo = torch.full((num_groups, d), float("inf"), device=b.device)
    hi = torch.full((num_groups, d), float("-inf"), device=b.device)
    lo = lo.scatter_reduce(0, idx, b[:, :d], "amin")
    hi = hi.scatter_reduce(0, idx, b[:, d:], "amax")
    return torch.cat([lo, hi], 1)


def points_in_boxes(points: Tensor, boxes: Tensor) -> Tensor:
    """Whether each point lies inside the matching box (row by row, exclusive end).

    Args:
        points: ``(P, d)`` in box coordinate order (2D: ``x, y``; 3D: ``z, y, x``).
        boxes: ``(P, 2d)``.

    Returns:
        ``(P,)`` bool.
    """
    lo, hi = _split(boxes)
    p = points.to(lo.dtype)
    return ((p >= lo) & (p < hi)).all(-1)
