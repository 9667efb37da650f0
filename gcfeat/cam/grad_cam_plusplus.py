"""Grad-CAM++ (Chattopadhyay et al., WACV 2018, https://arxiv.org/abs/1710.11063)."""

from __future__ import annotations

from torch import Tensor

from gcfeat.cam.base import GradientCAM

__all__ = ["GradCAMPlusPlus"]


class GradCAMPlusPlus(GradientCAM):
    r"""Grad-CAM++: positive gradients weighted by second/third-order terms (eq. 19 of the
    paper, with exponential-free scores as in pytorch-grad-cam).

    .. math::
        \alpha_{c,i}^k = \frac{g_{c,i}^2}{2 g_{c,i}^2 + \sum_j A_{c,j}\, g_{c,i}^3 + \epsilon},
        \qquad w_c^k = \sum_i \alpha_{c,i}^k\, \mathrm{ReLU}(g_{c,i}),
        \qquad L^k = \mathrm{ReLU}\Big(\sum_c w_c^k A_c\Big)

    with :math:`g = \partial y^k / \partial A`, :math:`\alpha = 0` where :math:`g = 0`, and
    :math:`\epsilon = 10^{-6}` (pytorch-grad-cam 1.5.7's value).

    Example:
        >>> cam = GradCAMPlusPlus(model, [model.layer4])
        >>> heat = cam(x, classes=[2, 5])                    # (B, 2, *x.shape[2:])
    """

    eps = 1e-6

    def weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        g2 = grads * grads
        g3 = g2 * grads
        sum_a = acts.sum(-1)[:, None, :, None]  # (B, 1, C, 1)
        aij = g2 / (2 * g2 + sum_a * g3 + self.eps)
        aij = aij.masked_fill(grads == 0, 0)
        return (grads.clamp_min(0) * aij).sum(-1)
