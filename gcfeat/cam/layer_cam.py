"""Layer-CAM (Jiang et al., IEEE TIP 2021, https://ieeexplore.ieee.org/document/9462463)."""

from __future__ import annotations

from torch import Tensor

from gcfeat.cam.base import GradientCAM

__all__ = ["LayerCAM"]


class LayerCAM(GradientCAM):
    r"""Layer-CAM: activations weighted element-wise by the positive gradients.

    .. math::
        L^k_i = \mathrm{ReLU}\Big(\sum_c \mathrm{ReLU}\Big(\frac{\partial y^k}{\partial A_{c,i}}
                \Big) A_{c,i}\Big)

    Suited to shallow target layers; pass several layers to fuse them (maps are averaged
    after min-max, as in pytorch-grad-cam).

    Example:
        >>> cam = LayerCAM(model, [model.layer3, model.layer4])
        >>> heat = cam(x)                                    # (B, K, *x.shape[2:])
    """

    def cam_from_grads(self, acts: Tensor, grads: Tensor) -> Tensor:
        return (grads.clamp_min(0) * acts[:, None]).sum(2)

    def weighted_activations(self, acts: Tensor, grads: Tensor) -> Tensor:
        return grads.clamp_min(0) * acts[:, None]
