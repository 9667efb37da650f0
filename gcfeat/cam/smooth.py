r"""Smoothing options of every CAM: test-time augmentation and the principal-component map.

``aug_smooth`` (pytorch-grad-cam's): the CAM of each augmented input, mapped back
(:meth:`Augmentation.deaugment_mask`) and averaged. The default set is pytorch-grad-cam's
(``ttach``): horizontal flip off / on x brightness factor 0.9 / 1 / 1.1, six passes. Any
objects with ``augment_image(x)`` and ``deaugment_mask(m)`` serve (a ``ttach.Compose`` too).

``eigen_smooth`` (pytorch-grad-cam's ``get_2d_projection``): instead of summing the weighted
activations :math:`W = w_c A_c` over channels, project them on their first principal
component, per image and class:

.. math::
    \tilde W = W^\top - \overline{W^\top}, \quad \tilde W = U \Sigma V^\top, \quad
    L_i = (\tilde W v_1)_i

(positions x channels, centred over positions). The SVD's sign is arbitrary; gcfeat orients
:math:`v_1` so that :math:`\sum_c v_{1,c} \ge 0`, as :class:`gcfeat.cam.EigenCAM` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Augmentation", "DEFAULT_AUGMENTATIONS", "eigen_projection"]


@dataclass(frozen=True)
class Augmentation:
    """Horizontal flip (last spatial axis) and a brightness factor."""

    hflip: bool = False
    factor: float = 1.0

    def augment_image(self, x: Tensor) -> Tensor:
        x = x.flip(-1) if self.hflip else x
        return x * self.factor

    def deaugment_mask(self, m: Tensor) -> Tensor:
        return m.flip(-1) if self.hflip else m

    @property
    def identity(self) -> bool:
        return not self.hflip and self.factor == 1.0


#: pytorch-grad-cam's default ``tta_transforms``: flip x (0.9, 1, 1.1), ttach's order.
DEFAULT_AUGMENTATIONS: tuple[Augmentation, ...] = tuple(
    Augmentation(f, m) for f in (False, True) for m in (0.9, 1.0, 1.1)
)


def eigen_projection(weighted: Tensor) -> Tensor:
    """First-principal-component maps of weighted activations.

    Args:
        weighted: ``(B, K, C, S)`` (spatial dims flattened).

    Returns:
        ``(B, K, S)`` float32 (see the module docstring; NaN read as 0).
    """
    m = weighted.float().transpose(-1, -2).nan_to_num(0.0)  # (B, K, S, C)
    m = m - m.mean(-2, keepdim=True)
    v = torch.linalg.svd(m, full_matrices=False).Vh[..., 0, :]  # (B, K, C)
    v = v * torch.where(v.sum(-1, keepdim=True) < 0, -1.0, 1.0)
    return (m @ v[..., None])[..., 0]
