"""M1 (LN-FE): crop each box from the normalised frame, resize, re-run the backbone, pool.

The crop is ``torchvision.ops.roi_align`` on the image batch with ``aligned=True`` and one
sample per output pixel (``sampling_ratio=1``). For a box ``[x1, x2)`` the output pixel ``i``
samples the source at ``x1 + (i + 0.5) * (x2 - x1) / out_w - 0.5``: the half-pixel mapping of
``cv2.resize(crop, (out_w, out_h), interpolation=cv2.INTER_LINEAR)`` (and of
``F.interpolate(..., mode="bilinear", align_corners=False)``), without anti-aliasing; samples
that fall within half a source pixel outside the box interpolate with the frame's pixels just
outside it. The crops come from the normalised frame, so the backbone sees the input
distribution it was trained on. All crops of a batch go through the backbone together, in
chunks of ``batch_size``.

The original did otherwise (``utils/crop_bbox.py`` + ``bbox_library.crop_multibbox`` +
``image_extract_feature.py``): it cropped the *un-normalised* frame after a min-max stretch of
the whole frame to uint8 (``255 * (f - min) / (max - min)``, truncated), wrote each crop as a
PNG, read it back with PIL and resized it to 224x224 with ``transforms.Resize`` (PIL bilinear,
which anti-aliases when shrinking), and fed it through the backbone *without* normalisation (its
``Normalize`` line is commented out); the pooled ``(p1, p2, C)`` grid was flattened spatial
first (``(p1, p2, p0)``). :func:`stretched_crops` and ``recipe="paper"`` reproduce that.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.ops import roi_align

from gcfeat.models.levels import token_reshape

from .base import Extractor, Features, feature_levels, layer_channels
from .pooling import Layout, layout_dim, pool_to_layout
from .recipe import Recipe, get_recipe, spatial_first
from .roi import box_bounds, roi_align_nd


def crop_boxes(
    images: torch.Tensor, xyxy: torch.Tensor, frame: torch.Tensor, out_size: tuple[int, ...] = (224, 224)
) -> torch.Tensor:
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
    return roi_align(images, rois, tuple(out_size), spatial_scale=1.0, sampling_ratio=1, aligned=True)


def stretched_crops(
    images: torch.Tensor,
    xyxy: torch.Tensor,
    frame: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    out_size: tuple[int, int] = (224, 224),
) -> torch.Tensor:
    """The original's M1 crops: stretched uint8 frame, integer crop, PIL bilinear resize.

    Per frame: undo the normalisation and recover the 8-bit values ``k`` (the frames are
    ``k / 255`` before normalising), ``v = k / 255``; stretch ``s = uint8(255 * (v - min(v)) /
    (max(v) - min(v)))`` (min / max over the whole frame, all channels; float32 and truncation,
    as numpy did); crop ``s[y1:y2, x1:x2]``; ``PIL.Image.resize(out_size, BILINEAR)`` (the
    original's ``transforms.Resize`` on the PNG it wrote); ``/ 255``; no normalisation.

    Args:
        images: ``(B, 3, H, W)`` frames normalised with ``mean`` / ``std``.
        xyxy: ``(M, 4)`` integer boxes ``x1, y1, x2, y2`` (exclusive end); ``frame``: ``(M,)``.
        out_size: ``(h, w)``.

    Returns:
        ``(M, 3, h, w)`` float32 in ``[0, 1]`` on the images' device. The resize runs in PIL on
        the CPU, one crop at a time (crops differ in size).
    """
    m = torch.as_tensor(mean, dtype=torch.float32, device=images.device)[:, None, None]
    s = torch.as_tensor(std, dtype=torch.float32, device=images.device)[:, None, None]
    k = torch.round((images.float() * s + m) * 255).clamp(0, 255)
    v = k / 255  # ToTensor's values
    lo = v.amin(dim=(1, 2, 3), keepdim=True)
    hi = v.amax(dim=(1, 2, 3), keepdim=True)
    stretched = (255 * ((v - lo) / (hi - lo))).to(torch.uint8)  # truncates, as astype
    frames = stretched.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
    boxes = xyxy.long().cpu().tolist()
    rows = frame.long().cpu().tolist()
    out = np.empty((len(boxes), out_size[0], out_size[1], 3), np.uint8)
    for i, ((x1, y1, x2, y2), f) in enumerate(zip(boxes, rows)):
        crop = np.ascontiguousarray(frames[f, y1:y2, x1:x2])
        out[i] = np.asarray(
            Image.fromarray(crop).resize((out_size[1], out_size[0]), Image.Resampling.BILINEAR)
        )
    crops = torch.from_numpy(out).to(images.device).permute(0, 3, 1, 2)
    return crops.float() / 255


def backbone_to(model: nn.Module, x: torch.Tensor, layer: str = "layer4") -> torch.Tensor:
    """Run a (2D or 3D) ResNet's children ``conv1 .. layer`` on ``x``; ``(B, C, *s)``."""
    for name, module in model.named_children():
        x = module(x)
        if name == layer:
            return x
    raise ValueError(
        f"backbone_to: the model has no child {layer!r}; "
        f"children are {[n for n, _ in model.named_children()]}"
    )


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
        raise ValueError(
            f"forward_to: {type(module).__name__} did not run in the model's "
            f"forward; is it a submodule of the model?"
        )
    return out[0]


@torch.no_grad()
def crop_features(
    model: nn.Module,
    images: torch.Tensor,
    xyxy: torch.Tensor,
    frame: torch.Tensor,
    out_size: tuple[int, ...] = (224, 224),
    layout: Layout = (512, 1, 1),
    batch_size: int = 64,
    layer: str | nn.Module = "layer4",
    reshape=None,
    *,
    recipe: Recipe | str | None = None,
) -> torch.Tensor:
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
        recipe: ``crop="stretch_pil"`` crops with :func:`stretched_crops` (needs the recipe's
            ``mean`` / ``std``: the frames' normalisation), ``flatten="spatial_first"`` orders
            the features ``(p1, p2, p0)``.

    Returns:
        ``(M, D)`` float32.
    """
    recipe = get_recipe(recipe)
    stretch = None  # (mean, std) of the frames for stretched crops
    if recipe.crop == "stretch_pil":
        if recipe.mean is None or recipe.std is None or images.dim() != 4:
            raise ValueError(
                f"crop_features: recipe {recipe.name!r} crops stretched uint8 "
                f"frames; it needs 2D RGB frames and the recipe's mean / std"
            )
        stretch = (recipe.mean, recipe.std)
    feats = []
    for start in range(0, xyxy.shape[0], batch_size):
        if stretch is not None:
            crops = stretched_crops(
                images,
                xyxy[start : start + batch_size],
                frame[start : start + batch_size],
                stretch[0],
                stretch[1],
                (out_size[0], out_size[1]),
            )
        else:
            crops = crop_boxes(
                images, xyxy[start : start + batch_size], frame[start : start + batch_size], out_size
            )
        if images.is_contiguous(memory_format=torch.channels_last):
            crops = crops.contiguous(memory_format=torch.channels_last)
        fmap = backbone_to(model, crops, layer) if isinstance(layer, str) else forward_to(model, crops, layer)
        if reshape is not None:
            fmap = reshape(fmap)
        feats.append(pool_to_layout(fmap.float(), layout))
    if not feats:
        return images.new_zeros(0, 0, dtype=torch.float32)
    out = torch.cat(feats)
    return spatial_first(out, layout) if recipe.flatten == "spatial_first" else out


class CropExtractor(Extractor):
    """M1: one row per box; features of the box's crop re-run through the backbone.

    ``level`` is the map pooled (default: the model's last feature level, layer4 for ResNets,
    see :func:`~gcfeat.extract.base.feature_levels`); ``out_size`` is 2D ``(h, w)`` or, for
    volumes, ``(d, h, w)``. ``recipe``: see :func:`crop_features` (the model runs in eval mode
    in both recipes, as the original's ``my_resnet.eval()``).
    """

    name = "m1"

    def __init__(
        self,
        model: nn.Module,
        out_size: tuple[int, ...] = (224, 224),
        layout: Layout = (512, 1, 1),
        batch_size: int = 64,
        level: str | None = None,
        *,
        recipe: Recipe | str | None = None,
    ) -> None:
        self.recipe = get_recipe(recipe)
        self.model = model
        self.out_size = tuple(int(s) for s in out_size)
        self.layout = layout
        self.batch_size = int(batch_size)
        self.level = level or list(feature_levels(model))[-1]
        try:
            self._module = model.get_submodule(self.level)
        except AttributeError:
            raise ValueError(
                f"CropExtractor: level {self.level!r} is not a submodule of {type(model).__name__}"
            ) from None
        self._reshape = token_reshape(model, self._module)

    def output_dim(self, channels: dict | None = None) -> int:
        channels = channels or layer_channels(self.model, {self.level: self._module})
        return layout_dim(self.layout, channels[self.level])

    def settings(self) -> dict:
        out = {"out_size": list(self.out_size), "layout": self.layout, "layer": self.level}
        if not self.recipe.is_default:
            out["recipe"] = self.recipe.name
        return out

    def __call__(self, images, result, boxes, probs=None) -> Features:
        if len(self.out_size) != images.dim() - 2:
            raise ValueError(
                f"m1: crop size {self.out_size} has {len(self.out_size)} dims, "
                f"the inputs {images.dim() - 2}; pass a crop size per spatial dim"
            )
        feats = crop_features(
            self.model,
            images,
            boxes.xyxy,
            boxes.frame,
            self.out_size,
            self.layout,
            self.batch_size,
            self._module,
            self._reshape,
            recipe=self.recipe,
        )
        if feats.shape[0] == 0:
            feats = feats.new_zeros(0, self.output_dim())
        return Features(
            boxes.frame.long(), boxes.label.long(), boxes.xyxy.float(), boxes.score.float(), feats
        )
