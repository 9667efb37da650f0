"""Training: :func:`fit`, the one loop of every task (objective, schedule, BatchNorm
recalibration, seeding and checkpoint writer as options), :func:`predict`.
"""

from gcfeat.training.batchnorm import recalibrate_batchnorm
from gcfeat.training.collate import collate
from gcfeat.training.fit import (
    LOSSES,
    OPTIMIZERS,
    SCHEDULES,
    CheckpointWriter,
    FitOptions,
    TrainResult,
    fit,
    seed_everything,
)
from gcfeat.training.objectives import MULTILABEL, SINGLE_LABEL, Objective
from gcfeat.training.single_label import predict, single_label_options, train_classifier

__all__ = [
    "fit",
    "FitOptions",
    "TrainResult",
    "CheckpointWriter",
    "seed_everything",
    "OPTIMIZERS",
    "SCHEDULES",
    "LOSSES",
    "Objective",
    "MULTILABEL",
    "SINGLE_LABEL",
    "train_classifier",
    "single_label_options",
    "predict",
    "recalibrate_batchnorm",
    "collate",
]
