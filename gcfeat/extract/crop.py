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

from gcfeat.models.levels import token_reshape

from .base import Extractor, Features, feature_levels, layer_channels
from .pooling import Layout, layout_dim, pool_to_layout
from .roi import box_bounds, roi_align_nd


def crop_boxes(images: torch.Tensor, xyxy: torch.Tensor, frame: torch.Tensor,
               out_size: Tuple[int, ...] = (224, 224)) -> torch.Tensor:
    """Bilinear (3D: trilinear) crops of boxes from an image batch.

    Args:
        images: ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
        xyxy: ``(M, 4)`` boxes ``x1, y1, x2, y2`` (3D: ``(M, 6)`` ``z1, y1, x1, z2, y2, x2``),
            exclusive end, in pixels.
        frame: ``(M,)`` image row of each box.
        out_size: ``(h, w)`` (3D: ``(d, h, w)``) of every crop.

    Returns:
        ``(M, C, *out_size)`` on the images' device.
    """
    if images.dim() == 5:
        start, end = box_bounds(xyxy.to(images.device))
        return roi_align_nd(images, frame, start, end, tuple(out_size), sampling_ratio=1)
    rois = torch.cat([frame.to(images.dtype)[:, None], xyxy.to(images.dtype)], 1)
    return roi_align(images, rois, tuple(out_size), spatial_scale=1.0, sampling_ratio=1,
                     aligned=True)


def backbone_to(model: nn.Module, x: torch.Tensor, layer: str = "layer4") -> torch.Tensor:
    """Run a (2D or 3D) ResNet's children ``conv1 .. layer`` on ``x``; ``(B, C, *s)``."""
    for name, module in model.named_children():
        x = module(x)
        if name == layer:
            return x
    raise ValueError(f"backbone_to: the model has no child {layer!r}; "
                     f"children are {[n for n, _ in model.named_children()]}")


class _Stop(Exception):
    pass


def forward_to(model: nn.Module, x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """The output of ``module`` (a submodule of ``model``) for input ``x``; the forward stops
    there (a hook raises), so the layers after it and the head never run."""
    out = []

    def hook(_m, _inp, output):
        out.append(output)
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not out:
        raise ValueError(f"forward_to: {type(module).__name__} did not run in the model's "
                         f"forward; is it a submodule of the model?")
    return out[0]


@torch.no_grad()
def crop_features(model: nn.Module, images: torch.Tensor, xyxy: torch.Tensor,
                  frame: torch.Tensor, out_size: Tuple[int, ...] = (224, 224),
                  layout: Layout = (512, 1, 1), batch_size: int = 64,
                  layer: "str | nn.Module" = "layer4", reshape=None) -> torch.Tensor:
    """M1 features: crop, resize to ``out_size``, forward to ``layer``, pool.

    Args:
        model: the classifier in eval mode (a torchvision ResNet, a 3D ResNet, a small CNN).
        images: ``(B, C, *spatial)`` normalised frames or volumes.
        xyxy: ``(M, 4)`` / ``(M, 6)`` boxes in frame pixels; ``frame``: ``(M,)`` row in
            ``images``.
        layout: pooling layout (see :mod:`gcfeat.extract.pooling`).
        batch_size: crops per backbone forward (memory knob; results do not depend on it).
        layer: the map to pool: a child name of a ResNet (its children run in order, up to
            it) or any submodule (the forward is stopped after it).
        reshape: turns the layer's output into ``(M, C, *grid)`` (token models, see
            :func:`gcfeat.models.levels.token_reshape`); None: it already is.

    Returns:
        ``(M, D)`` float32.
    """
    feats = []
    for start in range(0, xyxy.shape[0], batch_size):
        crops = crop_boxes(images, xyxy[start:start + batch_size],
                           frame[start:start + batch_size], out_size)
        if images.is_contiguous(memory_format=torch.channels_last):
            crops = crops.contiguous(memory_format=torch.channels_last)
        fmap = backbone_to(model, crops, layer) if isinstance(layer, str) \
            else forward_to(model, crops, layer)
        if reshape is not None:
            fmap = reshape(fmap)
        feats.append(pool_to_layout(fmap.float(), layout))
    if not feats:
        return images.new_zeros(0, 0, dtype=torch.float32)
    return torch.cat(feats)


class CropExtractor(Extractor):
    """M1: one row per box; features of the box's crop re-run through the backbone.

    ``level`` is the map pooled (default: the model's last feature level, layer4 for ResNets,
    see :func:`~gcfeat.extract.base.feature_levels`); ``out_size`` is 2D ``(h, w)`` or, for
    volumes, ``(d, h, w)``.
    """

    name = "m1"

    def __init__(self, model: nn.Module, out_size: Tuple[int, ...] = (224, 224),
                 layout: Layout = (512, 1, 1), batch_size: int = 64,
                 level: Optional[str] = None) -> None:
        self.model = model
        self.out_size = tuple(int(s) for s in out_size)
        self.layout = layout
        self.batch_size = int(batch_size)
        self.level = level or list(feature_levels(model))[-1]
        try:
            self._module = model.get_submodule(self.level)
        except AttributeError:
            raise ValueError(f"CropExtractor: level {self.level!r} is not a submodule of "
                             f"{type(model).__name__}") from None
        self._reshape = token_reshape(model, self._module)

    def output_dim(self, channels: Optional[dict] = None) -> int:
        channels = channels or layer_channels(self.model, {self.level: self._module})
        return layout_dim(self.layout, channels[self.level])

    def settings(self) -> dict:
        return {"out_size": list(self.out_size), "layout": self.layout, "layer": self.level}

    def __call__(self, images, result, boxes, probs=None) -> Features:
        if len(self.out_size) != images.dim() - 2:
            raise ValueError(f"m1: crop size {self.out_size} has {len(self.out_size)} dims, "
                             f"the inputs {images.dim() - 2}; pass a crop size per spatial dim")
        feats = crop_features(self.model, images, boxes.xyxy, boxes.frame, self.out_size,
                              self.layout, self.batch_size, self._module, self._reshape)
        if feats.shape[0] == 0:
            feats = feats.new_zeros(0, self.output_dim())
        return Features(boxes.frame.long(), boxes.label.long(), boxes.xyxy.float(),
                        boxes.score.float(), feats)
