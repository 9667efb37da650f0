"""Batching of sample dicts for training and prediction (every task)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["collate"]


def collate(samples: Sequence[Any]) -> dict:
    """Batch sample dicts: ``image`` -> ``(B, C, *spatial)``, ``labels`` -> ``(B, K)`` (or
    ``(B,)`` class ids), every other tensor entry of one shape across the batch (``label``,
    ``gt_mask``) stacked; the rest (video, frame_index, gt_boxes, ...) kept as lists of length
    B. ``(image, label)`` tuples become ``{"image", "labels"}``."""
    if not samples:
        raise ValueError("collate: empty batch")
    if not isinstance(samples[0], Mapping):
        samples = [{"image": s[0], "labels": s[1]} for s in samples]
    out: dict = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key in ("image", "labels"):
            out[key] = torch.stack([torch.as_tensor(v) for v in values])
        elif torch.is_tensor(values[0]) and all(v.shape == values[0].shape for v in values):
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out
