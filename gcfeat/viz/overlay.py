"""Heatmap overlays and box drawings (matplotlib's object API on the Agg canvas: no pyplot,
no global backend change, safe in threads and on headless machines)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["denormalize", "overlay_heatmap", "class_color", "draw_boxes", "save_box_figure", "new_figure"]


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def denormalize(image, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo ``(x - mean) / std`` and return displayable uint8.

    Args:
        image: ``(3, H, W)`` or ``(B, 3, H, W)`` float tensor / array, normalised.
        mean, std: per channel.

    Returns:
        ``(H, W, 3)`` (or ``(B, H, W, 3)``) uint8, values clipped to [0, 255].
    """
    x = _np(image).astype(np.float32)
    if x.ndim not in (3, 4) or x.shape[-3] != len(mean):
        raise ValueError(
            f"denormalize: expected (3, H, W) or (B, 3, H, W) with {len(mean)} channels, got shape {x.shape}"
        )
    shape = (-1, 1, 1)
    x = x * np.asarray(std, np.float32).reshape(shape) + np.asarray(mean, np.float32).reshape(shape)
    x = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    return np.moveaxis(x, -3, -1)


def overlay_heatmap(image, heat, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a colour-mapped heatmap onto an image: ``(1 - alpha) * image + alpha * cmap(heat)``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (grey ``(H, W)`` is repeated to 3 channels).
        heat: ``(H, W)`` in [0, 1] (values outside are clipped).
        alpha: heatmap weight in [0, 1]; cmap: a matplotlib colormap name (JET as the original).

    Returns:
        ``(H, W, 3)`` uint8.
    """
    from matplotlib import colormaps

    img = _np(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, -1)
    h = np.clip(_np(heat).astype(np.float32), 0, 1)
    if img.ndim != 3 or img.shape[2] != 3 or h.shape != img.shape[:2]:
        raise ValueError(
            f"overlay_heatmap: image {img.shape} and heat {h.shape} must be (H, W, 3) and (H, W)"
        )
    if not 0 <= alpha <= 1:
        raise ValueError(f"overlay_heatmap: alpha must be in [0, 1], got {alpha}")
    colour = colormaps[cmap](h)[..., :3] * 255.0
    out = (1 - alpha) * img.astype(np.float32) + alpha * colour
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def class_color(label: int) -> tuple[float, float, float]:
    """A fixed RGB colour (floats in [0, 1]) per class id: tab10, then tab20's light shades."""
    from matplotlib import colormaps

    label = int(label)
    if label < 10:
        r, g, b = colormaps["tab10"](label)[:3]
    else:
        r, g, b = colormaps["tab20"]((2 * (label - 10) + 1) % 20)[:3]
    return r, g, b


def draw_boxes(
    ax,
    boxes,
    labels=None,
    scores=None,
    *,
    class_names: Sequence[str] | None = None,
    dashed: bool = False,
    color=None,
    linewidth: float = 1.5,
    fontsize: float = 7,
    prefix: str = "",
) -> None:
    """Draw exclusive-end boxes on a matplotlib Axes showing the image with ``imshow``.

    Args:
        ax: the Axes.
        boxes: ``(n, 4)`` x1, y1, x2, y2 (exclusive end, pixel grid of the image).
        labels: ``(n,)`` class ids (colour and name); scores: ``(n,)`` shown after the name.
        class_names: name per class id; dashed: dashed outline (ground truth).
        color: one colour for all boxes (default: per class :func:`class_color`).
        prefix: text before each label (e.g. ``"GT "``).
    """
    from matplotlib.patches import Rectangle

    b = _np(boxes).reshape(-1, 4).astype(float)
    lab = None if labels is None else _np(labels).reshape(-1).astype(int)
    sc = None if scores is None else _np(scores).reshape(-1).astype(float)
    used: dict[tuple[int, int, bool], int] = getattr(ax, "_gcfeat_label_slots", {})
    ax._gcfeat_label_slots = used  # labels sharing a corner are stacked, not overprinted
    for i, (x1, y1, x2, y2) in enumerate(b):
        c = color if color is not None else class_color(lab[i] if lab is not None else 0)
        # pixel j covers [j - 0.5, j + 0.5) in imshow coordinates
        ax.add_patch(
            Rectangle(
                (x1 - 0.5, y1 - 0.5),
                x2 - x1,
                y2 - y1,
                fill=False,
                edgecolor=c,
                linewidth=linewidth,
                linestyle="--" if dashed else "-",
            )
        )
        text = prefix
        if lab is not None:
            text += (
                class_names[lab[i]]
                if class_names is not None and 0 <= lab[i] < len(class_names)
                else str(lab[i])
            )
        if sc is not None:
            text += f" {sc[i]:.2f}"
        if text.strip():
            # inside the box: predictions at the top-left corner, ground truth at the bottom-left
            anchor = (x1 - 0.5, (y2 - 0.5) if dashed else (y1 - 0.5))
            key = (round(anchor[0]), round(anchor[1]), dashed)
            n = used.get(key, 0)
            used[key] = n + 1
            step = (fontsize + 4) * n
            ax.annotate(
                text.strip(),
                anchor,
                xytext=(2, (2 + step) if dashed else -(2 + step)),
                textcoords="offset points",
                color="white",
                fontsize=fontsize,
                va="bottom" if dashed else "top",
                ha="left",
                annotation_clip=False,
                bbox=dict(facecolor=c, alpha=0.7, pad=1, edgecolor="none"),
            )


def new_figure(width: float, height: float, dpi: int = 100):
    """A matplotlib Figure on its own Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` (parent folders created) and release it; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    if getattr(fig.canvas, "manager", None) is not None:  # a pyplot figure: free its window state
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


def save_box_figure(
    path: str | Path,
    image,
    heat=None,
    *,
    boxes=None,
    labels=None,
    scores=None,
    gt_boxes=None,
    gt_labels=None,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
    dpi: int = 100,
) -> Path:
    """One frame: the heatmap overlaid (if given), predicted boxes solid, GT boxes dashed.

    Args:
        path: output PNG.
        image: ``(H, W, 3)`` uint8; heat: ``(H, W)`` in [0, 1] or None.
        boxes, labels, scores: predicted ``(n, 4)``, ``(n,)``, ``(n,)``.
        gt_boxes, gt_labels: ground truth ``(g, 4)``, ``(g,)``.

    Returns:
        The written path.
    """
    img = _np(image)
    shown = overlay_heatmap(img, heat, alpha, cmap) if heat is not None else img
    H, W = shown.shape[:2]
    scale = max(6.0 / W * dpi, 1.0) / dpi
    top = 0.13 * (title.count("\n") + 1) + 0.1 if title else 0.05  # inches for the title lines
    fig_w, fig_h = W * scale + 0.1, H * scale + top + 0.05
    fig = new_figure(fig_w, fig_h, dpi)
    ax = fig.add_axes((0.05 / fig_w, 0.05 / fig_h, W * scale / fig_w, H * scale / fig_h))
    ax.imshow(shown, interpolation="nearest")
    if gt_boxes is not None and len(_np(gt_boxes).reshape(-1, 4)):
        draw_boxes(ax, gt_boxes, gt_labels, class_names=class_names, dashed=True, prefix="GT ")
    if boxes is not None and len(_np(boxes).reshape(-1, 4)):
        draw_boxes(ax, boxes, labels, scores, class_names=class_names)
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=7, y=0.995, va="top")
    return save_figure(fig, path, dpi)
