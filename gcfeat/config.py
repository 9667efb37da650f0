"""The package's shared defaults, written once (CLIs, workflows and tasks read them from here).

Task-specific defaults (training recipe, CAM layer, demo sizes) live on the task
(:class:`gcfeat.tasks.Task`); these are the values every task starts from.
"""

from __future__ import annotations

__all__ = [
    "BOX_THRESHOLD",
    "MIN_AREA",
    "PRED_THRESHOLD",
    "THRESHOLD_SWEEP",
    "BOX_MODE",
    "CAM_METHOD",
    "TUNE_METRIC",
    "DEVICE",
    "CAM_BATCH_SIZE",
    "METHOD_NAMES",
    "IOU_HIT",
]

#: Heatmap threshold T: pixels strictly above it form boxes (the original's 0.3).
BOX_THRESHOLD = 0.3
#: Boxes with area (pixels or voxels) <= this are dropped (the original's 25).
MIN_AREA = 25
#: Multi-label: classes whose sigmoid score exceeds this get heatmaps and boxes.
PRED_THRESHOLD = 0.5
#: The threshold study's sweep, ``start:stop:step`` with stop included.
THRESHOLD_SWEEP = "0.05:0.95:0.05"
#: Box mode of :func:`gcfeat.boxes.heatmap_to_boxes`.
BOX_MODE = "components"
#: CAM method used unless a task or the user picks another.
CAM_METHOD = "gradcam"
#: What the threshold study's recommendation maximises.
TUNE_METRIC = "mean_iou"
#: IoU at which a box counts as a hit.
IOU_HIT = 0.5
DEVICE = "cpu"
#: Images per CAM batch in the threshold study.
CAM_BATCH_SIZE = 8
#: ``--method`` names -> gcfeat.cam method names.
METHOD_NAMES = {
    "gradcam": "gradcam",
    "gradcampp": "gradcam++",
    "gradcam++": "gradcam++",
    "xgradcam": "xgradcam",
    "hirescam": "hirescam",
    "layercam": "layercam",
    "eigencam": "eigencam",
    "scorecam": "scorecam",
    "cam": "cam",
}
