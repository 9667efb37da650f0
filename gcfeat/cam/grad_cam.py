"""Grad-CAM (Selvaraju et al., ICCV 2017, https://arxiv.org/abs/1610.02391)."""

from __future__ import annotations

from torch import Tensor

from gcfeat.cam.base import GradientCAM

__all__ = ["GradCAM"]


class GradCAM(GradientCAM):
    r"""Grad-CAM: channel weights are the spatially averaged gradients of the class score.

    .. math::
        w_c^k = \frac{1}{Z} \sum_{i} \frac{\partial y^k}{\partial A_{c,i}}, \qquad
        L^k = \mathrm{ReLU}\Big(\sum_c w_c^k A_c\Big)

    with :math:`y^k` the raw logit of class :math:`k`, :math:`A` the target layer's output and
    :math:`i` running over all :math:`Z` spatial positions (2D or 3D). For a
    global-average-pool -> linear head the gradient is :math:`W_{k,c} / Z`, so Grad-CAM equals
    CAM up to scale and gcfeat computes it without a backward (``closed_form="auto"``).

    Example:
        >>> from torchvision.models import resnet18
        >>> from gcfeat.cam import GradCAM
        >>> model = resnet18(num_classes=5).eval()
        >>> with GradCAM(model, [model.layer4]) as cam:
        ...     heat = cam(torch.rand(2, 3, 224, 224))      # (2, 5, 224, 224), all classes
    """

    def weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        return grads.mean(-1)
