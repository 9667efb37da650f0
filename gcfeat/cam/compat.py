"""Drop-in shim for pytorch-grad-cam's calling convention, backed by gcfeat's engine.

Switch by changing the import::

    # from pytorch_grad_cam import GradCAM
    # from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from gcfeat.cam.compat import GradCAM, ClassifierOutputTarget

    with GradCAM(model=model, target_layers=[model.layer4]) as cam:
        heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(k) for k in labels])
    # heat: numpy float32 (B, *spatial); targets=None explains each image's top class

Like pytorch-grad-cam, the constructor puts the model in eval mode and the input is moved to
the model's device. Differences: all images of a batch are explained in one pass (one forward,
one batched backward, or none for GAP -> linear heads); targets must be classifier outputs
(``ClassifierOutputTarget`` from here or from pytorch-grad-cam, one per image);
``reshape_transform``, ``aug_smooth`` and ``eigen_smooth`` are not supported (``CAMError``);
3D maps are resized trilinearly (pytorch-grad-cam uses a cubic spline ``scipy.ndimage.zoom``);
EigenCAM's sign is fixed (see :class:`gcfeat.cam.EigenCAM`). ScoreCAM here defaults to
pytorch-grad-cam's scoring, ``align_corners=True`` masks and ``batch_size = 16``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from gcfeat import cam as _cam
from gcfeat.cam.base import BaseCAM, CAMError

__all__ = [
    "ClassifierOutputTarget", "GradCAM", "GradCAMPlusPlus", "XGradCAM", "HiResCAM", "LayerCAM",
    "EigenCAM", "ScoreCAM",
]


class ClassifierOutputTarget:
    """The raw logit of ``category`` (same as pytorch-grad-cam's)."""

    def __init__(self, category: int):
        self.category = category

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        if model_output.ndim == 1:
            return model_output[self.category]
        return model_output[:, self.category]

    def __repr__(self) -> str:
        return f"ClassifierOutputTarget({self.category})"


class _CompatCAM:
    _engine: type[BaseCAM]
    _defaults: dict = {}

    def __init__(self, model: nn.Module, target_layers, reshape_transform=None, **kwargs):
        if reshape_transform is not None:
            raise CAMError("reshape_transform: not supported by gcfeat.cam.compat; reshape "
                           "token outputs to (B, C, *spatial) inside the model instead")
        model.eval()  # as pytorch-grad-cam does
        self.model = model
        self.target_layers = target_layers
        self.cam = self._engine(model, target_layers, **{**self._defaults, **kwargs})

    def __call__(self, input_tensor: torch.Tensor, targets=None, aug_smooth: bool = False,
                 eigen_smooth: bool = False) -> np.ndarray:
        if aug_smooth or eigen_smooth:
            raise CAMError("aug_smooth / eigen_smooth: not supported by gcfeat.cam.compat")
        param = next(self.model.parameters(), None)
        if param is not None:
            input_tensor = input_tensor.to(param.device)
        B = input_tensor.shape[0]
        if targets is None:
            classes = "argmax"
        else:
            targets = list(targets)
            if len(targets) != B:
                raise CAMError(f"targets: expected one target per image ({B}), found "
                               f"{len(targets)}")
            cats = []
            for i, t in enumerate(targets):
                cat = getattr(t, "category", None)
                if not isinstance(cat, (int, np.integer)) and not (
                        isinstance(cat, torch.Tensor) and cat.numel() == 1):
                    raise CAMError(f"targets[{i}]: expected ClassifierOutputTarget(k), found "
                                   f"{t!r}")
                cats.append(int(cat))
            classes = torch.tensor(cats, device=input_tensor.device).view(B, 1)
        heat = self.cam(input_tensor, classes=classes)
        return heat[:, 0].cpu().numpy()

    forward = __call__

    @property
    def batch_size(self) -> int | None:
        return getattr(self.cam, "batch_size", None)

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.cam.batch_size = int(value)

    def release(self) -> None:
        self.cam.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release()


def _make(name: str, engine: type[BaseCAM], **defaults) -> type:
    cls = type(name, (_CompatCAM,), {"_engine": engine, "_defaults": defaults,
                                     "__module__": __name__})
    cls.__doc__ = (f"pytorch-grad-cam-style ``{name}(model, target_layers)``; "
                   f"``cam(input_tensor, targets)`` -> numpy ``(B, *spatial)``. "
                   f"Backed by :class:`gcfeat.cam.{engine.__name__}`.")
    return cls


GradCAM = _make("GradCAM", _cam.GradCAM)
GradCAMPlusPlus = _make("GradCAMPlusPlus", _cam.GradCAMPlusPlus)
XGradCAM = _make("XGradCAM", _cam.XGradCAM)
HiResCAM = _make("HiResCAM", _cam.HiResCAM)
LayerCAM = _make("LayerCAM", _cam.LayerCAM)
EigenCAM = _make("EigenCAM", _cam.EigenCAM)
ScoreCAM = _make("ScoreCAM", _cam.ScoreCAM, scoring="pytorch-grad-cam", align_corners=True,
                 batch_size=16)
