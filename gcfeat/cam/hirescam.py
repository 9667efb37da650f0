"""HiResCAM (Draelos & Carin, 2020, https://arxiv.org/abs/2011.08891)."""

from __future__ import annotations

from torch import Tensor

from gcfeat.cam.base import GradientCAM

__all__ = ["HiResCAM"]


class HiResCAM(GradientCAM):
    r"""HiResCAM: element-wise gradient times activation, summed over channels.

    .. math::
        L^k_i = \mathrm{ReLU}\Big(\sum_c \frac{\partial y^k}{\partial A_{c,i}} A_{c,i}\Big)

    No spatial averaging of the gradient, so the map reflects exactly the locations the score
    depends on. For a GAP -> linear head it equals Grad-CAM.

    Example:
        >>> cam = HiResCAM(model, [model.layer4])
        >>> heat = cam(x, classes=[0])                       # (B, 1, *x.shape[2:])
    """

    def cam_from_grads(self, acts: Tensor, grads: Tensor) -> Tensor:
        return (grads * acts[:, None]).sum(2)

    def weighted_activations(self, acts: Tensor, grads: Tensor) -> Tensor:
        return grads * acts[:, None]
