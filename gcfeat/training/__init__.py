"""Training: :func:`fit` (multi-label BCE / single-label CE with resume, the surgical recipe),
:func:`train_classifier` (the single-label MRI loop with BatchNorm recalibration), :func:`predict`.
"""
from gcfeat.training.fit import (LOSSES, OPTIMIZERS, SCHEDULES, TrainResult, fit,
                                 seed_everything)
from gcfeat.training.single_label import collate, predict, recalibrate_batchnorm, train_classifier

__all__ = ["fit", "TrainResult", "seed_everything", "OPTIMIZERS", "SCHEDULES", "LOSSES",
           "train_classifier", "predict", "recalibrate_batchnorm", "collate"]
