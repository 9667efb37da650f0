"""M2 (L-FE): ``roi_align`` of each box on the backbone map chosen by the box's area.

The original routes a box by its area in 320x256 pixels: ``< 5120`` -> layer2 (stride 8),
``< 20480`` -> layer3 (stride 16), else layer4 (stride 32). Here the thresholds scale with the
frame area (``frame_h * frame_w / (256 * 320)``) and are options; ``single_layer=`` forces one
map. Each box is ROI-aligned (``aligned=True``, adaptive sampling) straight to the layout's
``(p1, p2)`` grid, which equals an adaptive average pool of the box's cells when the box lies on
the feature grid; the channels are then averaged in groups to ``p0`` (layer2 has 512 channels,
layer3 1024, layer4 2048 for ResNet50). The original sliced the maps with integers and ran the
backbone three extra times; here all maps come from the one CAM forward.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torchvision.ops import roi_align

from .base import Extractor, Features
from .pooling import Layout, LayoutError, channel_group_mean, layout_dim

LEVELS: Tuple[str, str, str] = ("layer2", "layer3", "layer4")
#: The original's area thresholds, in pixels of a 256x320 (HxW) frame.
AREA_THRESHOLDS: Tuple[float, float] = (5120.0, 20480.0)
REFERENCE_AREA: float = 256.0 * 320.0


def box_levels(xyxy: torch.Tensor, frame_size: Tuple[int, int],
               area_thresholds: Sequence[float] = AREA_THRESHOLDS) -> torch.Tensor:
    """Level of each box: 0 (layer2), 1 (layer3) or 2 (layer4); ``(M,)`` int64.

    ``area < t0 * s`` -> 0, ``< t1 * s`` -> 1, else 2, with ``s = H * W / (256 * 320)``.
    """
    area = ((xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])).float()
    scale = frame_size[0] * frame_size[1] / REFERENCE_AREA
    bounds = torch.tensor([float(t) * scale for t in area_thresholds], device=xyxy.device)
    return torch.bucketize(area, bounds, right=True)


def roi_features(feature_maps: Dict[str, torch.Tensor], xyxy: torch.Tensor,
                 frame: torch.Tensor, frame_size: Tuple[int, int],
                 area_thresholds: Sequence[float] = AREA_THRESHOLDS,
                 single_layer: Optional[str] = None,
                 layout: Layout = (512, 1, 1)) -> torch.Tensor:
    """M2 features of boxes.

    Args:
        feature_maps: ``{"layer2": (B, C2, h2, w2), "layer3": ..., "layer4": ...}``.
        xyxy: ``(M, 4)`` boxes in frame pixels (exclusive end); ``frame``: ``(M,)`` batch row.
        frame_size: ``(H, W)`` of the frames the boxes live in.
        area_thresholds: level thresholds in 256x320-frame pixels (scaled to ``frame_size``).
        single_layer: use only this map (``"layer2"`` / ``"layer3"`` / ``"layer4"``).
        layout: pooling layout; ``None`` (raw channels) needs one channel count, so mixed
            levels with different widths need ``single_layer``.

    Returns:
        ``(M, D)`` float32.
    """
    if single_layer is not None:
        if single_layer not in feature_maps:
            raise ValueError(f"roi_features: single_layer={single_layer!r} not among the maps "
                             f"{sorted(feature_maps)}")
        levels = torch.zeros(xyxy.shape[0], dtype=torch.long, device=xyxy.device)
        names = [single_layer]
    else:
        levels = box_levels(xyxy, frame_size, area_thresholds)
        names = list(LEVELS)
    grid = (1, 1) if layout is None else (layout[1], layout[2])
    widths = {feature_maps[n].shape[1] for n in names}
    if layout is None and len(widths) > 1:
        raise LayoutError(f"roi_features: layout=None keeps raw channels but the levels have "
                          f"{sorted(widths)} channels; pass single_layer= or a 512-d layout")
    dim = layout_dim(layout, max(widths))
    out = torch.zeros(xyxy.shape[0], dim, device=xyxy.device, dtype=torch.float32)
    H, W = frame_size
    for level, name in enumerate(names):
        rows = (levels == level).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        fmap = feature_maps[name]
        h, w = fmap.shape[-2:]
        # per-axis scale (spatial_scale is one number; strides may differ by axis)
        scale = torch.tensor([w / W, h / H, w / W, h / H], device=xyxy.device)
        rois = torch.cat([frame[rows].float()[:, None], xyxy[rows].float() * scale], 1)
        region = roi_align(fmap.float(), rois.to(fmap.device), grid, spatial_scale=1.0,
                           sampling_ratio=-1, aligned=True)            # (r, C, p1, p2)
        if layout is None:
            out[rows] = region.flatten(1)
        else:
            out[rows] = channel_group_mean(region, layout[0]).flatten(1)
    return out


class RoiExtractor(Extractor):
    """M2: one row per box; ROI-aligned features from the CAM pass's layer2/3/4 maps."""

    name = "m2"

    def __init__(self, area_thresholds: Sequence[float] = AREA_THRESHOLDS,
                 single_layer: Optional[str] = None, layout: Layout = (512, 1, 1)) -> None:
        self.area_thresholds = tuple(float(t) for t in area_thresholds)
        self.single_layer = single_layer
        self.layout = layout

    def output_dim(self, channels: dict) -> int:
        names = [self.single_layer] if self.single_layer else list(LEVELS)
        return layout_dim(self.layout, max(channels[n] for n in names))

    def settings(self) -> dict:
        return {"area_thresholds": list(self.area_thresholds),
                "single_layer": self.single_layer or "", "layout": self.layout}

    @staticmethod
    def feature_maps(result) -> Dict[str, torch.Tensor]:
        """``{"layer2", "layer3", "layer4"}`` maps of a CAMResult run with
        ``extra_layers=(layer2, layer3)`` on ``target_layers=[layer4]``."""
        return {"layer2": result.extra[0], "layer3": result.extra[1],
                "layer4": result.activations[0]}

    def __call__(self, images, result, boxes, probs=None) -> Features:
        feats = roi_features(self.feature_maps(result), boxes.xyxy, boxes.frame,
                             tuple(images.shape[-2:]), self.area_thresholds,
                             self.single_layer, self.layout)
        return Features(boxes.frame.long(), boxes.label.long(), boxes.xyxy.float(),
                        boxes.score.float(), feats)
