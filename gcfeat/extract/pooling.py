"""Pooling of region features to the original 512-d layouts.

A layout ``(p0, p1, p2)`` means: adaptive-average-pool the region's spatial dims to
``(p1, p2)``, then average groups of ``C / p0`` consecutive channels down to ``p0``, flatten in
``(p0, p1, p2)`` order -> ``p0 * p1 * p2`` values (512 for the three original layouts
``(512, 1, 1)``, ``(128, 2, 2)``, ``(32, 4, 4)``). ``None`` keeps the raw channels after a global
average (``C`` values: 512 / 1024 / 2048 for ResNet50's layer2 / layer3 / layer4).

3D maps ``(R, C, D, H, W)`` are pooled to ``(1, p1, p2)`` (depth averaged), so the same layouts
apply to volumes.

The original's M1 / M2 (``myResnet.forward``, ``bbox_library.extract_feature``) permuted the
pooled grid to ``(p1, p2, C)`` before averaging channels, so its 128x2x2 / 32x4x4 vectors are in
``(p1, p2, p0)`` order; :func:`gcfeat.extract.recipe.spatial_first` gives that order
(``recipe="paper"``). At 512x1x1 both orders are the same.

Example::

    >>> x = torch.randn(5, 2048, 7, 7)
    >>> pool_to_layout(x, (128, 2, 2)).shape
    torch.Size([5, 512])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from gcfeat.errors import GcfeatError

Layout = tuple[int, int, int] | None

#: The original layouts, by the name used on the command line.
LAYOUTS: dict[str, Layout] = {
    "512x1x1": (512, 1, 1),
    "128x2x2": (128, 2, 2),
    "32x4x4": (32, 4, 4),
    "raw": None,
}


class LayoutError(GcfeatError):
    """A pooling layout that does not fit the feature map."""


def parse_layout(layout: str | Sequence[int] | None) -> Layout:
    """``"128x2x2"`` / ``(128, 2, 2)`` / ``"raw"`` / ``None`` -> a layout tuple or ``None``."""
    if layout is None:
        return None
    if isinstance(layout, str):
        if layout.lower() in ("raw", "none", "gap"):
            return None
        try:
            parts = tuple(int(p) for p in layout.lower().split("x"))
        except ValueError:
            parts = ()
    else:
        parts = tuple(int(p) for p in layout)
    if len(parts) != 3 or min(parts) < 1:
        raise LayoutError(
            f"pooling layout: got {layout!r}, expected 'P0xP1xP2' such as "
            f"'512x1x1', '128x2x2', '32x4x4', or 'raw'"
        )
    return parts  # type: ignore[return-value]


def layout_dim(layout: Layout, channels: int) -> int:
    """Feature length produced by ``layout`` on a map of ``channels`` channels."""
    return channels if layout is None else layout[0] * layout[1] * layout[2]


def spatial_pool(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Adaptive average pool of ``(R, C, *s)`` to ``(R, C, p1, p2)``; 3D depth averaged."""
    if x.dim() == 4:
        return F.adaptive_avg_pool2d(x, size)
    if x.dim() == 5:
        return F.adaptive_avg_pool3d(x, (1, *size)).squeeze(2)
    if x.dim() in (2, 3) and tuple(size) == (1, 1):  # vectors or flattened positions
        return x.reshape(x.shape[0], x.shape[1], -1).mean(-1)[..., None, None]
    raise LayoutError(
        f"pooling: got a map of shape {tuple(x.shape)}, expected (R, C, H, W) or "
        f"(R, C, D, H, W) for a spatial grid of {tuple(size)}"
    )


def channel_group_mean(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Average consecutive channel groups: ``(R, C, ...)`` -> ``(R, groups, ...)``."""
    c = x.shape[1]
    if c % groups:
        raise LayoutError(
            f"pooling: {c} channels cannot be averaged into {groups} equal groups; choose p0 dividing {c}"
        )
    return x.reshape(x.shape[0], groups, c // groups, *x.shape[2:]).mean(2)


def pool_to_layout(x: torch.Tensor, layout: Layout = (512, 1, 1)) -> torch.Tensor:
    """Pool region features to a flat vector per region.

    Args:
        x: ``(R, C, *s)`` region maps (2D or 3D), or ``(R, C)`` already-averaged vectors (only
            for layouts with a 1x1 grid).
        layout: ``(p0, p1, p2)`` or ``None`` for the raw channels (global average).

    Returns:
        ``(R, p0 * p1 * p2)`` (or ``(R, C)``), same dtype and device as ``x``.
    """
    if layout is None:
        return x.reshape(x.shape[0], x.shape[1], -1).mean(-1)
    p0, p1, p2 = layout
    pooled = spatial_pool(x, (p1, p2))  # (R, C, p1, p2)
    return channel_group_mean(pooled, p0).flatten(1)  # (R, p0 * p1 * p2)


def pooling_matrix(
    spatial: Sequence[int], size: tuple[int, int], *, device=None, dtype=torch.float32
) -> torch.Tensor:
    """The adaptive average pool over ``spatial`` as a matrix ``(n, p1 * p2)``.

    ``x.flatten(2) @ P`` equals ``spatial_pool(x, size).flatten(2)``; weighted pools
    (heatmap-weighted features) need it as a matrix.
    """
    n = 1
    for s in spatial:
        n *= int(s)
    eye = torch.eye(n, device=device, dtype=dtype).reshape(n, 1, *spatial)
    return spatial_pool(eye, size).reshape(n, -1)
