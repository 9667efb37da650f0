"""M2 (L-FE): ROI align of each box on the backbone map chosen by the box's size.

The original routes a box by its area in 320x256 pixels: ``< 5120`` -> layer2 (stride 8),
``< 20480`` -> layer3 (stride 16), else layer4 (stride 32). Here the thresholds scale with the
frame's extent (``prod(frame_size) / (256 * 320)``: for volumes the box volume against the
volume's, i.e. the same 1/16 and 1/4 fractions) and are options; ``single_layer=`` forces one
map, and models with fewer levels (a small CNN: its last conv only) use the first thresholds.
Each box is ROI-aligned (``aligned=True``) straight to the layout's ``(p1, p2)`` grid, which
equals an adaptive average pool of the box's cells when the box lies on the feature grid; the
channels are then averaged in groups to ``p0`` (layer2 has 512 channels, layer3 1024, layer4
2048 for ResNet50). 2D maps use ``torchvision.ops.roi_align`` (adaptive sampling); volumes use
:func:`roi_align_nd` (the same sampling rule with a fixed number of samples per bin and axis),
pooled to ``(1, p1, p2)`` (depth averaged, as :func:`~gcfeat.extract.pooling.pool_to_layout`).
All maps come from the one CAM forward.

The original (``bbox_extract_feature.py`` + ``utils/bbox_library.py: scale_bbox,
extract_feature``) did otherwise, and :func:`slice_features` (``recipe="paper"``) does as it did:
it mapped the box to cells with Python ``round`` (half to even) of ``x * w / W`` (widened to one
cell when empty), sliced the map with those integers and adaptive-average-pooled the slice; it
flattened the pooled ``(p1, p2, C)`` grid spatial-first before averaging channel groups (``(p1,
p2, p0)`` order); and its maps came from three extra backbone runs of ``copy.deepcopy`` copies
left in train mode, so BatchNorm normalised with each frame's own statistics (see
:class:`~gcfeat.extract.recipe.FrameStatsMaps`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from .base import Extractor, Features
from .pooling import Layout, LayoutError, channel_group_mean, layout_dim
from .recipe import FrameStatsMaps, Recipe, get_recipe, spatial_first

LEVELS: tuple[str, str, str] = ("layer2", "layer3", "layer4")
#: The original's area thresholds, in pixels of a 256x320 (HxW) frame.
AREA_THRESHOLDS: tuple[float, float] = (5120.0, 20480.0)
REFERENCE_AREA: float = 256.0 * 320.0


def box_bounds(xyxy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(start, end)`` of boxes per spatial dim in tensor order, each ``(M, D)``.

    2D boxes are ``x1, y1, x2, y2`` -> ``start = (y1, x1)``; 3D boxes are already in tensor
    order ``z1, y1, x1, z2, y2, x2`` (see :class:`gcfeat.boxes.Boxes`).
    """
    if xyxy.shape[-1] == 4:
        return xyxy[:, [1, 0]], xyxy[:, [3, 2]]
    if xyxy.shape[-1] == 6:
        return xyxy[:, :3], xyxy[:, 3:]
    raise ValueError(f"boxes: expected (M, 4) or (M, 6), got {tuple(xyxy.shape)}")


#: The strides of the original's layer2 / layer3 / layer4 (the area rule's targets).
RULE_STRIDES: tuple[float, float, float] = (8.0, 16.0, 32.0)


def box_levels(
    xyxy: torch.Tensor,
    frame_size: Sequence[int],
    area_thresholds: Sequence[float] = AREA_THRESHOLDS,
    num_levels: int = 3,
    strides: Sequence[float] | None = None,
) -> torch.Tensor:
    """Level of each box among ``num_levels`` maps (0: layer2, 1: layer3, 2: layer4); ``(M,)``.

    ``extent < t0 * s`` -> 0, ``< t1 * s`` -> 1, else 2, with the extent the box's area (3D:
    volume) and ``s = prod(frame_size) / (256 * 320)``. With fewer levels only the first
    ``num_levels - 1`` thresholds are used (one level: every box on it).

    ``strides`` (one per level, increasing): the rule as strides: the box's target stride is
    8 / 16 / 32 by the same thresholds, and it goes to the level whose stride is nearest in
    log2 (ties to the finer). ResNets' (8, 16, 32) give the rule above; a ViT's (16,) one map;
    ConvNeXt at (4, 8, 16, 32) never uses stride 4.
    """
    start, end = box_bounds(xyxy)
    extent = (end - start).float().prod(1)
    scale = math.prod(float(s) for s in frame_size) / REFERENCE_AREA
    if strides is not None:
        if len(strides) != num_levels:
            raise ValueError(f"box_levels: {len(strides)} strides for {num_levels} levels")
        bounds = torch.tensor([float(t) * scale for t in area_thresholds][:2], device=xyxy.device)
        want = torch.tensor(RULE_STRIDES, device=xyxy.device)[
            torch.bucketize(extent, bounds, right=True)
        ].log2()
        have = torch.tensor([float(s) for s in strides], device=xyxy.device).log2()
        return (want[:, None] - have[None]).abs().argmin(1)
    bounds = torch.tensor(
        [float(t) * scale for t in area_thresholds][: max(num_levels - 1, 0)], device=xyxy.device
    )
    return torch.bucketize(extent, bounds, right=True)


def roi_align_nd(
    feature_map: torch.Tensor,
    frame: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
    output_size: Sequence[int],
    sampling_ratio: int = 2,
    chunk: int = 256,
) -> torch.Tensor:
    """ROI align in any number of spatial dims (``aligned=True``, fixed sampling).

    Bin ``p`` of a box ``[a, b)`` (in map pixels) along an axis with ``P`` bins averages the
    ``n`` samples at ``a - 0.5 + (p * n + i + 0.5) * (b - a) / (P * n)``, ``i < n =
    sampling_ratio``, each (bi/tri)linearly interpolated between pixel centres (the rule of
    ``torchvision.ops.roi_align(..., aligned=True, sampling_ratio=n)``, which equals this in
    2D; samples outside the map take the border value, where torchvision gives 0 beyond one pixel
    out: boxes inside the frame never sample there). With ``sampling_ratio=1`` and ``P`` the
    crop size this is a bilinear / trilinear resize of the box (``align_corners=False``).

    Args:
        feature_map: ``(B, C, *s)`` with 2 or 3 spatial dims.
        frame: ``(M,)`` batch row of each box.
        start, end: ``(M, D)`` box bounds per spatial dim in tensor order, in map pixels
            (exclusive end); see :func:`box_bounds`.
        output_size: ``(P_1, ..., P_D)`` bins per dim.
        sampling_ratio: samples per bin and axis.
        chunk: boxes per ``grid_sample`` call (each gathers its frame's map).

    Returns:
        ``(M, C, *output_size)`` in the map's dtype.
    """
    D = feature_map.dim() - 2
    if D not in (2, 3) or start.shape[-1] != D or len(output_size) != D:
        raise ValueError(
            f"roi_align_nd: map {tuple(feature_map.shape)}, boxes with "
            f"{start.shape[-1]} dims and output_size {tuple(output_size)} must "
            f"agree on 2 or 3 spatial dims"
        )
    n = int(sampling_ratio)
    if n < 1:
        raise ValueError(f"roi_align_nd: sampling_ratio must be >= 1, got {sampling_ratio}")
    M, C = start.shape[0], feature_map.shape[1]
    sizes = feature_map.shape[2:]
    dev, dt = feature_map.device, feature_map.dtype
    out = feature_map.new_zeros(M, C, *output_size)
    if M == 0:
        return out
    axes = []  # normalised sample coordinates per dim, (M, P * n) each
    for d in range(D):
        k = output_size[d] * n
        t = (torch.arange(k, device=dev, dtype=torch.float32) + 0.5) / k
        a, b = start[:, d].float().to(dev), end[:, d].float().to(dev)
        pix = a[:, None] - 0.5 + t[None] * (b - a)[:, None]
        axes.append((2 * pix + 1) / sizes[d] - 1)  # grid_sample, align_corners=False
    shape = [M] + [output_size[d] * n for d in range(D)]
    grid = torch.stack(
        [
            axes[d].reshape([M] + [-1 if e == d else 1 for e in range(D)]).expand(shape)
            for d in reversed(range(D))
        ],
        -1,
    )  # (M, *k, D): x first
    frame = frame.to(dev).long()
    for lo in range(0, M, chunk):
        hi = min(lo + chunk, M)
        s = F.grid_sample(
            feature_map[frame[lo:hi]],
            grid[lo:hi].to(dt),
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        )  # (m, C, *k)
        split = [hi - lo, C]
        for d in range(D):
            split += [output_size[d], n]
        out[lo:hi] = s.reshape(split).mean(dim=tuple(range(3, 3 + 2 * D, 2)))
    return out


def roi_features(
    feature_maps: dict[str, torch.Tensor],
    xyxy: torch.Tensor,
    frame: torch.Tensor,
    frame_size: Sequence[int],
    area_thresholds: Sequence[float] = AREA_THRESHOLDS,
    single_layer: str | None = None,
    layout: Layout = (512, 1, 1),
    sampling_ratio_3d: int = 2,
    strides: Sequence[float] | None = None,
) -> torch.Tensor:
    """M2 features of boxes.

    Args:
        feature_maps: the levels in order of increasing stride, e.g. ``{"layer2": (B, C2,
            h2, w2), "layer3": ..., "layer4": ...}`` (3D: ``(B, C, d, h, w)``; one level for a
            model with a single target map).
        xyxy: ``(M, 4)`` boxes ``x1, y1, x2, y2`` (3D: ``(M, 6)`` ``z1, y1, x1, z2, y2, x2``)
            in frame pixels (exclusive end); ``frame``: ``(M,)`` batch row.
        frame_size: ``(H, W)`` (3D: ``(D, H, W)``) of the frames the boxes live in.
        area_thresholds: level thresholds in 256x320-frame pixels (scaled to ``frame_size``).
        single_layer: use only this map (e.g. ``"layer4"``).
        layout: pooling layout; ``None`` (raw channels) needs one channel count, so mixed
            levels with different widths need ``single_layer``.
        sampling_ratio_3d: samples per bin and axis for volumes (:func:`roi_align_nd`).
        strides: the maps' strides, for routing by stride (see :func:`box_levels`).

    Returns:
        ``(M, D)`` float32.
    """
    if single_layer is not None:
        if single_layer not in feature_maps:
            raise ValueError(
                f"roi_features: single_layer={single_layer!r} not among the maps {sorted(feature_maps)}"
            )
        levels = torch.zeros(xyxy.shape[0], dtype=torch.long, device=xyxy.device)
        names = [single_layer]
    else:
        names = list(feature_maps)
        levels = box_levels(xyxy, frame_size, area_thresholds, len(names), strides)
    grid = (1, 1) if layout is None else (layout[1], layout[2])
    widths = {feature_maps[n].shape[1] for n in names}
    if layout is None and len(widths) > 1:
        raise LayoutError(
            f"roi_features: layout=None keeps raw channels but the levels have "
            f"{sorted(widths)} channels; pass single_layer= or a 512-d layout"
        )
    dim = layout_dim(layout, max(widths))
    out = torch.zeros(xyxy.shape[0], dim, device=xyxy.device, dtype=torch.float32)
    start, end = box_bounds(xyxy.float())
    for level, name in enumerate(names):
        rows = (levels == level).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        fmap = feature_maps[name]
        # per-axis scale (strides may differ by axis)
        scale = torch.tensor([m / f for m, f in zip(fmap.shape[2:], frame_size)], device=xyxy.device)
        if fmap.dim() == 4:
            a, b = start[rows] * scale, end[rows] * scale  # (r, 2) as (y, x)
            rois = torch.cat([frame[rows].float()[:, None], a[:, [1, 0]], b[:, [1, 0]]], 1)
            region = roi_align(
                fmap.float(), rois.to(fmap.device), grid, spatial_scale=1.0, sampling_ratio=-1, aligned=True
            )  # (r, C, p1, p2)
        else:
            region = roi_align_nd(
                fmap.float(),
                frame[rows],
                start[rows] * scale,
                end[rows] * scale,
                (1, *grid),
                sampling_ratio_3d,
            ).squeeze(2)  # (r, C, p1, p2)
        if layout is None:
            out[rows] = region.flatten(1)
        else:
            out[rows] = channel_group_mean(region, layout[0]).flatten(1)
    return out


def round_to_cells(
    lo: torch.Tensor, hi: torch.Tensor, size: int, extent: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The original's ``scale_bbox`` along one axis: frame pixels ``[lo, hi)`` of a frame of
    ``extent`` pixels -> integer cells of a map of ``size`` cells.

    ``round(lo * size / extent)`` (half to even, as Python's ``round``), same for ``hi``; an
    empty range grows by one cell (downwards at the map's end). Returns int64 ``(M,)`` each.
    """
    a = torch.round(lo.double() * size / extent).long()
    b = torch.round(hi.double() * size / extent).long()
    empty = b == a
    at_end = b == size
    b = torch.where(empty & ~at_end, a + 1, b)
    a = torch.where(empty & at_end, a - 1, a)
    return a, b


def _adaptive_rows(start: torch.Tensor, stop: torch.Tensor, bins: int, size: int) -> torch.Tensor:
    """Adaptive-average-pool weights of slices ``[start, stop)`` along an axis of ``size``
    cells into ``bins`` bins: ``(M, bins, size)``, bin ``i`` averaging cells ``start +
    floor(i L / bins)`` to ``start + ceil((i + 1) L / bins)`` (``L = stop - start``), the rule
    of ``F.adaptive_avg_pool2d`` on the slice."""
    L = (stop - start)[:, None]  # (M, 1)
    i = torch.arange(bins, device=start.device)[None]  # (1, bins)
    lo = start[:, None] + torch.div(i * L, bins, rounding_mode="floor")
    hi = start[:, None] - torch.div(-(i + 1) * L, bins, rounding_mode="floor")
    pos = torch.arange(size, device=start.device)[None, None]  # (1, 1, size)
    w = ((pos >= lo[..., None]) & (pos < hi[..., None])).float()
    return w / w.sum(-1, keepdim=True).clamp_min(1)


def slice_features(
    feature_maps: dict[str, torch.Tensor],
    xyxy: torch.Tensor,
    frame: torch.Tensor,
    frame_size: Sequence[int],
    area_thresholds: Sequence[float] = AREA_THRESHOLDS,
    single_layer: str | None = None,
    layout: Layout = (512, 1, 1),
) -> torch.Tensor:
    """M2 features by the original's rule: round the box to cells, slice, adaptive pool.

    For a box ``x1, y1, x2, y2`` routed to a map of ``h x w`` cells (same routing as
    :func:`roi_features`), the cells are :func:`round_to_cells` of each axis; the slice
    ``map[:, y1':y2', x1':x2']`` is adaptive-average-pooled to ``(p1, p2)``, channels averaged
    in groups to ``p0``, flattened ``(p0, p1, p2)`` (reorder with
    :func:`~gcfeat.extract.recipe.spatial_first` for the original's order). Batched: the pool
    of every box is two small weight matrices, ``f = Wy A Wx^T``. 2D maps only.

    Args and returns as :func:`roi_features` (``(M, D)`` float32).
    """
    if xyxy.shape[-1] != 4:
        raise ValueError(f"slice_features: 2D boxes (M, 4) only, got {tuple(xyxy.shape)}")
    if single_layer is not None:
        if single_layer not in feature_maps:
            raise ValueError(
                f"slice_features: single_layer={single_layer!r} not among the maps {sorted(feature_maps)}"
            )
        names = [single_layer]
        levels = torch.zeros(xyxy.shape[0], dtype=torch.long, device=xyxy.device)
    else:
        names = list(feature_maps)
        levels = box_levels(xyxy, frame_size, area_thresholds, len(names))
    p1, p2 = (1, 1) if layout is None else (layout[1], layout[2])
    widths = {feature_maps[n].shape[1] for n in names}
    if layout is None and len(widths) > 1:
        raise LayoutError(
            f"slice_features: layout=None keeps raw channels but the levels have "
            f"{sorted(widths)} channels; pass single_layer= or a 512-d layout"
        )
    out = torch.zeros(xyxy.shape[0], layout_dim(layout, max(widths)), device=xyxy.device)
    H, W = frame_size
    for level, name in enumerate(names):
        rows = (levels == level).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        fmap = feature_maps[name].float()
        h, w = fmap.shape[2:]
        b = xyxy[rows].to(fmap.device)
        x1, x2 = round_to_cells(b[:, 0], b[:, 2], w, W)
        y1, y2 = round_to_cells(b[:, 1], b[:, 3], h, H)
        wy = _adaptive_rows(y1, y2, p1, h)  # (r, p1, h)
        wx = _adaptive_rows(x1, x2, p2, w)  # (r, p2, w)
        f = frame[rows].to(fmap.device).long()
        region = torch.einsum("rih,rchw,rjw->rcij", wy, fmap[f], wx)  # (r, C, p1, p2)
        feats = region.flatten(1) if layout is None else channel_group_mean(region, layout[0]).flatten(1)
        out[rows] = feats.to(out.device)
    return out


class RoiExtractor(Extractor):
    """M2: one row per box; ROI-aligned features from the CAM pass's maps.

    ``levels`` names the maps in order of increasing stride: the CAM pass records
    ``result.extra`` for all but the last and ``result.activations[0]`` (the CAM target) for
    the last (ResNets: layer2, layer3 | layer4; a small CNN: its last conv only).

    ``recipe`` (:mod:`gcfeat.extract.recipe`): ``m2_pool="slice"`` uses :func:`slice_features`,
    ``flatten="spatial_first"`` reorders to ``(p1, p2, p0)``, ``bn="frame"`` reads the maps of
    ``frame_maps`` (a :class:`~gcfeat.extract.recipe.FrameStatsMaps`; built from ``model`` when
    not given) instead of the CAM pass's.
    """

    name = "m2"

    def __init__(
        self,
        area_thresholds: Sequence[float] = AREA_THRESHOLDS,
        single_layer: str | None = None,
        layout: Layout = (512, 1, 1),
        levels: Sequence[str] = LEVELS,
        strides: Sequence[float] | None = None,
        *,
        recipe: Recipe | str | None = None,
        model=None,
        frame_maps: FrameStatsMaps | None = None,
    ) -> None:
        self.recipe = get_recipe(recipe)
        if self.recipe.bn == "frame" and frame_maps is None:
            if model is None:
                raise ValueError(
                    f"RoiExtractor: recipe {self.recipe.name!r} reads per-frame "
                    f"BatchNorm maps; pass model= (or frame_maps=)"
                )
            frame_maps = FrameStatsMaps(model, levels)
        self.frame_maps = frame_maps if self.recipe.bn == "frame" else None
        self.area_thresholds = tuple(float(t) for t in area_thresholds)
        self.levels = tuple(levels)
        self.strides = None if strides is None else tuple(float(s) for s in strides)
        if single_layer is not None and single_layer not in self.levels:
            raise ValueError(f"single_layer={single_layer!r}: expected one of {self.levels}")
        self.single_layer = single_layer
        self.layout = layout

    def output_dim(self, channels: dict) -> int:
        names = [self.single_layer] if self.single_layer else list(self.levels)
        return layout_dim(self.layout, max(channels[n] for n in names))

    def settings(self) -> dict:
        out: dict[str, object] = {
            "area_thresholds": list(self.area_thresholds),
            "single_layer": self.single_layer or "",
            "layout": self.layout,
        }
        if self.levels != LEVELS:  # files of ResNet runs keep their original settings
            out["levels"] = list(self.levels)
        if not self.recipe.is_default:
            out["recipe"] = self.recipe.name
        if self.strides is not None and self.strides != RULE_STRIDES:
            out["strides"] = list(self.strides)
        return out

    def feature_maps(self, result) -> dict[str, torch.Tensor]:
        """``{level: map}`` of a CAMResult run with ``extra_layers`` = all levels but the last
        and the last level as the target."""
        maps = [*result.extra[: len(self.levels) - 1], result.activations[0]]
        return dict(zip(self.levels, maps))

    def __call__(self, images, result, boxes, probs=None) -> Features:
        maps = self.frame_maps(images) if self.frame_maps is not None else self.feature_maps(result)
        pool = slice_features if self.recipe.m2_pool == "slice" else roi_features
        kw = {} if self.recipe.m2_pool == "slice" else {"strides": self.strides}
        feats = pool(
            maps,
            boxes.xyxy,
            boxes.frame,
            tuple(images.shape[2:]),
            self.area_thresholds,
            self.single_layer,
            self.layout,
            **kw,
        )
        if self.recipe.flatten == "spatial_first":
            feats = spatial_first(feats, self.layout)
        return Features(
            boxes.frame.long(), boxes.label.long(), boxes.xyxy.float(), boxes.score.float(), feats
        )
