"""Score-CAM (Wang et al., CVPR-W 2020, https://arxiv.org/abs/1910.01279), 2D and 3D."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from gcfeat.cam.base import _INTERP, BaseCAM, CAMError, _Forward, _Plan
from gcfeat.cam.smooth import eigen_projection
from gcfeat.models.fusion import fuse_conv_bn

__all__ = ["ScoreCAM", "fuse_conv_bn"]

_SCORINGS = ("paper", "pytorch-grad-cam")


class ScoreCAM(BaseCAM):
    r"""Score-CAM: each channel is weighted by the model's score on the input masked by it.

    .. math::
        H_c = \mathrm{minmax}(\mathrm{up}(A_c)), \qquad
        s_c = f(X \circ H_c), \qquad
        L^k = \mathrm{ReLU}\Big(\sum_c w_c^k A_c\Big)

    ``scoring="paper"`` (default, the authors' code): :math:`w_c^k = \mathrm{softmax}(s_c)_k`,
    the softmax probability of class :math:`k`; channels whose activation map is constant are
    skipped (:math:`w_c^k = 0`), as in the authors' code. ``scoring="pytorch-grad-cam"``:
    :math:`w^k = \mathrm{softmax}_c(s_{c,k})`, raw logits with a softmax over channels; a
    constant channel gives an all-zero mask (:math:`H_c = 0`).

    The masked forwards do not depend on the class: one set of :math:`B \cdot C` masked inputs
    (minus skipped channels), ``batch_size`` at a time, serves all requested classes, so all
    classes cost the same as one. ``up`` is bilinear / trilinear (``align_corners`` selectable:
    pytorch-grad-cam uses ``True``, gcfeat defaults to ``False`` like its other resizes).
    Constancy is decided at feature resolution (``max == min``), which avoids the rounding noise
    that interpolating a constant map can produce. The sum :math:`\sum_c w_c^k A_c` is formed
    at feature resolution and then resized like every other method (the paper sums the
    upsampled maps; the two differ only through the ReLU before resizing).

    Args:
        model, target_layers: see :class:`~gcfeat.cam.base.BaseCAM`.
        scoring: ``"paper"`` or ``"pytorch-grad-cam"``.
        batch_size: masked inputs per forward (memory knob: ``batch_size`` inputs and their
            activations; ``None``: 32 on the CPU, where smaller batches stay in cache and ran
            ResNet18 about 10% faster than 64 on 2 cores, else 64).
        channels_last: feed the masked inputs in channels-last memory format (``None``: on
            the CPU only, where oneDNN runs ResNets about 1.4x faster that way; the numbers
            change only by float rounding).
        fuse_bn: run the masked forwards through a copy of the model with eval-mode
            Conv -> BatchNorm pairs folded (:func:`fuse_conv_bn`; ``None``: when the model is
            in eval mode). The copy is rebuilt on every call (cheap: it shares all other
            tensors with the model) and checked against the model on the unmasked input;
            on any mismatch the model itself is used. Numbers change only by float rounding.
        align_corners: for upsampling the masks.
        progress: show a tqdm bar over the masked batches (None: only on a terminal).

    Example:
        >>> from gcfeat.models.resnet3d import resnet3d_18
        >>> model = resnet3d_18(num_classes=11).eval()
        >>> cam = ScoreCAM(model, [model.layer4], batch_size=64)
        >>> heat = cam(torch.rand(2, 1, 28, 28, 28))         # (2, 11, 28, 28, 28)
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers,
        *,
        scoring: str = "paper",
        batch_size: int | None = None,
        align_corners: bool = False,
        channels_last: bool | None = None,
        fuse_bn: bool | None = None,
        progress: bool | None = None,
        reshape_transform="auto",
    ):
        super().__init__(model, target_layers, reshape_transform=reshape_transform)
        if scoring not in _SCORINGS:
            raise CAMError(f"scoring: expected one of {_SCORINGS}, found {scoring!r}")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise CAMError(f"batch_size: expected None or a positive int, found {batch_size!r}")
        self.scoring = scoring
        self.batch_size = batch_size
        self.align_corners = bool(align_corners)
        self.channels_last = channels_last
        self.fuse_bn = fuse_bn
        self.progress = progress

    def _layer_maps(self, x: Tensor, fwd: _Forward, sel: Tensor, plan: _Plan) -> list[Tensor]:
        fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.ndim)
        if not (x.device.type == "cpu" if self.channels_last is None else self.channels_last):
            fmt = None
        model = self._scoring_model(x, fwd.logits, fmt)
        return [self._layer_map(model, x, a, sel, fmt, plan.eigen) for a in fwd.acts]

    @torch.no_grad()
    def _scoring_model(self, x: Tensor, logits: Tensor, fmt) -> nn.Module:
        """The model for the masked forwards: BN-folded copy if allowed and it matches."""
        if self.fuse_bn is False or (self.fuse_bn is None and self.model.training):
            return self.model
        fused, n = fuse_conv_bn(self.model, fmt)
        if n == 0:
            return self.model
        ref = logits.detach()
        out = fused(x if fmt is None else x.contiguous(memory_format=fmt))
        tol = 1e-4 * float(ref.abs().max()) + 1e-6
        if (
            not isinstance(out, Tensor)
            or out.shape != ref.shape
            or not torch.allclose(out.to(ref.dtype), ref, rtol=1e-4, atol=tol)
        ):
            return self.model  # folding changed the function: the pairs were not chains
        return fused

    @torch.no_grad()
    def _layer_map(
        self, model: nn.Module, x: Tensor, act: Tensor, sel: Tensor, fmt, eigen: bool = False
    ) -> Tensor:
        B, C = act.shape[:2]
        flat = act.flatten(2)
        lo, hi = flat.amin(-1), flat.amax(-1)  # (B, C)
        varying = hi > lo
        paper = self.scoring == "paper"
        pairs = (
            varying.nonzero()
            if paper
            else torch.cartesian_prod(torch.arange(B, device=x.device), torch.arange(C, device=x.device))
        )
        scores = torch.zeros(B, C, sel.shape[1], dtype=torch.float32, device=x.device)
        size, mode = x.shape[2:], _INTERP[x.ndim - 2]
        n = self.batch_size or (32 if x.device.type == "cpu" else 64)
        chunks = range(0, pairs.shape[0], n)
        for i in tqdm(
            chunks,
            desc="Score-CAM masked forwards",
            leave=False,
            disable=None if self.progress is None else not self.progress,
        ):
            b, c = pairs[i : i + n].unbind(1)
            up = F.interpolate(act[b, c][:, None], size=size, mode=mode, align_corners=self.align_corners)
            up_f = up.flatten(2)
            mn, mx = up_f.amin(-1, keepdim=True), up_f.amax(-1, keepdim=True)
            eps = 0.0 if paper else 1e-8  # paper: only varying channels get here
            denom = mx - mn + eps
            up_f = (up_f - mn) / torch.where(denom > 0, denom, torch.ones_like(denom))
            up_f = up_f * varying[b, c].to(up_f.dtype)[:, None, None]  # constant -> zero mask
            masks = up_f.reshape(up.shape)
            masked = x[b] * masks
            if fmt is not None:
                masked = masked.contiguous(memory_format=fmt)
            logits = model(masked).float()  # (n, N)
            if paper:
                logits = logits.softmax(-1)
            scores[b, c] = logits.gather(1, sel[b])
        weights = scores if paper else scores.softmax(1)  # (B, C, K)
        if eigen:
            m = eigen_projection(weights.transpose(1, 2).to(act.dtype)[..., None] * flat[:, None])
            return m.reshape(B, -1, *act.shape[2:])
        m = torch.einsum("bck,bcs->bks", weights.to(act.dtype), flat)
        return m.reshape(B, -1, *act.shape[2:])
