"""Eigen-CAM (Muhammad & Yeasin, IJCNN 2020, https://arxiv.org/abs/2008.00299)."""

from __future__ import annotations

import torch
from torch import Tensor

from gcfeat.cam.base import BaseCAM, _Forward, _Plan

__all__ = ["EigenCAM"]


class EigenCAM(BaseCAM):
    r"""Eigen-CAM: projection of the activations on their first principal component.

    .. math::
        \tilde A = A^\top - \bar A, \quad \tilde A = U \Sigma V^\top, \quad
        L_i = \mathrm{ReLU}(\tilde A_i \cdot v_1)

    per image, with :math:`A^\top` the ``(positions, channels)`` matrix centred over positions
    (as in pytorch-grad-cam). The map does not depend on the class: every requested class gets
    the same map. The SVD's sign is arbitrary; gcfeat orients :math:`v_1` so that
    :math:`\sum_c v_{1,c} \ge 0` (the component points towards higher total activation), so its
    maps equal pytorch-grad-cam's up to that sign. No gradient, no backward.

    Example:
        >>> cam = EigenCAM(model, [model.layer4])
        >>> heat = cam(x, classes=[0])                       # (B, 1, *x.shape[2:])
    """

    def _layer_maps(self, x: Tensor, fwd: _Forward, sel: Tensor, plan: _Plan) -> list[Tensor]:
        out = []
        with torch.no_grad():
            for a in fwd.acts:
                m = a.float().flatten(2).transpose(1, 2).nan_to_num(0.0)  # (B, S, C)
                m = m - m.mean(1, keepdim=True)
                v = torch.linalg.svd(m, full_matrices=False).Vh[:, 0]  # (B, C)
                sign = torch.where(v.sum(-1, keepdim=True) < 0, -1.0, 1.0)
                proj = (m @ (v * sign)[..., None])[..., 0]  # (B, S)
                proj = proj.reshape(a.shape[0], 1, *a.shape[2:])
                out.append(proj.expand(-1, sel.shape[1], *a.shape[2:]))
        return out
