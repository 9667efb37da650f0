"""gcfeat.viz: heatmap overlays, box drawings and study plots (matplotlib's Agg canvas, no
pyplot state; matplotlib is imported on first use)."""

from .overlay import class_color, denormalize, draw_boxes, new_figure, overlay_heatmap, save_box_figure
from .plots import plot_class_curves, plot_threshold_curves

__all__ = [
    "denormalize",
    "overlay_heatmap",
    "class_color",
    "draw_boxes",
    "save_box_figure",
    "new_figure",
    "plot_threshold_curves",
    "plot_class_curves",
]
