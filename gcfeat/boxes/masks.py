"""Boxes from masks: the ground-truth box of a segmentation (lesion, organ, ventricles).

Used by the threshold study and the one-sample figure of the MRI tasks, where the ground truth
is the box around each sample's ``gt_mask``.
"""

from __future__ import annotations

import torch

__all__ = ["mask_boxes"]


def mask_boxes(mask):
    """Bounding box of every mask, batched.

    Args:
        mask: ``(B, *S)`` bool (2D or 3D).

    Returns:
        ``boxes (B, 2d)`` float32, exclusive end, in box column order (2D ``x1, y1, x2, y2``;
        3D ``z1, y1, x1, z2, y2, x2``; zeros for an empty mask) and ``present (B,)`` bool.
    """
    m = mask.bool()
    d = m.ndim - 1
    lo, hi = [], []
    for ax in range(1, d + 1):  # project on each axis (2 or 3 of them), all samples at once
        others = [a for a in range(1, d + 1) if a != ax]
        line = m.amax(dim=others) if others else m  # (B, S_ax)
        idx = torch.arange(m.shape[ax], device=m.device)
        lo.append(torch.where(line, idx, m.shape[ax]).amin(1))
        hi.append(torch.where(line, idx, -1).amax(1) + 1)
    order = [1, 0] if d == 2 else [0, 1, 2]  # array axes (y, x) -> box columns (x, y)
    boxes = torch.stack([lo[j] for j in order] + [hi[j] for j in order], 1).float()
    present = m.flatten(1).any(1)
    return torch.where(present[:, None], boxes, torch.zeros_like(boxes)), present
