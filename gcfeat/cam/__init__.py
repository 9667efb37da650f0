"""gcfeat.cam: Grad-CAM-family heatmaps of every class from one pass, 2D and 3D, in torch.

>>> from gcfeat.cam import GradCAM
>>> cam = GradCAM(model, target_layers=[model.layer4])
>>> heat = cam(x)                          # (B, K, *x.shape[2:]) float32 in [0, 1], all classes
>>> res = cam.explain(x, classes=[2, 5], extra_layers=(model.layer2, model.layer3))
>>> res.heatmap, res.layer_heatmaps, res.logits, res.activations, res.extra, res.classes

Methods: :class:`CAM`, :class:`GradCAM`, :class:`GradCAMPlusPlus`, :class:`XGradCAM`,
:class:`HiResCAM`, :class:`LayerCAM`, :class:`EigenCAM`, :class:`ScoreCAM`. The semantics
(ReLU -> min-max -> resize -> mean over layers -> min-max), cost model and hygiene rules are
documented in :mod:`gcfeat.cam.base`; target callables in :mod:`gcfeat.cam.targets`, smoothing
in :mod:`gcfeat.cam.smooth`; :mod:`gcfeat.cam.compat` is a drop-in replacement for
pytorch-grad-cam's calling convention.
"""

from gcfeat.cam.base import (
    BaseCAM,
    CAMError,
    CAMResult,
    GradientCAM,
    gap_linear_head,
    minmax_normalize,
    resize_maps,
)
from gcfeat.cam.cam import CAM
from gcfeat.cam.eigen_cam import EigenCAM
from gcfeat.cam.grad_cam import GradCAM
from gcfeat.cam.grad_cam_plusplus import GradCAMPlusPlus
from gcfeat.cam.hirescam import HiResCAM
from gcfeat.cam.layer_cam import LayerCAM
from gcfeat.cam.score_cam import ScoreCAM
from gcfeat.cam.smooth import DEFAULT_AUGMENTATIONS, Augmentation, eigen_projection
from gcfeat.cam.targets import (
    BinaryClassifierOutputTarget,
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
    RawScoresOutputTarget,
    SemanticSegmentationTarget,
    SoftmaxOutputTarget,
)
from gcfeat.cam.xgrad_cam import XGradCAM

#: name -> class, for CLIs and configs (``--method gradcam``).
METHODS = {
    "cam": CAM,
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "eigencam": EigenCAM,
    "scorecam": ScoreCAM,
}


def get_method(name: str) -> type[BaseCAM]:
    """The CAM class called ``name`` (case-insensitive, see :data:`METHODS`)."""
    key = name.lower().replace("_", "").replace("-", "").replace("plusplus", "++")
    if key not in METHODS:
        raise CAMError(f"method: expected one of {sorted(METHODS)}, found {name!r}")
    return METHODS[key]


__all__ = [
    "BaseCAM",
    "GradientCAM",
    "CAMError",
    "CAMResult",
    "minmax_normalize",
    "resize_maps",
    "gap_linear_head",
    "CAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "XGradCAM",
    "HiResCAM",
    "LayerCAM",
    "EigenCAM",
    "ScoreCAM",
    "METHODS",
    "get_method",
    "Augmentation",
    "DEFAULT_AUGMENTATIONS",
    "eigen_projection",
    "ClassifierOutputTarget",
    "ClassifierOutputSoftmaxTarget",
    "BinaryClassifierOutputTarget",
    "RawScoresOutputTarget",
    "SoftmaxOutputTarget",
    "SemanticSegmentationTarget",
]
