"""gcfeat.boxes: CAM heatmaps -> boxes, box ops, and box quality against ground truth.

```python
from gcfeat.boxes import heatmap_to_boxes
boxes = heatmap_to_boxes(res.heatmap, 0.3, probs=res.logits.sigmoid(), class_modes={10: "union"})
boxes.roi_format()          # (M, 5) [frame, x1, y1, x2, y2] for torchvision.ops.roi_align
```
``evaluate`` (threshold sweeps against ground truth) and ``calibration`` (per-class / global T
chosen on one split, saved as JSON) import pandas, so they are loaded on use.
"""

from .ops import box_area, box_iou, box_union, pairwise_box_iou, points_in_boxes
from .structures import Boxes
from .threshold import BOX_MODES, CONTOUR_MODES, HeatmapError, box_mean, heatmap_to_boxes

__all__ = [
    "Boxes",
    "heatmap_to_boxes",
    "HeatmapError",
    "BOX_MODES",
    "CONTOUR_MODES",
    "box_mean",
    "box_area",
    "box_iou",
    "pairwise_box_iou",
    "box_union",
    "points_in_boxes",
    "ThresholdSweep",
    "evaluate_thresholds",
    "recommend_thresholds",
    "ThresholdCalibration",
    "calibrate_thresholds",
]


def __getattr__(name):  # lazy: pandas only when the evaluation is used
    if name in ("ThresholdSweep", "evaluate_thresholds", "recommend_thresholds"):
        from . import evaluate

        return getattr(evaluate, name)
    if name in ("ThresholdCalibration", "calibrate_thresholds"):
        from . import calibration

        return getattr(calibration, name)
    raise AttributeError(f"module 'gcfeat.boxes' has no attribute {name!r}")
