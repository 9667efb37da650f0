"""Localisation of a heatmap against a ground-truth mask: pointing game and mask IoU.

Both reduce over all spatial dims (``flatten(1)``), so 2D ``(B, H, W)`` and 3D ``(B, D, H, W)``
share one code path. The pointing game (Zhang et al., "Top-down neural attention by
excitation backprop", ECCV 2016) is a hit when the heatmap's arg-max lies inside the mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gcfeat.metrics.faithfulness import mean_std

__all__ = ["pointing_game", "mask_iou", "localisation", "summary_stats"]


def pointing_game(heat: torch.Tensor, mask: torch.Tensor, tolerance: int = 0) -> torch.Tensor:
    """Hit (bool ``(B,)``) when the arg-max of ``heat (B, *S)`` lies in ``mask (B, *S)``,
    dilated by ``tolerance`` voxels (a max-pool of the mask, 2D or 3D)."""
    m = mask.float()
    if tolerance > 0:
        pool = F.max_pool3d if m.dim() == 4 else F.max_pool2d
        m = pool(m[:, None], 2 * tolerance + 1, stride=1, padding=tolerance)[:, 0]
    idx = heat.flatten(1).argmax(1)
    return m.flatten(1).gather(1, idx[:, None])[:, 0] > 0


def mask_iou(heat: torch.Tensor, mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """IoU ``(B,)`` of ``heat > threshold`` with ``mask`` over all spatial dims."""
    pred = (heat > threshold).flatten(1)
    gt = mask.bool().flatten(1)
    inter = (pred & gt).sum(1).float()
    union = (pred | gt).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def localisation(
    heat: torch.Tensor, mask: torch.Tensor, tolerance: int = 0, iou_threshold: float = 0.5
) -> dict | None:
    """Pointing game and IoU of ``heat (B, *S)`` against ``mask (B, *S)`` over the samples whose
    mask is non-empty; ``{"pointing_game": stats, "iou": stats}`` with ``n`` = those samples,
    or ``None`` when no mask is non-empty."""
    has = mask.flatten(1).any(1)
    if not bool(has.any()):
        return None
    hit = pointing_game(heat[has], mask[has], tolerance).float()
    return {
        "pointing_game": summary_stats(hit),
        "iou": summary_stats(mask_iou(heat[has], mask[has], iou_threshold)),
    }


def summary_stats(v: torch.Tensor) -> dict:
    """``{"mean", "std", "n"}`` of a ``(N,)`` tensor (as :func:`mean_std`)."""
    m, s = mean_std(v)
    return {"mean": m, "std": s, "n": int(v.numel())}
