"""gcfeat.metrics: classification metrics (per-class AP, mAP, AP table, accuracy / precision /
recall / ROC AUC)."""
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
