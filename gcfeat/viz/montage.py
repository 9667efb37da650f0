"""Static figures for the MRI tasks: CAM overlays, slice montages, batch grids, and
deletion / insertion curves (matplotlib, Agg backend).

* ``overlay(image, heat)`` -> RGB uint8: grey image + jet heatmap at ``alpha`` (the seeds' look),
  optionally only where ``foreground``;
* ``slice_montage(volume, heat, path)``: every ``step``-th slice of a volume (axis 0) with its
  CAM, tiled in a grid, saved as PNG;
* ``batch_grid(images, heats, titles, path)``: overlays of a batch with predicted / true labels;
* ``plot_curve(curves, i, path)``: the seed's figure: curve + filled area, AUC in the title.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gcfeat.viz.overlay import save_figure

__all__ = ["jet", "overlay", "slice_montage", "batch_grid", "plot_curve", "plot_curves"]


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def jet(heat) -> np.ndarray:
    """``(...,)`` values in [0, 1] -> ``(..., 3)`` uint8 RGB with the jet colormap."""
    from matplotlib import colormaps

    return (colormaps["jet"](np.clip(_np(heat), 0, 1))[..., :3] * 255).astype(np.uint8)


def overlay(image, heat, alpha: float = 0.5, foreground=None, normalize: bool = True) -> np.ndarray:
    """Grey ``image (H, W)`` (min-max scaled unless ``normalize=False``: then already in [0, 1])
    + jet ``heat (H, W)`` in [0, 1] -> ``(H, W, 3)`` uint8. With ``foreground (H, W)`` bool, the
    heat is drawn only there."""
    g = _unit(_np(image)) if normalize else np.clip(_np(image).astype(np.float32), 0, 1)
    grey = np.repeat((g * 255)[..., None], 3, -1)
    a = np.full(g.shape, alpha, np.float32)
    if foreground is not None:
        a = a * _np(foreground).astype(np.float32)
    out = grey * (1 - a[..., None]) + jet(heat).astype(np.float32) * a[..., None]
    return out.round().astype(np.uint8)


def slice_montage(
    volume,
    heat,
    path: str | os.PathLike,
    *,
    step: int = 1,
    cols: int = 8,
    alpha: float = 0.5,
    foreground=None,
    title: str | None = None,
) -> Path:
    """PNG montage of the slices ``volume[z]`` (``(D, H, W)``) with ``heat (D, H, W)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vol, hm = _np(volume), _np(heat)
    fg = None if foreground is None else _np(foreground)
    zs = list(range(0, vol.shape[0], max(step, 1)))
    cols = min(cols, len(zs))
    rows = math.ceil(len(zs) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(1.6 * cols, 1.6 * rows + (0.4 if title else 0)), squeeze=False
    )
    lo, hi = float(vol.min()), float(vol.max())
    for ax in axes.flat:
        ax.axis("off")
    for ax, z in zip(axes.flat, zs):
        g = (vol[z] - lo) / (hi - lo) if hi > lo else np.zeros_like(vol[z])
        ax.imshow(overlay(g, hm[z], alpha, None if fg is None else fg[z], normalize=False))
        ax.set_title(f"z={z}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def batch_grid(
    images,
    heats,
    titles: Sequence[str],
    path: str | os.PathLike,
    *,
    cols: int = 4,
    alpha: float = 0.5,
    masks=None,
) -> Path:
    """Grid of overlays of ``images (N, H, W)`` and ``heats (N, H, W)``, one title each
    (e.g. ``"pred Mild\ntrue Mild"``); ``masks (N, H, W)`` (optional, the ground truth) are
    outlined in white where not empty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    imgs, hms = _np(images), _np(heats)
    gts = _np(masks) if masks is not None else [None] * len(imgs)
    n = len(imgs)
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, hm, gt, t in zip(axes.flat, imgs, hms, gts, titles):
        ax.imshow(overlay(img, hm, alpha))
        if gt is not None and gt.any():
            ax.contour(gt.astype(float), levels=[0.5], colors="white", linewidths=0.8)
        ax.set_title(t, fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_curve(
    x, scores, path: str | os.PathLike, *, kind: str = "deletion", label: str | None = None
) -> Path:
    """One deletion / insertion curve: line + filled area, AUC (trapezoid) in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = _np(x).astype(float), _np(scores).astype(float)
    auc = float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(x, y, color="tab:blue")
    ax.fill_between(x, 0, y, alpha=0.4, color="tab:blue")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(f"fraction of pixels {'deleted' if kind == 'deletion' else 'inserted'}")
    ax.set_ylabel("score")
    name = "DAUC" if kind == "deletion" else "IAUC"
    ax.set_title(f"{label + ': ' if label else ''}{kind} {name} = {auc:.4f}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_curves(x, curves: dict[str, np.ndarray], path: str | os.PathLike, *, kind: str = "deletion") -> Path:
    """Mean curves of several saliency methods on one axis (legend carries mean AUC)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = _np(x).astype(float)
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for name, c in curves.items():
        c = _np(c).astype(float)
        mean = c.mean(0) if c.ndim == 2 else c
        auc = float(np.sum((mean[1:] + mean[:-1]) * np.diff(x)) / 2)
        ax.plot(x, mean, label=f"{name} ({auc:.3f})")
        ax.fill_between(x, 0, mean, alpha=0.15)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("fraction of pixels " + ("deleted" if kind == "deletion" else "inserted"))
    ax.set_ylabel("score")
    ax.set_title(f"mean {kind} curves (AUC)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
