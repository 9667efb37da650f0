"""M1 (LN-FE): crop each box from the normalised frame, resize, re-run the backbone, pool.

The crop is ``torchvision.ops.roi_align`` on the image batch with ``aligned=True`` and one
sample per output pixel (``sampling_ratio=1``). For a box ``[x1, x2)`` the output pixel ``i``
samples the source at ``x1 + (i + 0.5) * (x2 - x1) / out_w - 0.5``: exactly the half-pixel
mapping of ``cv2.resize(crop, (out_w, out_h), interpolation=cv2.INTER_LINEAR)`` (and of
``F.interpolate(..., mode="bilinear", align_corners=False)``), without anti-aliasing, as in the
original. The only difference: samples that fall within half a source pixel outside the box
interpolate with the frame's pixels just outside the box instead of repeating the box's edge
pixel (the original's PNG crops could not see them). All crops of a batch go through the
backbone together, in chunks of ``batch_size``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn
from torchvision.ops import roi_align

from .base import Extractor, Features, layer_channels
from .pooling import Layout, layout_dim, pool_to_layout


def crop_boxes(images: torch.Tensor, xyxy: torch.Tensor, frame: torch.Tensor,
               out_size: Tuple[int, int] = (224, 224)) -> torch.Tensor:
    """Bilinear crops of boxes from an image batch.

    Args:
        images: ``(B, C, H, W)``.
        xyxy: ``(M, 4)`` boxes ``x1, y1, x2, y2`` (exclusive end) in pixels.
        frame: ``(M,)`` image row of each box.
        out_size: ``(h, w)`` of every crop.

    Returns:
        ``(M, C, h, w)`` on the images' device.
    """
    rois = torch.cat([frame.to(images.dtype)[:, None], xyxy.to(images.dtype)], 1)
    return roi_align(images, rois, tuple(out_size), spatial_scale=1.0, sampling_ratio=1,
                     aligned=True)


def backbone_to(model: nn.Module, x: torch.Tensor, layer: str = "layer4") -> torch.Tensor:
    """Run a torchvision ResNet's children ``conv1 .. layer`` on ``x``; ``(B, C, h, w)``."""
    for name, module in model.named_children():
        x = module(x)
        if name == layer:
            return x
    raise ValueError(f"backbone_to: the model has no child {layer!r}; "
                     f"children are {[n for n, _ in model.named_children()]}")


@torch.no_grad()
def crop_features(model: nn.Module, images: torch.Tensor, xyxy: torch.Tensor,
                  frame: torch.Tensor, out_size: Tuple[int, int] = (224, 224),
                  layout: Layout = (512, 1, 1), batch_size: int = 64,
                  layer: str = "layer4") -> torch.Tensor:
    """M1 features: crop, resize to ``out_size``, forward to ``layer``, pool.

    Args:
        model: a torchvision ResNet in eval mode.
        images: ``(B, 3, H, W)`` normalised frames.
        xyxy: ``(M, 4)`` boxes in frame pixels; ``frame``: ``(M,)`` row in ``images``.
        layout: pooling layout (see :mod:`gcfeat.extract.pooling`).
        batch_size: crops per backbone forward (memory knob; results do not depend on it).

    Returns:
        ``(M, D)`` float32.
    """
    feats = []
    for start in range(0, xyxy.shape[0], batch_size):
        crops = crop_boxes(images, xyxy[start:start + batch_size],
                           frame[start:start + batch_size], out_size)
        if images.is_contiguous(memory_format=torch.channels_last):
            crops = crops.contiguous(memory_format=torch.channels_last)
        fmap = backbone_to(model, crops, layer)
        feats.append(pool_to_layout(fmap.float(), layout))
    if not feats:
        return images.new_zeros(0, 0, dtype=torch.float32)
    return torch.cat(feats)


class CropExtractor(Extractor):
    """M1: one row per box; features of the box's crop re-run through the backbone."""

    name = "m1"

    def __init__(self, model: nn.Module, out_size: Tuple[int, int] = (224, 224),
                 layout: Layout = (512, 1, 1), batch_size: int = 64) -> None:
        self.model = model
        self.out_size = tuple(int(s) for s in out_size)
        self.layout = layout
        self.batch_size = int(batch_size)

    def output_dim(self, channels: Optional[dict] = None) -> int:
        channels = channels or layer_channels(self.model)
        return layout_dim(self.layout, channels["layer4"])

    def settings(self) -> dict:
        return {"out_size": list(self.out_size), "layout": self.layout, "layer": "layer4"}

    def __call__(self, images, result, boxes, probs=None) -> Features:
        feats = crop_features(self.model, images, boxes.xyxy, boxes.frame, self.out_size,
                              self.layout, self.batch_size)
        if feats.shape[0] == 0:
            feats = feats.new_zeros(0, self.output_dim())
        return Features(boxes.frame.long(), boxes.label.long(), boxes.xyxy.float(),
                        boxes.score.float(), feats)
