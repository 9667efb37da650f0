"""Feature levels of any backbone: the maps M1 / M2 / M3 read and the CAM pass targets.

A *level* is a submodule whose output is a spatial map at some stride (input pixels per map
cell): ResNet ``layer2 / layer3 / layer4`` are strides 8 / 16 / 32. :func:`find_levels` finds
them without per-architecture tables:

1. names given by the user (``levels=["features.5", "features.6", "features.7"]``), strides
   measured by a shape probe;
2. torchvision ResNets, :mod:`gcfeat.models.resnet3d` (``layer2..layer4``) and the Alzheimer
   CNNs (``last_conv``): the names gcfeat has always used (no probe, nominal strides);
3. timm models: their ``feature_info`` (``features_only`` semantics: module, reduction,
   channels), the last entry at each wanted stride;
4. any other model: one forward of a dummy input with a hook on every module records each
   output's shape; the *trunk* is the module whose direct children span the most distinct
   strides (ResNet: the model, ConvNeXt / EfficientNet / DenseNet / MobileNet / Swin:
   ``features``, RegNet: ``trunk_output``), and each wanted stride takes the last child of
   the trunk (in execution order) that outputs it.

Token models are explained on their token grid through a *reshape transform* (the
``reshape_transform`` of pytorch-grad-cam): :class:`TokenGrid` (ViT / DeiT: drop the class /
distillation tokens, ``(B, P + h*w, C) -> (B, C, h, w)``) and :class:`ChannelsLast` (Swin:
``(B, h, w, C) -> (B, C, h, w)``). :func:`token_reshape` picks one for the layouts gcfeat knows
(torchvision ``VisionTransformer`` / ``SwinTransformer``, timm ViT / DeiT / Swin). A ViT's
class-token readout gives no gradient to the patch tokens of its last block's output, so its
level is the last block's first norm (``encoder.layers[-1].ln_1``, timm ``blocks[-1].norm1``),
the target pytorch-grad-cam's ViT tutorial uses; all ViT tokens share one stride (the patch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gcfeat.errors import GcfeatError

__all__ = [
    "FeatureLevel",
    "LevelError",
    "TokenGrid",
    "ChannelsLast",
    "find_levels",
    "token_reshape",
    "DEFAULT_STRIDES",
]

#: The strides M2 routes boxes to (the original's layer2 / layer3 / layer4).
DEFAULT_STRIDES: tuple[int, ...] = (8, 16, 32)


class LevelError(GcfeatError):
    """Feature levels that cannot be found or do not exist in the model."""


@dataclass(frozen=True)
class FeatureLevel:
    """One feature map of a backbone.

    Attributes:
        name: qualified module name (``"layer3"``, ``"features.5"``, ``"stages.2"``).
        module: the module whose output is the map.
        stride: input pixels per map cell (geometric mean over axes); None when not measured
            (the ResNet / ``last_conv`` shortcut, routed by position as before).
        channels: ``C`` of the ``(B, C, *grid)`` map; None when not measured.
        reshape: callable turning the module's output into ``(B, C, *grid)`` (token
            layouts), or None when it already is.
    """

    name: str
    module: nn.Module
    stride: float | None = None
    channels: int | None = None
    reshape: Callable[[Tensor], Tensor] | None = None

    def grid(self, output: Tensor) -> Tensor:
        """The module's output as ``(B, C, *grid)``."""
        return output if self.reshape is None else self.reshape(output)


class TokenGrid:
    """``(B, P + h*w, C)`` tokens -> ``(B, C, h, w)``: drop ``prefix_tokens`` (class /
    distillation tokens), lay the rest on the patch grid (row-major, as ViT patchifies).

    ``grid=None`` takes a square grid. Equal to pytorch-grad-cam's ViT ``reshape_transform``
    (``tensor[:, 1:].reshape(B, h, w, C)`` then channels first).
    """

    def __init__(self, prefix_tokens: int = 1, grid: Sequence[int] | None = None):
        self.prefix_tokens = int(prefix_tokens)
        self.grid = None if grid is None else tuple(int(g) for g in grid)

    def __call__(self, tokens: Tensor) -> Tensor:
        if tokens.ndim != 3:
            raise LevelError(f"TokenGrid: expected tokens (B, N, C), found shape {tuple(tokens.shape)}")
        t = tokens[:, self.prefix_tokens :]
        n = t.shape[1]
        grid = self.grid
        if grid is None:
            side = math.isqrt(n)
            if side * side != n:
                raise LevelError(
                    f"TokenGrid: {n} patch tokens (after {self.prefix_tokens} "
                    f"prefix tokens) do not form a square grid; pass grid=(h, w)"
                )
            grid = (side, side)
        if math.prod(grid) != n:
            raise LevelError(f"TokenGrid: {n} patch tokens do not fill the grid {grid}")
        return t.reshape(t.shape[0], *grid, t.shape[2]).permute(0, 3, 1, 2)

    def __repr__(self) -> str:
        return f"TokenGrid(prefix_tokens={self.prefix_tokens}, grid={self.grid})"


class ChannelsLast:
    """``(B, *grid, C)`` -> ``(B, C, *grid)`` (Swin stages and norms)."""

    def __call__(self, t: Tensor) -> Tensor:
        return t.movedim(-1, 1)

    def __repr__(self) -> str:
        return "ChannelsLast()"


# --------------------------------------------------------------------------------------------
# known token layouts


def _is_tv_vit(model: nn.Module) -> bool:
    from torchvision.models import VisionTransformer

    return isinstance(model, VisionTransformer)


def _is_timm_vit(model: nn.Module) -> bool:
    return hasattr(model, "num_prefix_tokens") and hasattr(model, "patch_embed") and hasattr(model, "blocks")


def _is_swin(model: nn.Module) -> bool:
    from torchvision.models import SwinTransformer

    return isinstance(model, SwinTransformer) or "Swin" in type(model).__name__


def token_reshape(model: nn.Module, module: nn.Module) -> Callable[[Tensor], Tensor] | None:
    """The reshape transform of ``module``'s output for the token layouts gcfeat knows
    (torchvision / timm ViT, DeiT, Swin), else None (the output is already ``(B, C, *s)``)."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return None
    if _is_tv_vit(model):
        return TokenGrid(1, (model.image_size // model.patch_size,) * 2)
    if _is_timm_vit(model):
        grid = getattr(model.patch_embed, "grid_size", None)
        return TokenGrid(model.num_prefix_tokens, grid)
    if _is_swin(model):
        return ChannelsLast()
    return None


# --------------------------------------------------------------------------------------------
# discovery


def _submodule(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as e:
        raise LevelError(f"levels: {type(model).__name__} has no submodule {name!r}") from e


def _first_conv(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return m
    raise LevelError(
        f"{type(model).__name__}: no feature levels found: no convolution to "
        f"tell the input shape for the level probe; pass input_shape=(C, H, W)"
    )


def probe_shape(model: nn.Module) -> tuple[int, ...]:
    """A ``(C, *spatial)`` input the model accepts: its image size where fixed (torchvision
    ViT ``image_size``, timm ``patch_embed.img_size`` or ``pretrained_cfg["input_size"]``),
    else 224 (2D) / 32 (3D)."""
    conv = _first_conv(model)
    dims = conv.weight.ndim - 2
    size = getattr(model, "image_size", None)  # torchvision ViT
    if size is None:  # timm models with a fixed size
        size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if size is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        if "input_size" in cfg:
            size = tuple(cfg["input_size"][1:])
    if size is None:
        size = 224 if dims == 2 else 32
    if isinstance(size, int):
        size = (size,) * dims
    return (conv.in_channels, *size)


def _probe(model: nn.Module, input_shape: Sequence[int], modules: dict[str, nn.Module]):
    """One forward of a ``(1, *input_shape)`` input; ``{name: (order, output shape)}``."""
    seen: dict[str, tuple[int, tuple[int, ...]]] = {}
    counter = [0]

    def hook(name):
        def fn(_m, _args, out):
            if isinstance(out, Tensor):
                counter[0] += 1
                seen[name] = (counter[0], tuple(out.shape))

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    was_training = model.training
    gen = torch.Generator().manual_seed(0)
    param = next(model.parameters(), None)
    x = torch.randn(1, *input_shape, generator=gen)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    except RuntimeError as e:  # e.g. a flatten head sized for another input
        raise LevelError(
            f"{type(model).__name__}: the level probe's forward of an input "
            f"{tuple(x.shape)} failed ({e}); pass input_shape=(C, H, W)"
        ) from e
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return seen


def _measure(
    model: nn.Module, name: str, shape: tuple[int, ...], input_shape: Sequence[int], reshape
) -> tuple[float | None, int | None]:
    """(stride, channels) of an output shape, once reshaped to ``(B, C, *grid)``."""
    if reshape is not None:
        try:
            shape = tuple(reshape(torch.empty(shape, device="meta")).shape)
        except (LevelError, RuntimeError):
            return None, None
    spatial = input_shape[1:]
    if len(shape) != 2 + len(spatial) or any(s < 1 for s in shape[2:]):
        return None, None
    ratios = [i / s for i, s in zip(spatial, shape[2:])]
    return math.prod(ratios) ** (1.0 / len(ratios)), int(shape[1])


def _stride_key(stride: float | None) -> int | None:
    """The power of two a measured stride rounds to (224 / 7 = 32; 28 / 4 = 7 -> None)."""
    if stride is None or stride < 1:
        return None
    k = round(math.log2(stride))
    return 2**k if abs(stride - 2**k) / 2**k < 0.2 else None


def _named(model: nn.Module, names: Sequence[str], input_shape, shapes) -> list[FeatureLevel]:
    out = []
    for name in names:
        module = _submodule(model, name)
        if name not in shapes:
            raise LevelError(
                f"levels: {name!r} did not run in the forward pass of "
                f"{type(model).__name__} (or returned no tensor)"
            )
        reshape = token_reshape(model, module)
        stride, channels = _measure(model, name, shapes[name][1], input_shape, reshape)
        if stride is None:
            raise LevelError(
                f"levels: {name!r} outputs {shapes[name][1]}, not a map "
                f"(B, C, *spatial) for an input {(1, *input_shape)}"
            )
        out.append(FeatureLevel(name, module, stride, channels, reshape))
    return sorted(out, key=lambda lv: (lv.stride, shapes[lv.name][0]))  # then forward order


def _trunk_levels(model: nn.Module, input_shape, shapes, strides) -> list[str]:
    """Names of the trunk's last child at each wanted stride (see the module docstring)."""
    best, best_count = None, 0
    for parent_name, parent in model.named_modules():
        found = {}
        for child_name, child in parent.named_children():
            full = f"{parent_name}.{child_name}" if parent_name else child_name
            if full not in shapes:
                continue
            s, _ = _measure(model, full, shapes[full][1], input_shape, token_reshape(model, child))
            key = _stride_key(s)
            if key is not None:
                found[full] = (shapes[full][0], key)
        count = len({k for _, k in found.values()})
        if count > best_count:
            best, best_count = found, count
    if not best:
        return []
    names = []
    for s in strides:
        at = [(order, n) for n, (order, k) in best.items() if k == s]
        if at:
            names.append(max(at)[1])
    return names


def find_levels(
    model: nn.Module,
    levels: Sequence[str] | None = None,
    *,
    input_shape: Sequence[int] | None = None,
    strides: Sequence[int] = DEFAULT_STRIDES,
) -> list[FeatureLevel]:
    """The feature levels of ``model`` in order of increasing stride (see the module doc).

    Args:
        model: any classifier (torchvision, timm, gcfeat's ResNets / CNNs).
        levels: module names to use instead of the automatic choice.
        input_shape: ``(C, *spatial)`` of the probe input (default :func:`probe_shape`).
        strides: the strides wanted (default 8, 16, 32); models without one of them give
            fewer levels (ViT: only its patch stride, 16).

    Returns:
        list of :class:`FeatureLevel`; the last one is the CAM target of the pipeline.
    """
    if levels is None:
        if all(hasattr(model, n) for n in ("layer2", "layer3", "layer4")) and not hasattr(
            model, "feature_info"
        ):
            return [FeatureLevel(n, getattr(model, n)) for n in ("layer2", "layer3", "layer4")]
        if isinstance(getattr(model, "last_conv", None), nn.Module):
            return [FeatureLevel("last_conv", model.last_conv)]
    input_shape = tuple(input_shape) if input_shape is not None else probe_shape(model)
    if levels is None:
        levels = _auto_names(model, input_shape, strides)
        if not levels:
            raise LevelError(
                f"{type(model).__name__}: no feature levels found at strides "
                f"{tuple(strides)} found for an input {(1, *input_shape)}; name "
                f"the levels (levels=[...], e.g. 'features.6')"
            )
    named = {n: _submodule(model, n) for n in levels}
    shapes = _probe(model, input_shape, named)
    return _named(model, list(levels), input_shape, shapes)


def _auto_names(model: nn.Module, input_shape, strides) -> list[str]:
    if _is_tv_vit(model):
        last = list(model.encoder.layers.named_children())[-1][0]
        return [f"encoder.layers.{last}.ln_1"]
    if _is_timm_vit(model):
        return [f"blocks.{len(model.blocks) - 1}.norm1"]
    info = getattr(model, "feature_info", None)
    if isinstance(info, list) and info and isinstance(info[0], dict) and "module" in info[0]:
        names = []
        for s in strides:
            at = [d["module"] for d in info if int(d["reduction"]) == s]
            if at:
                names.append(at[-1])
        return names
    shapes = _probe(model, input_shape, dict(model.named_modules()))
    return _trunk_levels(model, input_shape, shapes, strides)
