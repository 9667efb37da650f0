"""Extraction recipes: gcfeat's corrected rules (``"default"``) or the original's (``"paper"``).

The original scripts (PangWinnie0219/GradCAMDownstreamTask: ``utils/miccai_bbox.py``,
``utils/crop_bbox.py`` + ``image_extract_feature.py`` (M1), ``bbox_extract_feature.py`` (M2),
``heatmap_extract_feature.py`` (M3), helpers in ``utils/bbox_library.py``) wrote features that
differ from gcfeat's defaults in these rules; :data:`PAPER` reproduces each one, :data:`DEFAULT`
is gcfeat's choice (README, "Recipes", says why):

============== ============================================ =====================================
field          paper (the original's code)                  default
============== ============================================ =====================================
``bn``         M2 / M3 maps from ``copy.deepcopy`` of the   the CAM pass's maps (eval mode:
               children made in train mode: BatchNorm uses  running statistics)
               each frame's own statistics (``"frame"``)
``mean/std``   extraction constants :data:`PAPER_MEAN` /    the checkpoint's (training) constants
               :data:`PAPER_STD`
``resize``     PIL bilinear (``transforms.Resize``)          OpenCV INTER_AREA
``contours``   ``findContours(thresh, 1, 2)``: RETR_LIST    outer border of each blob
``crop``       un-normalised frame, min-max stretched to    ``roi_align`` of the normalised frame
               uint8, PNG, PIL bilinear to 224, fed         (bilinear, half-pixel)
               without normalisation (``"stretch_pil"``)
``m2_pool``    Python ``round`` of the box to cells (at     ``roi_align`` (aligned) to the grid
               least one), integer slice, adaptive pool
``flatten``    ``(p1, p2, p0)`` (spatial first) for M1/M2   ``(p0, p1, p2)`` (channels first)
``m3``         one masked channel-group mean copied into    heat-weighted (or masked) pool per
               every cell of the ``(p1, p2)`` grid; binary  grid cell
               mask weighting
============== ============================================ =====================================

Example::

    >>> from gcfeat.extract.recipe import get_recipe
    >>> paper = get_recipe("paper")
    >>> paper.dataset_kwargs()["resize"]
    'pil'
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gcfeat.errors import GcfeatError

#: Normalisation of the original's extraction scripts (their training used other constants).
PAPER_MEAN: tuple[float, float, float] = (0.4084945, 0.25513682, 0.25353566)
PAPER_STD: tuple[float, float, float] = (0.22662906, 0.20201652, 0.1962526)


class RecipeError(GcfeatError):
    """An unknown recipe, or data prepared for another recipe."""


@dataclass(frozen=True)
class Recipe:
    """The rules one extraction follows (see the module docstring for each field's values).

    Attributes:
        name: ``"default"``, ``"paper"`` or a custom name.
        bn: ``"eval"`` (M2 / M3 read the CAM pass's maps) or ``"frame"`` (a copy of the model
            whose BatchNorms use each frame's own statistics, as in train mode on one frame).
        mean, std: input normalisation at extraction; ``None``: the checkpoint's.
        resize: frame resizing of the dataset (:func:`gcfeat.data.transforms.resize_image`).
        contours: box tracing (:func:`gcfeat.boxes.heatmap_to_boxes`'s ``contours``).
        crop: M1 crops, ``"roi_align"`` or ``"stretch_pil"``.
        m2_pool: ``"roi_align"`` or ``"slice"``.
        flatten: M1 / M2 feature order, ``"channels_first"`` or ``"spatial_first"``.
        m3: ``"pooled"`` (weighted pool per grid cell) or ``"broadcast"`` (one masked mean per
            channel group, copied into every cell).
        m3_weighting: forces M3's weighting (``"mask"``), ``None`` leaves it to the caller.
    """

    name: str = "default"
    bn: str = "eval"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize: str = "area"
    contours: str = "outer"
    crop: str = "roi_align"
    m2_pool: str = "roi_align"
    flatten: str = "channels_first"
    m3: str = "pooled"
    m3_weighting: str | None = None

    def __post_init__(self) -> None:
        allowed = {
            "bn": ("eval", "frame"),
            "resize": ("area", "pil"),
            "contours": ("outer", "list"),
            "crop": ("roi_align", "stretch_pil"),
            "m2_pool": ("roi_align", "slice"),
            "flatten": ("channels_first", "spatial_first"),
            "m3": ("pooled", "broadcast"),
            "m3_weighting": (None, "heat", "mask"),
        }
        for key, values in allowed.items():
            if getattr(self, key) not in values:
                raise RecipeError(f"Recipe.{key}: got {getattr(self, key)!r}, expected one of {values}")
        if (self.mean is None) != (self.std is None):
            raise RecipeError("Recipe: mean and std are given together (or neither)")

    @property
    def is_default(self) -> bool:
        return self == DEFAULT

    def settings(self) -> dict:
        """The rules as plain values (stored in the HDF5 attributes of non-default runs)."""
        out = asdict(self)
        for key in ("mean", "std"):
            out[key] = list(out[key]) if out[key] is not None else None
        return out

    def dataset_kwargs(self) -> dict:
        """Keyword arguments that prepare a surgical Dataset for this recipe (``resize``, and
        ``mean`` / ``std`` when the recipe fixes them)."""
        kw: dict = {"resize": self.resize}
        if self.mean is not None and self.std is not None:  # given together (__post_init__)
            kw.update(mean=tuple(self.mean), std=tuple(self.std))
        return kw


DEFAULT = Recipe()
PAPER = Recipe(
    name="paper",
    bn="frame",
    mean=PAPER_MEAN,
    std=PAPER_STD,
    resize="pil",
    contours="list",
    crop="stretch_pil",
    m2_pool="slice",
    flatten="spatial_first",
    m3="broadcast",
    m3_weighting="mask",
)
RECIPES: dict[str, Recipe] = {"default": DEFAULT, "paper": PAPER}


def get_recipe(recipe: str | Recipe | None) -> Recipe:
    """``"default"`` / ``"paper"`` / a :class:`Recipe` / ``None`` (default) -> a Recipe."""
    if recipe is None:
        return DEFAULT
    if isinstance(recipe, Recipe):
        return recipe
    if recipe not in RECIPES:
        raise RecipeError(f"recipe: got {recipe!r}, expected one of {sorted(RECIPES)}")
    return RECIPES[recipe]


def check_dataset(dataset, recipe: Recipe) -> None:
    """Raise :class:`RecipeError` when a Dataset that tells its ``mean`` / ``std`` / ``resize``
    was prepared otherwise than ``recipe`` asks (datasets that do not tell are trusted)."""
    inner = dataset
    while hasattr(inner, "dataset") and not hasattr(inner, "mean"):  # Subset
        inner = inner.dataset
    want = recipe.dataset_kwargs()
    got = {k: getattr(inner, k) for k in want if hasattr(inner, k)}
    bad = {
        k: v
        for k, v in got.items()
        if (
            tuple(round(float(x), 7) for x in v) != tuple(round(float(x), 7) for x in want[k])
            if k in ("mean", "std")
            else v != want[k]
        )
    }
    if bad:
        raise RecipeError(
            f"recipe={recipe.name!r} expects frames prepared with {want}; the dataset has "
            f"{ {k: got[k] for k in bad} }. Build it with **get_recipe({recipe.name!r})"
            f".dataset_kwargs() (the CLI does this for --recipe {recipe.name})"
        )


# ------------------------------------------------------------------ per-frame BatchNorm maps
class _FrameNorm(nn.Module):
    """A BatchNorm that normalises each sample with its own per-channel statistics.

    Train-mode BatchNorm on a batch of one frame: ``(x - mean_hw) / sqrt(var_hw + eps) * w + b``
    with the biased variance over the spatial positions, i.e. instance norm with the BN's
    affine parameters; batched, every frame still sees only its own statistics.
    """

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.weight = bn.weight
        self.bias = bn.bias
        self.eps = bn.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, weight=self.weight, bias=self.bias, use_input_stats=True, eps=self.eps)


def frame_norm_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose BatchNorms use per-frame statistics (see
    :class:`_FrameNorm`); the model, its parameters and running statistics are untouched."""
    clone = copy.deepcopy(model).eval()
    for parent in list(clone.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, _FrameNorm(child))
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


class _Stop(Exception):
    pass


class FrameStatsMaps:
    """Feature maps with per-frame BatchNorm statistics, as the original's M2 / M3 read them.

    ``FrameStatsMaps(model, levels)(images) -> {level: (B, C, *s)}``; the forward stops after
    the last level. The last call's result is kept, so M2 and M3 of one batch share a forward.
    """

    def __init__(self, model: nn.Module, levels: Sequence[str]) -> None:
        self.model = frame_norm_copy(model)
        self.levels = tuple(levels)
        mods = dict(self.model.named_modules())
        missing = [n for n in self.levels if n not in mods]
        if missing:
            raise RecipeError(f"per-frame BatchNorm maps: the model has no {missing}")
        self._modules = [mods[n] for n in self.levels]
        self._last: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._last is not None and self._last[0] is images:
            return self._last[1]
        dev = images.device
        if next(self.model.parameters()).device != dev:
            self.model.to(dev)
        out: dict[str, torch.Tensor] = {}

        def hook(name):
            def fn(_m, _i, output):
                out[name] = output.detach()
                if len(out) == len(self.levels):
                    raise _Stop

            return fn

        handles = [m.register_forward_hook(hook(n)) for n, m in zip(self.levels, self._modules)]
        try:
            self.model(images.float())
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        maps = {n: out[n] for n in self.levels}
        self._last = (images, maps)
        return maps


def spatial_first(features: torch.Tensor, layout) -> torch.Tensor:
    """Reorder ``(R, p0 * p1 * p2)`` features from ``(p0, p1, p2)`` to ``(p1, p2, p0)``."""
    if layout is None:
        return features
    p0, p1, p2 = layout
    return features.reshape(-1, p0, p1, p2).permute(0, 2, 3, 1).reshape(features.shape[0], -1)
