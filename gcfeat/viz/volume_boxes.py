"""Box figures of volumes: a slice montage with the heatmap and 3D boxes (``gcfeat bbox --task
organ3d``), and the grey conversion of one image channel for 2D box figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gcfeat.viz.montage import overlay
from gcfeat.viz.overlay import class_color, draw_boxes, new_figure, save_figure

__all__ = ["save_volume_box_figure", "grey_uint8"]


def grey_uint8(image) -> np.ndarray:
    """``(H, W)`` float -> uint8 grey, min-max scaled."""
    x = image.detach().cpu().float().numpy()
    lo, hi = float(x.min()), float(x.max())
    x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return np.rint(x * 255).astype(np.uint8)


def save_volume_box_figure(
    path: str | Path,
    volume,
    heat,
    boxes,
    *,
    gt_mask=None,
    gt_box=None,
    color_label: int = 0,
    title: str | None = None,
    max_slices: int = 32,
    cols: int = 8,
    dpi: int = 100,
) -> Path:
    """Slice montage of a volume with its heatmap and 3D boxes.

    The slices (axis 0) are those the boxes and the GT box span (all slices when there are
    none; at most ``max_slices``, evenly spaced). On each slice: the heatmap (JET, alpha 0.5),
    every box covering the slice as its in-plane rectangle (solid), the GT box dashed and the
    GT mask's contour (white).

    Args:
        volume: ``(D, H, W)``; heat: ``(D, H, W)`` in [0, 1].
        boxes: ``(M, 6)`` z1, y1, x1, z2, y2, x2 (exclusive end).
        gt_mask: ``(D, H, W)`` bool or None; gt_box: ``(6,)`` or None.
        color_label: class id for the box colour.

    Returns:
        The written path.
    """
    vol = volume.detach().cpu().float().numpy()
    hm = heat.detach().cpu().float().numpy()
    b = np.asarray(boxes.detach().cpu() if torch.is_tensor(boxes) else boxes, float).reshape(-1, 6)
    g = None if gt_box is None else np.asarray(gt_box.tolist() if torch.is_tensor(gt_box) else gt_box, float)
    m = None if gt_mask is None else gt_mask.detach().cpu().numpy().astype(bool)
    D = vol.shape[0]
    spans = [(int(r[0]), int(r[3])) for r in b] + ([(int(g[0]), int(g[3]))] if g is not None else [])
    zs = sorted({z for lo, hi in spans for z in range(max(lo, 0), min(hi, D))}) or list(range(D))
    if len(zs) > max_slices:
        zs = [zs[i] for i in np.linspace(0, len(zs) - 1, max_slices).round().astype(int)]
    cols = min(cols, len(zs))
    rows = -(-len(zs) // cols)
    tile, label = 1.7, 0.25  # inches per slice, per slice title
    top = 0.14 * (title.count("\n") + 1) + 0.1 if title else 0.05
    height = (tile + label) * rows + top
    fig = new_figure(tile * cols, height, dpi)
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.subplots_adjust(
        left=0.01, right=0.99, bottom=0.01, top=1 - (top + label) / height, wspace=0.06, hspace=label / tile
    )
    lo, hi = float(vol.min()), float(vol.max())
    grey = (vol - lo) / (hi - lo) if hi > lo else np.zeros_like(vol)
    colour = class_color(color_label)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, z in zip(axes.flat, zs):
        ax.imshow(overlay(grey[z], hm[z], normalize=False), interpolation="nearest")
        on = [r for r in b if r[0] <= z < r[3]]
        if on:  # in-plane rectangle of each box covering z: x1, y1, x2, y2
            draw_boxes(ax, [[r[2], r[1], r[5], r[4]] for r in on], color=colour, linewidth=1.2)
        if g is not None and g[0] <= z < g[3]:
            draw_boxes(ax, [[g[2], g[1], g[5], g[4]]], color="white", dashed=True, linewidth=1.0)
        if m is not None and m[z].any():
            ax.contour(m[z].astype(float), levels=[0.5], colors="white", linewidths=0.8)
        ax.set_xlim(-0.5, vol.shape[2] - 0.5)
        ax.set_ylim(vol.shape[1] - 0.5, -0.5)
        ax.set_title(f"z={z}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=7, y=0.995, va="top")
    return save_figure(fig, path, dpi)
