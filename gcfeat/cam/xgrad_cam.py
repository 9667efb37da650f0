"""XGrad-CAM (Fu et al., BMVC 2020, https://arxiv.org/abs/2008.02312)."""

from __future__ import annotations

from torch import Tensor

from gcfeat.cam.base import GradientCAM

__all__ = ["XGradCAM"]


class XGradCAM(GradientCAM):
    r"""XGrad-CAM: gradients weighted by the normalised activations.

    .. math::
        w_c^k = \sum_i \frac{A_{c,i}}{\sum_j A_{c,j} + \epsilon}
                \frac{\partial y^k}{\partial A_{c,i}},
        \qquad L^k = \mathrm{ReLU}\Big(\sum_c w_c^k A_c\Big)

    with :math:`\epsilon = 10^{-7}` (pytorch-grad-cam 1.5.7's value).

    Example:
        >>> cam = XGradCAM(model, [model.layer4])
        >>> heat = cam(x)                                    # (B, K, *x.shape[2:])
    """

    eps = 1e-7

    def weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        norm = acts / (acts.sum(-1, keepdim=True) + self.eps)  # (B, C, S)
        return (grads * norm[:, None]).sum(-1)
