"""gcfeat.metrics: classification metrics (per-class AP, mAP, AP table, accuracy / precision /
recall / ROC AUC), re-exported here; the other modules are imported by name:

* ``localization``: COCO box AP, MaxBoxAccV2, PxAP, energy-based / tolerant pointing game,
  mean best IoU (2D and 3D where the definition allows);
* ``study``: ``LocalizationStudy``, the threshold sweep with all of the above in one pass;
* ``faithfulness``: deletion / insertion, ROAD (MoRF / LeRF), Average Drop / Increase in
  Confidence;
* ``sanity``: cascading model-parameter randomisation, the random-logit test (Spearman, SSIM).
"""

from gcfeat.metrics.classification import (
    accuracy,
    ap_table,
    average_precision,
    binary_metrics,
    confusion_matrix,
    mean_average_precision,
    multiclass_metrics,
    precision,
    precision_recall,
    recall,
    roc_auc,
    roc_auc_per_class,
)

__all__ = [
    "accuracy",
    "ap_table",
    "average_precision",
    "binary_metrics",
    "confusion_matrix",
    "mean_average_precision",
    "multiclass_metrics",
    "precision",
    "precision_recall",
    "recall",
    "roc_auc",
    "roc_auc_per_class",
]
