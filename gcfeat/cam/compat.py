"""Drop-in shim for pytorch-grad-cam's calling convention, backed by gcfeat's engine.

Switch by changing the import::

    # from pytorch_grad_cam import GradCAM
    # from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from gcfeat.cam.compat import GradCAM, ClassifierOutputTarget

    with GradCAM(model=model, target_layers=[model.layer4]) as cam:
        heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(k) for k in labels])
    # heat: numpy float32 (B, *spatial); targets=None explains each image's top class

Like pytorch-grad-cam, the constructor puts the model in eval mode and the input is moved to
the model's device. Supported as in pytorch-grad-cam: ``reshape_transform`` (None here means
gcfeat's automatic one for known token layouts: torchvision / timm ViT, DeiT, Swin; see
:func:`gcfeat.models.levels.token_reshape`), ``aug_smooth`` (``tta_transforms`` as in its
constructor; default flips x brightness 0.9 / 1 / 1.1), ``eigen_smooth``, target callables
(:mod:`gcfeat.cam.targets`: ``ClassifierOutputTarget``, ``ClassifierOutputSoftmaxTarget``,
``BinaryClassifierOutputTarget``, ``RawScoresOutputTarget``, ``SoftmaxOutputTarget``,
``SemanticSegmentationTarget``, pytorch-grad-cam's own classes, any lambda), one per image.

Differences: all images of a batch are explained in one pass (one forward, one batched
backward, or none for GAP -> linear heads) when the targets are plain
``ClassifierOutputTarget`` (gcfeat's or pytorch-grad-cam's class exactly); other targets take
one backward for the batch, as pytorch-grad-cam. 3D maps are resized trilinearly
(pytorch-grad-cam uses a cubic spline ``scipy.ndimage.zoom``); EigenCAM's and
``eigen_smooth``'s SVD sign is fixed (see :mod:`gcfeat.cam.smooth`). ScoreCAM here defaults to
pytorch-grad-cam's scoring, ``align_corners=True`` masks and ``batch_size = 16``, and explains
``ClassifierOutputTarget`` lists only.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from gcfeat import cam as _cam
from gcfeat.cam.base import BaseCAM
from gcfeat.cam.targets import (
    BinaryClassifierOutputTarget,
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
    RawScoresOutputTarget,
    SemanticSegmentationTarget,
    SoftmaxOutputTarget,
)

__all__ = [
    "ClassifierOutputTarget",
    "ClassifierOutputSoftmaxTarget",
    "BinaryClassifierOutputTarget",
    "RawScoresOutputTarget",
    "SoftmaxOutputTarget",
    "SemanticSegmentationTarget",
    "GradCAM",
    "GradCAMPlusPlus",
    "XGradCAM",
    "HiResCAM",
    "LayerCAM",
    "EigenCAM",
    "ScoreCAM",
]


class _CompatCAM:
    _engine: type[BaseCAM]
    _defaults: dict = {}

    def __init__(
        self, model: nn.Module, target_layers, reshape_transform=None, tta_transforms=None, **kwargs
    ):
        model.eval()  # as pytorch-grad-cam does
        self.model = model
        self.target_layers = target_layers
        self.tta_transforms = tta_transforms
        self._batch_size: int | None = None  # kept for the engines that take no batch size
        transform = "auto" if reshape_transform is None else reshape_transform
        self.cam = self._engine(
            model, target_layers, **{**self._defaults, **kwargs, "reshape_transform": transform}
        )

    def __call__(
        self, input_tensor: torch.Tensor, targets=None, aug_smooth: bool = False, eigen_smooth: bool = False
    ) -> np.ndarray:
        param = next(self.model.parameters(), None)
        if param is not None:
            input_tensor = input_tensor.to(param.device)
        kwargs = dict(
            aug_smooth=bool(aug_smooth), eigen_smooth=bool(eigen_smooth), augmentations=self.tta_transforms
        )
        if targets is None:
            res = self.cam.explain(input_tensor, "argmax", **kwargs)
        else:
            res = self.cam.explain(input_tensor, targets=list(targets), **kwargs)
        return res.heatmap[:, 0].cpu().numpy()

    forward = __call__

    @property
    def batch_size(self) -> int | None:
        """Masked inputs per forward of a Score-CAM engine; the other engines take no batch
        size and only keep the value (settable on every class, as in pytorch-grad-cam)."""
        if isinstance(self.cam, _cam.ScoreCAM):
            return self.cam.batch_size
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        if isinstance(self.cam, _cam.ScoreCAM):
            self.cam.batch_size = int(value)
        else:
            self._batch_size = int(value)

    def release(self) -> None:
        self.cam.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release()


def _make(name: str, engine: type[BaseCAM], **defaults) -> type:
    cls = type(name, (_CompatCAM,), {"_engine": engine, "_defaults": defaults, "__module__": __name__})
    cls.__doc__ = (
        f"pytorch-grad-cam-style ``{name}(model, target_layers)``; "
        f"``cam(input_tensor, targets)`` -> numpy ``(B, *spatial)``. "
        f"Backed by :class:`gcfeat.cam.{engine.__name__}`."
    )
    return cls


GradCAM = _make("GradCAM", _cam.GradCAM)
GradCAMPlusPlus = _make("GradCAMPlusPlus", _cam.GradCAMPlusPlus)
XGradCAM = _make("XGradCAM", _cam.XGradCAM)
HiResCAM = _make("HiResCAM", _cam.HiResCAM)
LayerCAM = _make("LayerCAM", _cam.LayerCAM)
EigenCAM = _make("EigenCAM", _cam.EigenCAM)
ScoreCAM = _make("ScoreCAM", _cam.ScoreCAM, scoring="pytorch-grad-cam", align_corners=True, batch_size=16)
