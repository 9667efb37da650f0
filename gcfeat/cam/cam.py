"""CAM (Zhou et al., CVPR 2016, https://arxiv.org/abs/1512.04150)."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from gcfeat.cam.base import BaseCAM, CAMError, _Forward, _Plan, gap_linear_head

__all__ = ["CAM"]


class CAM(BaseCAM):
    r"""Class Activation Mapping for global-average-pool -> linear heads.

    .. math::
        L^k = \mathrm{ReLU}\Big(\sum_c W_{k,c} A_c\Big)

    with :math:`W` the head's weight. No gradient is needed; the maps of all classes come from
    one forward. Equals Grad-CAM on the same layer (Grad-CAM's weights are :math:`W_{k,c}/Z`).

    Args:
        model, target_layers: see :class:`~gcfeat.cam.base.BaseCAM`; the target must be the
            layer feeding the pooling (``model.layer4`` or ``model.layer4[-1]`` of a ResNet).
        fc_layer: the head Linear; by default found from ``model.avgpool`` / ``model.fc``.
            Either way, every call checks that the Linear's input is the pooled activation
            (``CAMError`` otherwise).

    Example:
        >>> model = torchvision.models.resnet50(num_classes=11).eval()
        >>> cam = CAM(model, [model.layer4])
        >>> heat = cam(torch.rand(8, 3, 256, 320))           # (8, 11, 256, 320)
    """

    def __init__(
        self, model: nn.Module, target_layers, fc_layer: nn.Linear | None = None, *, reshape_transform="auto"
    ):
        super().__init__(model, target_layers, reshape_transform=reshape_transform)
        if fc_layer is not None and not isinstance(fc_layer, nn.Linear):
            raise CAMError(f"fc_layer: expected torch.nn.Linear, found {type(fc_layer).__name__}")
        self.fc_layer = fc_layer

    def _plan(self, score=None) -> _Plan:
        head = self.fc_layer
        if head is None:
            heads = [gap_linear_head(self.model, m) for m in self.target_layers]
            head = heads[0] if all(h is not None and h is heads[0] for h in heads) else None
        if head is None:
            return self._closed_form_failed()  # raises: CAM has no gradient fallback
        return _Plan(grad=False, head=head, closed_form=True)

    def _layer_maps(self, x: Tensor, fwd: _Forward, sel: Tensor, plan: _Plan) -> list[Tensor]:
        head = plan.head
        assert head is not None  # _plan refuses a model without a GAP -> linear head
        out = []
        with torch.no_grad():
            for a in fwd.acts:
                w = head.weight.detach().to(a.dtype)[sel]  # (B, K, C)
                m = torch.einsum("bkc,bcs->bks", w, a.flatten(2))
                out.append(m.reshape(*m.shape[:2], *a.shape[2:]))
        return out
