"""gcfeat.models: ResNet classifiers and their checkpoints.

``build_classifier(arch, num_classes, dropout, weights)`` makes the network (never downloads);
``save_checkpoint`` / ``load_checkpoint`` keep class names, architecture, input size,
normalisation and training metadata next to the weights, and read the original forms too.
"""
from gcfeat.models.checkpoint import (
    CheckpointError,
    CheckpointInfo,
    check_dataset_classes,
    check_finite_state,
    describe_state_dict,
    infer_arch,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from gcfeat.models.resnet import ARCHS, build_classifier, head_linear, make_head

__all__ = [
    "ARCHS",
    "CheckpointError",
    "CheckpointInfo",
    "check_dataset_classes",
    "check_finite_state",
    "build_classifier",
    "describe_state_dict",
    "head_linear",
    "infer_arch",
    "load_checkpoint",
    "make_head",
    "read_checkpoint",
    "save_checkpoint",
]
