"""gcfeat.models: classifiers (ResNets, any torchvision / timm model), feature levels, checkpoints.

``build_classifier(arch, num_classes, dropout, weights)`` makes the network (never downloads;
``resnet18/34/50``, torchvision names, ``timm:NAME``: :mod:`gcfeat.models.zoo`);
``find_levels(model)`` finds its feature maps by stride (:mod:`gcfeat.models.levels`);
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
from gcfeat.models.levels import ChannelsLast, FeatureLevel, LevelError, TokenGrid, find_levels, token_reshape
from gcfeat.models.resnet import ARCHS, head_linear, make_head
from gcfeat.models.zoo import (
    ClassifierSpec,
    ZooError,
    build_classifier,
    build_classifier_with_spec,
    find_head,
)

__all__ = [
    "ARCHS",
    "CheckpointError",
    "CheckpointInfo",
    "check_dataset_classes",
    "check_finite_state",
    "build_classifier",
    "build_classifier_with_spec",
    "ChannelsLast",
    "ClassifierSpec",
    "FeatureLevel",
    "LevelError",
    "TokenGrid",
    "ZooError",
    "find_head",
    "find_levels",
    "token_reshape",
    "describe_state_dict",
    "head_linear",
    "infer_arch",
    "load_checkpoint",
    "make_head",
    "read_checkpoint",
    "save_checkpoint",
]
