"""Baseline maps for the box studies: what a CAM's boxes must beat.

Each function returns maps shaped like the CAM heatmaps ``(B, K, *S)`` in [0, 1], so the same
box code and metrics run on them (2D and 3D alike):

* :func:`otsu_maps` -- each map cut at its own Otsu threshold (Otsu, IEEE SMC 1979; computed
  as OpenCV's ``THRESH_OTSU`` on the map's uint8 copy): ``heat * (uint8(255 heat) > t)``.
* :func:`fraction_of_max_maps` -- each map cut at a fixed fraction of its maximum: WSOL's
  classic "CAM at 20 %" rule (Zhou et al., CVPR 2016): ``heat * (heat > f * max)``.
* :func:`random_maps` -- seeded random maps: uniform noise at a coarse grid (a CAM's
  resolution, e.g. layer4's 4x5 cells), upsampled like a CAM and min-max normalised; with
  ``cells=None`` per-pixel uniform noise.

The cut maps keep the heat above their cut and are 0 elsewhere, so :func:`heatmap_to_boxes` at
``threshold=0`` gives exactly the baseline's boxes with the usual mean-heat scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gcfeat.cam.base import minmax_normalize, resize_maps

__all__ = ["fraction_of_max_maps", "otsu_maps", "otsu_threshold", "random_maps"]

_FLT_EPSILON = 1.1920928955078125e-07


def otsu_threshold(maps: Tensor) -> Tensor:
    r"""Otsu's threshold of every map ``(..., *S)`` (flattened over the last dims given as one
    ``(N, P)`` view) on its uint8 copy ``q = uint8(255 m)``: the level t in 0..255 that maximises
    the between-class variance :math:`\omega_0 \omega_1 (\mu_0 - \mu_1)^2` of ``q <= t`` vs
    ``q > t`` (OpenCV's rule: levels where a class weight is below FLT_EPSILON are skipped, the
    first maximum wins, 0 when none is valid). Returns ``(N,)`` int64 levels; on = ``q > t``.

    Args:
        maps: ``(N, P)`` values in [0, 1].
    """
    q = (maps.detach().float() * 255).to(torch.uint8).long()
    N, P = q.shape
    hist = torch.zeros(N, 256, dtype=torch.float64, device=q.device).scatter_add_(
        1, q, torch.ones(N, P, dtype=torch.float64, device=q.device)
    )
    p = hist / P
    i = torch.arange(256, dtype=torch.float64, device=q.device)
    q1 = p.cumsum(1)
    m1 = (p * i).cumsum(1)
    mu = m1[:, -1:]
    q2 = 1 - q1
    mu1 = m1 / q1.clamp(min=1e-300)
    mu2 = (mu - m1) / q2.clamp(min=1e-300)
    sigma = q1 * q2 * (mu1 - mu2) ** 2
    ok = (torch.minimum(q1, q2) >= _FLT_EPSILON) & (torch.maximum(q1, q2) <= 1 - _FLT_EPSILON)
    sigma = torch.where(ok, sigma, torch.zeros_like(sigma))
    t = sigma.argmax(1)
    return torch.where(sigma.amax(1) > 0, t, torch.zeros_like(t))


def otsu_maps(heat: Tensor) -> Tensor:
    """``heat (B, K, *S)`` kept where its uint8 copy is above the map's Otsu level, else 0."""
    flat = heat.flatten(2)
    B, K, P = flat.shape
    t = otsu_threshold(flat.reshape(B * K, P)).reshape(B, K, 1)
    on = (flat.detach().float() * 255).to(torch.uint8).long() > t
    return (flat * on).reshape(heat.shape)


def fraction_of_max_maps(heat: Tensor, fraction: float = 0.2) -> Tensor:
    """``heat (B, K, *S)`` kept where it exceeds ``fraction`` of the map's max, else 0."""
    flat = heat.flatten(2)
    on = flat > fraction * flat.amax(-1, keepdim=True)
    return (flat * on).reshape(heat.shape)


def random_maps(
    shape: Sequence[int], *, seed: int = 0, cells: Sequence[int] | None = None, device=None
) -> Tensor:
    """Seeded random maps ``shape = (B, K, *S)`` in [0, 1] (the same seed gives the same maps
    on every device: drawn on the CPU). ``cells``: the coarse grid (e.g. ``(4, 5)``) upsampled
    bilinearly / trilinearly as a CAM is; None: per-pixel uniform noise."""
    B, K, *S = (int(s) for s in shape)
    g = torch.Generator().manual_seed(int(seed))
    if cells is None:
        return torch.rand(B, K, *S, generator=g).to(device)
    low = torch.rand(B, K, *cells, generator=g)
    return minmax_normalize(resize_maps(low, S), len(S)).to(device)
