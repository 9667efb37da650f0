r"""M3 (SL-FE): per predicted class, pool the feature map weighted by the class heatmap.

With ``A`` the feature map ``(C, n)`` (all spatial positions flattened, 2D or 3D), ``h`` the
class heatmap at the same resolution (``layer_heatmaps[0]``, min-max normalised) and ``T`` the
threshold, the weights are

- ``weighting="heat"`` (default): :math:`w_i = h_i \, [h_i > T]` (heat values inside the mask),
- ``weighting="mask"``: :math:`w_i = [h_i > T]` (the original binary mask),

and the feature of grid cell ``q`` of the layout is the weighted average

.. math:: f_{c,q} = \frac{\sum_i w_i P_{iq} A_{c,i}}{\sum_i w_i P_{iq}}

where ``P`` is the adaptive-average-pool matrix of the ``(p1, p2)`` grid (one column of ones for
``(512, 1, 1)``: the plain masked mean). Channels are then averaged in groups down to ``p0``.
A cell with no weight is zero; a class whose whole mask is empty gets a zero vector and
``empty=True`` (the original crashed). All frames and classes come from one batched matmul.

The original (``heatmap_extract_feature.py`` + ``utils/bbox_library.py:
heatmap_extract_feature``) computed the class heatmap at layer4 resolution and selected
``feature_map[heat > T]``: the binary mask, not heat weights. It did not pool per grid cell: it
averaged the masked values of each group of ``C / p0`` consecutive channels (one
``adaptive_avg_pool1d`` over the masked values laid out channel by channel) and then
adaptive-pooled that ``(p0, 1, 1)`` to ``(p0, p1, p2)``, which copies each group mean into every
cell; so its ``128x2x2`` / ``32x4x4`` rows hold 128 / 32 distinct numbers, each repeated 4 / 16
times, in ``(p0, p1, p2)`` order. Its layer4 map came from a ``copy.deepcopy`` left in train
mode (per-frame BatchNorm statistics). ``recipe="paper"`` reproduces all three
(``m3="broadcast"``, ``m3_weighting="mask"``, ``bn="frame"``).
"""

from __future__ import annotations

import torch

from gcfeat import config

from .base import Extractor, Features
from .pooling import Layout, channel_group_mean, layout_dim, pooling_matrix
from .recipe import FrameStatsMaps, Recipe, get_recipe

WEIGHTINGS = ("heat", "mask")


def heatmap_weights(heat: torch.Tensor, threshold: float, weighting: str = "heat") -> torch.Tensor:
    """Pooling weights from heatmaps ``(..., *s)``: see the module docstring."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting: got {weighting!r}, expected one of {WEIGHTINGS}")
    mask = heat > threshold
    return mask.to(heat.dtype) if weighting == "mask" else heat * mask


def heatmap_features(
    feature_map: torch.Tensor,
    heat: torch.Tensor,
    frame: torch.Tensor,
    label: torch.Tensor,
    threshold: float = config.BOX_THRESHOLD,
    weighting: str = "heat",
    layout: Layout = (512, 1, 1),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmap-weighted features of (frame, class) pairs.

    Args:
        feature_map: ``(B, C, *s)`` (layer4 activations).
        heat: ``(B, K, *s)`` class heatmaps at feature resolution, in ``[0, 1]``.
        frame: ``(R,)`` batch row; ``label``: ``(R,)`` index along ``heat``'s K axis.
        threshold: ``T``; weighting: ``"heat"`` or ``"mask"``.
        layout: pooling layout (``None``: raw channels).

    Returns:
        ``features (R, D)`` float32 and ``empty (R,)`` bool.
    """
    if heat.shape[0] != feature_map.shape[0] or heat.shape[2:] != feature_map.shape[2:]:
        raise ValueError(
            f"heatmap_features: heat {tuple(heat.shape)} must be (B, K, *s) at the "
            f"feature map's batch and spatial size {tuple(feature_map.shape)}"
        )
    B, C = feature_map.shape[:2]
    spatial = feature_map.shape[2:]
    grid = (1, 1) if layout is None else (layout[1], layout[2])
    w = heatmap_weights(heat.float(), threshold, weighting)[frame, label].flatten(1)  # (R, n)
    P = pooling_matrix(spatial, grid, device=feature_map.device)  # (n, q)
    wq = w[:, None, :] * P.t()[None]  # (R, q, n)
    A = feature_map.float().flatten(2)  # (B, C, n)
    # rows grouped per frame into a padded (B, Rmax * q, n) block: one bmm against (B, n, C),
    # no copy of A per row and no per-class loop
    q = wq.shape[1]
    num = torch.zeros(w.shape[0], q, C, device=A.device)
    if w.shape[0]:
        order = torch.argsort(frame, stable=True)
        counts = torch.bincount(frame, minlength=B)
        slot = torch.arange(w.shape[0], device=w.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts
        )  # rank within its frame
        padded = wq.new_zeros(B, int(counts.max()), q, w.shape[1])
        padded[frame[order], slot] = wq[order]
        # float32 even under autocast: the pooled sums are features, and index_put needs one dtype
        with torch.autocast(device_type=A.device.type, enabled=False):
            res = torch.bmm(padded.flatten(1, 2), A.transpose(1, 2))  # (B, Rmax * q, C)
        num[order] = res.reshape(B, -1, q, C)[frame[order], slot]
    den = wq.sum(-1)  # (R, q)
    feats = torch.where(
        den[..., None] > 0, num / den.clamp_min(1e-12)[..., None], torch.zeros((), device=A.device)
    )  # (R, q, C)
    feats = feats.transpose(1, 2)  # (R, C, q)
    if layout is None:
        out = feats.flatten(1)
    else:
        out = channel_group_mean(feats, layout[0]).flatten(1)
    empty = w.sum(-1) <= 0
    return out, empty


def union_boxes(xyxy: torch.Tensor, key: torch.Tensor, num_keys: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Union box per key: ``(num_keys, 4)`` (3D boxes: ``(num_keys, 6)``) and ``found
    (num_keys,)``; zeros where none."""
    big = torch.finfo(torch.float32).max
    d = xyxy.shape[1] // 2
    lo = torch.full((num_keys, d), big, device=xyxy.device)
    hi = torch.full((num_keys, d), -big, device=xyxy.device)
    if xyxy.shape[0]:
        k2 = key[:, None].expand(-1, d)
        lo = lo.scatter_reduce(0, k2, xyxy[:, :d].float(), "amin")
        hi = hi.scatter_reduce(0, k2, xyxy[:, d:].float(), "amax")
    found = torch.zeros(num_keys, dtype=torch.bool, device=xyxy.device)
    found[key] = True
    out = torch.cat([lo, hi], 1)
    return torch.where(found[:, None], out, torch.zeros((), device=xyxy.device)), found


SELECTIONS = ("threshold", "top1")


def selected_classes(
    probs: torch.Tensor,
    classes: torch.Tensor,
    selection: str = "threshold",
    pred_threshold: float = config.PRED_THRESHOLD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (frame, heat channel) pairs that get a heatmap row: ``(R,)`` each, sorted by frame.

    ``selection="threshold"`` (multi-label): every class with ``probs > pred_threshold``;
    ``"top1"`` (single-label, softmax): each frame's highest-scoring class among ``classes``.
    """
    p = probs[:, classes]  # (B, K')
    if selection == "threshold":
        frames, channels = (p > pred_threshold).nonzero(as_tuple=True)
        return frames, channels
    if selection == "top1":
        return torch.arange(p.shape[0], device=p.device), p.argmax(1)
    raise ValueError(f"selection: got {selection!r}, expected one of {SELECTIONS}")


class HeatmapExtractor(Extractor):
    """M3: one row per selected class (multi-label: sigmoid score > ``pred_threshold``;
    ``selection="top1"``: each frame's predicted class).

    The row's box is the union of that class's boxes (the heat's box at frame resolution; all
    zeros if the class has none) and its score the class's score. ``level`` names the map the
    heatmaps live on (the CAM target: layer4 for ResNets).

    ``recipe`` (:mod:`gcfeat.extract.recipe`): ``m3="broadcast"`` copies each channel group's
    masked mean into every cell of the layout's grid (the original's rows), ``m3_weighting``
    overrides ``weighting``, ``bn="frame"`` pools the map of ``frame_maps`` (built from
    ``model`` when not given); the heatmaps still come from the CAM pass (eval mode).
    """

    name = "m3"

    def __init__(
        self,
        threshold: float = config.BOX_THRESHOLD,
        weighting: str = "heat",
        pred_threshold: float = config.PRED_THRESHOLD,
        layout: Layout = (512, 1, 1),
        level: str = "layer4",
        selection: str = "threshold",
        *,
        recipe: Recipe | str | None = None,
        model=None,
        frame_maps: FrameStatsMaps | None = None,
    ) -> None:
        self.recipe = get_recipe(recipe)
        weighting = self.recipe.m3_weighting or weighting
        if self.recipe.bn == "frame" and frame_maps is None:
            if model is None:
                raise ValueError(
                    f"HeatmapExtractor: recipe {self.recipe.name!r} reads "
                    f"per-frame BatchNorm maps; pass model= (or frame_maps=)"
                )
            frame_maps = FrameStatsMaps(model, (level,))
        self.frame_maps = frame_maps if self.recipe.bn == "frame" else None
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting: got {weighting!r}, expected one of {WEIGHTINGS}")
        if selection not in SELECTIONS:
            raise ValueError(f"selection: got {selection!r}, expected one of {SELECTIONS}")
        self.threshold = float(threshold)
        self.weighting = weighting
        self.pred_threshold = float(pred_threshold)
        self.layout = layout
        self.level = level
        self.selection = selection

    def output_dim(self, channels: dict) -> int:
        return layout_dim(self.layout, channels[self.level])

    def settings(self) -> dict:
        out = {
            "threshold": self.threshold,
            "weighting": self.weighting,
            "pred_threshold": self.pred_threshold,
            "layout": self.layout,
        }
        if self.selection != "threshold" or self.level != "layer4":
            out.update(selection=self.selection, level=self.level)
        if not self.recipe.is_default:
            out["recipe"] = self.recipe.name
        return out

    def __call__(self, images, result, boxes, probs: torch.Tensor | None = None) -> Features:
        classes = result.classes.to(result.logits.device).long()  # (K',) heat axis -> class
        if probs is None:
            probs = torch.sigmoid(result.logits.float())
        frame, k = selected_classes(probs, classes, self.selection, self.pred_threshold)
        heat = result.layer_heatmaps[0]
        fmap = self.frame_maps(images)[self.level] if self.frame_maps is not None else result.activations[0]
        if self.recipe.m3 == "broadcast" and self.layout is not None:
            p0, p1, p2 = self.layout
            feats, empty = heatmap_features(fmap, heat, frame, k, self.threshold, self.weighting, (p0, 1, 1))
            feats = feats.repeat_interleave(p1 * p2, dim=1)  # (R, p0 * p1 * p2)
        else:
            feats, empty = heatmap_features(fmap, heat, frame, k, self.threshold, self.weighting, self.layout)
        label = classes[k]
        num_out = probs.shape[1]
        B = probs.shape[0]
        box, _ = union_boxes(boxes.xyxy, boxes.frame.long() * num_out + boxes.label.long(), B * num_out)
        return Features(frame, label, box[frame * num_out + label], probs[frame, label].float(), feats, empty)
